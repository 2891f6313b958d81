"""zstd contexts are shared by threads: one per compression running at once, not one per thread
that ever compressed (each keeps the workspace of the largest input it saw, ~3.5 MiB after a 2 MiB
chunk, and a backup's process has a dozen threads)."""

from __future__ import annotations

import os
import threading

from shadowvault.repo import compression


def test_threads_compressing_one_after_another_share_one_context(monkeypatch):
    pool = compression._Compressors()
    monkeypatch.setattr(compression, "compress", pool.compress)
    text = b"the same line of text again and again\n" * 60_000  # 2.2 MiB: a large workspace
    results: list[bytes] = []
    for _ in range(8):
        thread = threading.Thread(target=lambda: results.append(compression.compress_if_smaller(text)[0]))
        thread.start()
        thread.join()
    assert len(pool._free) == 1
    assert all(compression.decompress(packed, len(text), "blob") == text for packed in results)


def test_contexts_used_at_once_are_each_their_own():
    pool = compression._Compressors()
    inputs = [os.urandom(1 << 16) + bytes(1 << 20) for _ in range(4)]
    outputs: list[bytes | None] = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        start.wait()
        for _ in range(20):
            outputs[i] = pool.compress(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(pool._free) <= len(inputs)
    pairs = zip(outputs, inputs, strict=True)
    restored = [compression.decompress(out or b"", len(data), "blob") for out, data in pairs]
    assert restored == inputs
