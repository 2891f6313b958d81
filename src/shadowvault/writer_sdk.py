"""Write a Shadowvault external writer as one class (standard library only; copy it if you must).

    from shadowvault import writer_sdk as sdk

    class MyWriter(sdk.Writer):
        def identify(self, req):
            return [{"name": "mydb", "paths": ["/srv/mydb"], "kind": "database"}]

        def freeze(self, req):
            self.db.pause_writes()          # raise sdk.Failure("why") to veto the snapshot

        def thaw(self, req):
            self.db.resume_writes()
            return {"metadata": {"position": self.db.position()}}

    sdk.run(MyWriter)

The protocol itself (JSON lines on stdin/stdout, one reply per request) is specified in
docs/writers.md; this module implements the writer's side of it: it reads requests, calls the
method named by the event, and answers with the state, the error, what the method returned, and
how long it took. Anything the writer prints goes to stderr (stdout carries the protocol).
On SIGTERM (the coordinator died, or it gave up on us), or when stdin closes while frozen, the
writer's `terminate()` runs, which by default calls `abort()` and so `thaw()`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

PROTOCOL = 1
EVENTS = (
    "identify",
    "prepare_backup",
    "prepare_snapshot",
    "freeze",
    "thaw",
    "post_snapshot",
    "backup_complete",
    "abort",
    "pre_restore",
    "post_restore",
)


class Failure(Exception):
    """Raise from an event method to fail it with this message (shown to the user)."""


class Terminated(BaseException):
    """SIGTERM arrived: leave whatever is being done and release the application."""


class Writer:
    """Override the events your application needs; the defaults do nothing (freeze must be defined).

    Each method gets the request (a dict: event, set_id, volumes, shadows, options, config, ...)
    and may return None, a dict with "components" and/or "metadata", or (identify only) a list of
    components. `self.config` holds the `[options]` table of the writer's writers.d file.
    """

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.frozen = False

    def identify(self, req: dict) -> Any:
        return []

    def prepare_backup(self, req: dict) -> Any:
        return None

    def prepare_snapshot(self, req: dict) -> Any:
        return None

    def freeze(self, req: dict) -> Any:
        raise Failure("this writer does not implement freeze")

    def thaw(self, req: dict) -> Any:
        return None

    def post_snapshot(self, req: dict) -> Any:
        return None

    def backup_complete(self, req: dict) -> Any:
        return None

    def abort(self, req: dict) -> Any:
        return self.thaw(req)

    def pre_restore(self, req: dict) -> Any:
        return None

    def post_restore(self, req: dict) -> Any:
        return None

    def terminate(self) -> None:
        """The coordinator is gone or gave up: release the application now."""
        if self.frozen:
            self.abort({"event": "abort", "reason": "terminated"})
            self.frozen = False


def _reply(result: Any, event: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"state": "ok"}
    if isinstance(result, list) and event == "identify":
        reply["components"] = result
    elif isinstance(result, dict):
        for key in ("components", "metadata"):
            if key in result:
                reply[key] = result[key]
    elif result is not None:
        raise Failure(f"{event} returned {type(result).__name__}; expected None, a dict or (identify) a list")
    return reply


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def run(writer: type[Writer] | Writer) -> None:
    """Serve the protocol until stdin closes; never returns normally (exits the process)."""
    protocol_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # print() and child processes now write to stderr, not into the protocol
    sys.stdout = sys.stderr
    instance = writer() if isinstance(writer, type) else writer
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            started = time.monotonic()
            try:
                req = json.loads(line)
                event = req.get("event")
                if req.get("config"):
                    instance.config = req["config"]
                if event not in EVENTS:
                    raise Failure(f"unknown event {event!r}")
                if event == "freeze":
                    instance.frozen = True  # a freeze in progress (or failed half-way) counts as held
                reply = _reply(getattr(instance, event)(req), event)
                if event in ("thaw", "abort"):
                    instance.frozen = False
            except Terminated:
                raise
            except Failure as err:
                reply = {"state": "failed", "error": str(err) or type(err).__name__}
            except Exception as err:
                traceback.print_exc(file=sys.stderr)
                reply = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
            reply["timing"] = {"seconds": round(time.monotonic() - started, 6)}
            protocol_out.write(json.dumps(reply) + "\n")
            protocol_out.flush()
    except Terminated:
        code = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish releasing even if signalled again
        try:
            instance.terminate()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    sys.exit(code)
