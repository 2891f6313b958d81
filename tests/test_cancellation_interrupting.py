"""`cancellation.interrupting`: a cancel of the run interrupts a call that blocks in another party.

The blocking call here is a real one, a read on a socket that a peer never answers; the interrupt
is what a database driver's cancel amounts to, the peer ending the wait (it shuts the socket down).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from shadowvault import cancellation
from shadowvault.cancellation import Cancellation
from shadowvault.errors import JobCancelledError


class Peer:
    """One end of a socket pair that the test blocks on, the other end an interrupt can close."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.interrupts = 0

    def wait_for_answer(self) -> bytes:
        """Blocks until the peer writes or goes away; a peer that went away is a failure."""
        answer = self.ours.recv(16)
        if not answer:
            raise ConnectionError("the peer ended the call")
        return answer

    def interrupt(self) -> None:
        self.interrupts += 1
        self.theirs.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def peer():
    made = Peer()
    yield made
    made.close()


def test_a_cancel_interrupts_the_call_and_its_failure_is_the_cancel(peer: Peer):
    run = Cancellation()
    threading.Timer(0.2, run.cancel, ["run 9 was cancelled"]).start()
    started = time.monotonic()
    with (
        cancellation.scope(run),
        pytest.raises(JobCancelledError, match="run 9 was cancelled") as raised,
        cancellation.interrupting(peer.interrupt),
    ):
        peer.wait_for_answer()
    assert time.monotonic() - started < 60, "the call ended long before the peer would have answered"
    assert isinstance(raised.value.__cause__, ConnectionError), "the call's own failure is kept as the cause"
    assert peer.interrupts == 1


def test_a_call_that_ended_is_never_interrupted_afterwards(peer: Peer):
    run = Cancellation()
    peer.theirs.sendall(b"answer")
    with cancellation.scope(run):
        with cancellation.interrupting(peer.interrupt):
            assert peer.wait_for_answer() == b"answer"
        run.cancel()
        time.sleep(3 * cancellation.WATCH_POLL)  # what the thread does next is left alone
    assert peer.interrupts == 0
    peer.theirs.sendall(b"more")
    assert peer.ours.recv(16) == b"more", "the connection is as the call left it"


def test_outside_a_run_and_once_it_is_cancelled_the_call_runs_as_it_is(peer: Peer):
    peer.theirs.shutdown(socket.SHUT_RDWR)  # the call fails by itself
    with pytest.raises(ConnectionError), cancellation.interrupting(peer.interrupt):
        peer.wait_for_answer()
    run = Cancellation()
    run.cancel()
    with cancellation.scope(run), pytest.raises(ConnectionError), cancellation.interrupting(peer.interrupt):
        peer.wait_for_answer()  # cleanup of a cancelled run: not interrupted, its failure its own
    assert peer.interrupts == 0
