"""Disks as a machine's layout describes them: the partition table (MBR or GPT) and the filesystems on it.

Recorded with system state at backup (components/system_state.py) and laid down again by
`shadowvault recover` (recover/); knows no repository and no restore.
"""
