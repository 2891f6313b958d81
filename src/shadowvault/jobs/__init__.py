"""The requester: the jobs the command line and the daemon run, each a typed request and a typed result.

    backup.py              back up paths through a shadow set into a snapshot (shadowing.py: which
                           paths are shadowed, the set itself, the consistency grades)
    backup_components.py   `backup --component`: what the components collect, staged for the backup
    restore_files.py       lay a snapshot's files (or a subtree) down in a directory
    restore_component.py   restore one component with its merge rules (snapshot_view.py: the
                           snapshot as the component sees it)
    restore_writer.py      restore applications through their writers: pre_restore, files,
                           post_restore (writer_plan.py: what it will do, decided first)

Dependencies run one way: cli -> jobs -> (archive, components, shadow) -> repo.
"""
