"""The listener of a fanotify shadow: a helper process that makes the shadow and keeps it true until deleted.

Started by the provider's commit while the volume is frozen, it
1. indexes the volume and pins every regular file (fanotify_index), before any mark exists, so its
   own descriptors raise no events;
2. marks the whole filesystem for FAN_PRE_ACCESS and FAN_OPEN_PERM;
3. saves whole the files it cannot guard (open for writing or mapped shared before the mark);
4. mounts the read-only FUSE view of the shadow and reports `ready` (a JSON line) on its status pipe.
Then, after the thaw, every access by another process to a file of the index waits until the old
content it may change is copied aside (fanotify_access says what to save). Events of our own threads
are answered at once, by the reading thread: a handler never waits on itself.

A separate process, so the shadow outlives the requester's commit thread and dies with its set: on
SIGTERM (the provider's delete) it stops serving, removes the mark and exits. If it dies otherwise,
the view answers nothing (ENOTCONN), and the kernel lets the writers waiting on it go on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from shadowvault.shadow.providers import fanotify_sys
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME
from shadowvault.shadow.providers.fanotify_access import Save, blocked_call, on_access, on_open
from shadowvault.shadow.providers.fanotify_cow import CowStore, ShadowInvalidError
from shadowvault.shadow.providers.fanotify_freeze import freeze_unless_frozen, thaw
from shadowvault.shadow.providers.fanotify_fuse import FuseView
from shadowvault.shadow.providers.fanotify_index import Entry, Index, IndexBuilder
from shadowvault.shadow.providers.fanotify_unguarded import unguarded_inodes

log = logging.getLogger("shadowvault.fanotify_listener")

WORKERS = 4
RESCAN_AFTER = 0.02  # seconds between the two scans for descriptors opened before the mark
INVALID_SUFFIX = ".invalid"  # written next to the view when the shadow stops holding its instant


def _since_process_start() -> float:
    """Seconds since this process started (Python's start-up is part of the commit), to 10 ms."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


class Listener:
    """One shadow: its index, copy-aside store, fanotify group and FUSE view."""

    def __init__(self, volume: str, view: str, store_dir: str) -> None:
        self.volume = volume
        self.invalid_marker = view + INVALID_SUFFIX
        self.view_path = view
        self.store = CowStore(store_dir)
        self.index = Index()
        self.group = -1
        self.dev = os.stat(volume).st_dev
        self.view: FuseView | None = None
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="save")
        self.unguarded = 0
        self.timings: dict[str, float] = {"python_start": _since_process_start()}

    # -- making the shadow (the volume is frozen) ------------------------------------------------

    def make(self, status: TextIO) -> dict[str, object]:
        """The point in time: inside the set's freeze, or one of our own when the set froze nothing."""
        froze = freeze_unless_frozen(self.volume)
        status.write(json.dumps({"froze": froze is not None}) + "\n")
        status.flush()
        try:
            self._index_and_mark()
        finally:
            if froze is not None:
                thaw(froze)
        self.view = FuseView(self.index, self.store, self.view_path)
        self.view.mount()
        threading.Thread(target=self._serve, name="view", daemon=True).start()
        return {
            "files": self.index.files,
            "entries": len(self.index.entries),
            "unguarded": self.unguarded,
            "bytes_saved": self.store.bytes_saved,
            "skipped_mounts": self.index.skipped_mounts,
            "problems": self.index.problems,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def _index_and_mark(self) -> None:
        started = time.monotonic()
        self.index = IndexBuilder(self.volume, frozenset({os.fsencode(SHADOW_DIR_NAME)})).build()
        self.timings["index"] = time.monotonic() - started
        self.group = fanotify_sys.init_group()
        fanotify_sys.mark_filesystem(self.group, self.volume)
        threading.Thread(target=self._read_events, name="events", daemon=True).start()
        started = time.monotonic()
        unguarded = unguarded_inodes(self.dev, os.getpid())
        # An open that decided "no watchers" just before the mark may install its descriptor only
        # after the first scan: look again once such opens have had time to return.
        time.sleep(RESCAN_AFTER)
        unguarded |= unguarded_inodes(self.dev, os.getpid())
        self.timings["scan"] = time.monotonic() - started
        started = time.monotonic()
        for ino in unguarded:
            entry = self.index.entry_of_inode(ino)
            if entry is not None and entry.fd >= 0:
                self.store.save_whole(entry)
                self.unguarded += 1
        self.timings["copy_unguarded"] = time.monotonic() - started

    # -- after the thaw ---------------------------------------------------------------------------

    def _read_events(self) -> None:
        while True:
            try:
                buf = os.read(self.group, 64 << 10)
            except OSError as err:
                if self.stopping.is_set():
                    return
                log.error("reading fanotify events failed: %s", err)
                os._exit(3)  # the shadow can no longer be kept true: the view goes with us
            for event in fanotify_sys.parse_events(buf):
                try:
                    work = self._triage(event)
                except Exception:
                    log.exception("an event could not be classified; the shadow is no longer trusted")
                    self.store.invalid = "an event could not be classified"
                    self._mark_invalid()
                    work = None
                if work is None:
                    fanotify_sys.respond(self.group, event.fd)
                else:
                    self.pool.submit(self._handle, event, *work)

    def _triage(self, event: fanotify_sys.Event) -> tuple[Entry, Save] | None:
        """What must be saved before the access of `event` proceeds; None: nothing, answer it now.

        Runs in the reading thread: our own accesses, reads, and changes to what is saved already
        are answered without a hand-over; only a copy aside goes to a worker.
        """
        if os.path.exists(f"/proc/self/task/{event.pid}"):
            return None  # our own access: never wait on ourselves
        st = os.fstat(event.fd)
        if st.st_dev != self.dev or not stat.S_ISREG(st.st_mode):
            return None
        entry = self.index.entry_of_inode(st.st_ino)
        if entry is None or entry.fd < 0 or self.store.is_whole(entry):
            return None
        call = blocked_call(event.pid)
        opening = event.mask & fanotify_sys.FAN_OPEN_PERM
        save = on_open(call) if opening else on_access(call, event.length)
        if save is Save.RANGE and (event.offset is None or not event.length):
            save = Save.WHOLE
        if save is Save.NOTHING:
            return None
        if save is Save.RANGE and self.store.is_saved(entry, event.offset or 0, event.length or 0):
            return None
        return entry, save

    def _handle(self, event: fanotify_sys.Event, entry: Entry, save: Save) -> None:
        try:
            if save is Save.WHOLE:
                self.store.save_whole(entry)
                fanotify_sys.ignore_inode(self.group, event.fd)
            else:
                self.store.save_range(entry, event.offset or 0, event.length or 0)
        except ShadowInvalidError:
            self._mark_invalid()  # the application goes on; the shadow refuses reads from now on
        except Exception:
            log.exception("handling an event failed; the shadow is no longer trusted")
            self.store.invalid = "an event could not be handled"
            self._mark_invalid()
        finally:
            fanotify_sys.respond(self.group, event.fd)

    def _mark_invalid(self) -> None:
        """Say why in `<view>.invalid`, where the provider's `problem` finds it."""
        try:
            with open(self.invalid_marker, "w") as f:
                f.write(self.store.invalid or "the shadow is no longer trusted")
        except OSError as err:
            log.error("cannot write %s: %s", self.invalid_marker, err)

    def _serve(self) -> None:
        assert self.view is not None
        try:
            self.view.serve()
        except Exception:
            log.exception("the view failed")
        if not self.stopping.is_set():
            log.error("the view was unmounted behind our back; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    # -- delete ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving first (so nothing is read once changes go unsaved), then remove the mark."""
        self.stopping.set()
        self.store.invalid = self.store.invalid or "the shadow is being deleted"
        if self.view is not None:
            try:
                fanotify_sys.umount(self.view_path)
            except OSError as err:
                log.info("view already unmounted: %s", err)
        if self.group >= 0:
            try:
                fanotify_sys.mark_filesystem(self.group, self.volume, remove=True)
            except OSError as err:
                log.info("mark already gone: %s", err)
        self.store.close()
        self.index.close()
        shutil.rmtree(self.store.directory, ignore_errors=True)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanotify_listener")
    parser.add_argument("--volume", required=True)
    parser.add_argument("--view", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--log", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(filename=args.log, level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener = Listener(args.volume, args.view, args.store)
    status = os.fdopen(args.status_fd, "w")
    try:
        report = listener.make(status)
    except BaseException as err:
        log.exception("making the shadow failed")
        listener.stop()
        status.write(json.dumps({"error": str(err)}) + "\n")
        status.close()
        return 1
    status.write(json.dumps({"ready": report}) + "\n")
    status.close()
    log.info("ready: %s", report)
    while not stop.wait(3600):
        pass
    listener.stop()
    log.info("stopped; %d bytes were saved", listener.store.bytes_saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
