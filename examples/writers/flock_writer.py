#!/usr/bin/env python3
"""Example external writer: quiesces an application that takes a shared flock around each update.

Many programs guard their data files with a lock file (`flock(LOCK_SH)` while writing a record).
This writer takes the exclusive lock at freeze, which waits for the update in progress to finish
and holds back new ones until thaw. If this process dies, the kernel drops the lock: the
application can never stay blocked because of us.

Configure it with examples/writers/flock-app.toml (copy to /etc/shadowvault/writers.d/). Its
[options] table arrives as `self.config`:
    lock_file = "/srv/app/.lock"      the application's lock file
    data = ["/srv/app/data"]          the component's files
"""

import fcntl
import os

from shadowvault import writer_sdk as sdk


class FlockWriter(sdk.Writer):
    def __init__(self):
        super().__init__()
        self.fd = None

    def identify(self, req):
        data = self.config.get("data", [])
        return [{"name": "app-data", "kind": "files", "paths": data, "restore_method": "stop_restore_start"}]

    def prepare_snapshot(self, req):
        lock_file = self.config.get("lock_file")
        if not lock_file:
            raise sdk.Failure("no lock_file in [options]")
        try:
            self.fd = os.open(lock_file, os.O_RDWR)
        except OSError as err:
            raise sdk.Failure(f"cannot open the lock file {lock_file}: {err.strerror}") from err

    def freeze(self, req):
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits for the record being written, blocks the next
        return {"metadata": {"held_by_pid": os.getpid()}}

    def thaw(self, req):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def backup_complete(self, req):
        self.release()

    def abort(self, req):
        self.release()

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock too
            self.fd = None


if __name__ == "__main__":
    sdk.run(FlockWriter)
