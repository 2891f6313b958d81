"""Directory services as Shadowvault drives them: OpenLDAP's slapd (instances, LDIF, DNs, syncrepl
roles) and Samba AD DCs (finding one, its backup archive, recovering it), through their own tools.

Used by the ldap and samba writers (shadow/writers/) and the system-state component (components/).
"""
