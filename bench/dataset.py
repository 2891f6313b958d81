"""A deterministic benchmark data set: many small files, some large ones, duplicates, text and noise.

Every byte is a function of (seed, file, offset), so the same arguments give the same tree, a 5 %
change can be undone exactly (a kept data set is put back before it is reused), and nothing needs
to be stored besides a small stamp. Content kinds:

  random   BLAKE3 XOF output: incompressible (like media or already-compressed files)
  text     words drawn from a 5,000-word vocabulary with Zipf frequencies, in lines: zstd finds
           real matches in it as in prose or logs (a first version mapped noise onto a small alphabet:
           no matches at all, which made zstd level 3 eight times slower than on real text)
  dup      a byte-identical copy of an earlier file (whole-file dedup)
  shifted  a copy of an earlier file behind a 4 KiB prefix (only content-defined chunking dedups it)

Layout under the data root: small/dNNN/dNN/fNNNNNN.bin (100 files per directory) and large/*.bin.
"""

from __future__ import annotations

import functools
import itertools
import json
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

VOCABULARY = 5000
TEXT_BLOCK = 64 << 10  # text streams are made in blocks, so any offset can be produced on its own
SMALL_SHARE = 0.25  # of the total size in small files
SMALL_DUP_SHARE = 0.10  # of small files that repeat an earlier one
LARGE_KINDS = ["random", "text", "random", "text", "dup", "random", "text", "shifted"]
SHIFT = 4096
CHANGE_SHARE = 0.05  # of files rewritten and of large-file bytes overwritten by `mutate`
PATCHES_PER_LARGE_FILE = 4
WRITE_PIECE = 4 << 20
STAMP = "bench-dataset.json"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class FileSpec:
    """One file: where, how big, and which content stream fills it."""

    rel: str
    size: int
    kind: str  # random | text
    key: str  # content stream; duplicates share it
    shift: int = 0  # bytes of their own before the shared stream (shifted duplicates)


@dataclass(frozen=True)
class Params:
    size: int
    files: int
    seed: int


@functools.cache
def _tokens() -> tuple[bytes, ...]:
    """65,536 tokens (word + separator); common words fill many slots, so a uniform pick is Zipfian."""
    rng = random.Random(20261125)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    letter_weights = [26 - i for i in range(len(letters))]
    lengths = (1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 10)
    words = ["".join(rng.choices(letters, letter_weights, k=rng.choice(lengths))) for _ in range(VOCABULARY)]
    picks = rng.choices(words, [1 / (rank + 1) for rank in range(VOCABULARY)], k=1 << 16)
    seps = rng.choices([" ", "\n", ", ", ". "], [80, 8, 8, 4], k=1 << 16)
    return tuple((w + sep).encode() for w, sep in zip(picks, seps, strict=True))


@functools.cache
def _average_token() -> float:
    tokens = _tokens()
    return sum(map(len, tokens)) / len(tokens)


@functools.cache
def _picks_per_block() -> int:
    """Enough 2-byte token picks to fill a block with a margin (fewer picks = faster generation)."""
    return int(TEXT_BLOCK / _average_token() * 1.25) // 2 * 2


def _text_block(key: str, block: int, length: int = TEXT_BLOCK) -> bytes:
    """The first `length` bytes of text block `block` of stream `key`. A short prefix is made from
    as many picks as it needs (the same bytes as the whole block's start): a 1 KiB file then costs
    1 KiB of picks, not 64 KiB, which is what makes a million small files quick to generate."""
    h = blake3.blake3(key.encode())
    if length < TEXT_BLOCK:
        n = min(_picks_per_block(), (int(length / _average_token() * 1.5) + 64) // 2 * 2)
        picks = memoryview(h.digest(length=2 * n, seek=block * 8 * TEXT_BLOCK)).cast("H")
        part = b"".join(map(_tokens().__getitem__, picks))
        if len(part) >= length:
            return part[:length]
    n = _picks_per_block()
    parts, size, round_ = [], 0, 0
    while size < TEXT_BLOCK:  # one round nearly always suffices
        seek = (block * 8 + round_) * TEXT_BLOCK
        picks = memoryview(h.digest(length=2 * n, seek=seek)).cast("H")
        part = b"".join(map(_tokens().__getitem__, picks))
        parts.append(part)
        size += len(part)
        round_ += 1
    return b"".join(parts)[:length]


def stream(key: str, kind: str, offset: int, length: int) -> bytes:
    """`length` bytes of content stream `key` from `offset` on."""
    if kind != "text":
        return blake3.blake3(key.encode()).digest(length=length, seek=offset)
    if length <= 0:
        return b""
    end = offset + length
    first, last = offset // TEXT_BLOCK, (end - 1) // TEXT_BLOCK
    lengths = [TEXT_BLOCK] * (last - first) + [end - last * TEXT_BLOCK]
    data = b"".join(_text_block(key, b, n) for b, n in zip(range(first, last + 1), lengths, strict=True))
    start = offset - first * TEXT_BLOCK
    return data[start : start + length]


def content(spec: FileSpec, offset: int, length: int, version: str = "") -> bytes:
    """Bytes [offset, offset+length) of `spec` (a `version` other than "" gives a rewritten file)."""
    key = spec.key + version
    if not spec.shift:
        return stream(key, spec.kind, offset, length)
    out = b""
    if offset < spec.shift:
        n = min(length, spec.shift - offset)
        out = stream(f"shift:{spec.rel}", "random", offset, n)
        offset, length = offset + n, length - n
    if length:
        out += stream(key, spec.kind, offset - spec.shift, length)
    return out


def plan(params: Params) -> list[FileSpec]:
    """Every file of the data set, small ones first."""
    rng = random.Random(params.seed)
    n = max(1, params.files)
    avg = max(1, int(params.size * SMALL_SHARE / n))
    specs: list[FileSpec] = []
    for i in range(n):
        rel = f"small/d{i // 10000:03d}/d{(i // 100) % 100:02d}/f{i:06d}.bin"
        if i and rng.random() < SMALL_DUP_SHARE:
            source = specs[rng.randrange(i)]
            specs.append(FileSpec(rel, source.size, source.kind, source.key))
            continue
        size = min(int(rng.expovariate(1 / avg)), 16 * avg)
        kind = "text" if rng.random() < 0.5 else "random"
        specs.append(FileSpec(rel, size, kind, f"{params.seed}:s{i}"))
    small_total = sum(s.size for s in specs)
    large_total = max(0, params.size - small_total)
    count = max(4, min(16, large_total // (128 << 20)))
    each = large_total // count
    last_of: dict[str, FileSpec] = {}
    for j in range(count):
        kind = LARGE_KINDS[j % len(LARGE_KINDS)]
        rel = f"large/l{j:02d}-{kind}.bin"
        if kind == "dup" and "random" in last_of:
            src = last_of["random"]
            spec = FileSpec(rel, src.size, src.kind, src.key)
        elif kind == "shifted" and "text" in last_of:
            src = last_of["text"]
            spec = FileSpec(rel, src.size + SHIFT, src.kind, src.key, shift=SHIFT)
        else:
            kind = kind if kind in ("random", "text") else "random"
            spec = FileSpec(rel, each, kind, f"{params.seed}:l{j}")
            last_of[kind] = spec
        specs.append(spec)
    return specs


def _write(path: Path, spec: FileSpec, version: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for offset in range(0, spec.size, WRITE_PIECE):
            f.write(content(spec, offset, min(WRITE_PIECE, spec.size - offset), version))


def _write_group(data: Path, specs: list[FileSpec]) -> int:
    """Write files that share one directory (made once): one task of the parallel generation."""
    (data / specs[0].rel).parent.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        with open(data / spec.rel, "wb") as f:
            for offset in range(0, spec.size, WRITE_PIECE):
                f.write(content(spec, offset, min(WRITE_PIECE, spec.size - offset)))
    return len(specs)


def generate(data: Path, specs: list[FileSpec], progress: Callable[[str], None] = lambda _: None) -> None:
    """Write every file, one task per directory, in one process per CPU: making the text is Python
    (GIL-bound), so threads alone left a million-file set to one core."""
    groups = [list(g) for _, g in itertools.groupby(specs, key=lambda s: os.path.dirname(s.rel))]
    tasks = [g[i : i + 100] for g in groups for i in range(0, len(g), 100)]
    tasks.sort(key=lambda g: -sum(s.size for s in g))  # large files first: no long tail at the end
    workers = max(2, os.cpu_count() or 2)
    done, step = 0, max(100_000, len(specs) // 10)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for n in pool.map(_write_group, itertools.repeat(data), tasks, chunksize=8):
            if done // step != (done + n) // step:
                progress(f"  {done + n} of {len(specs)} files written")
            done += n


def _large(specs: list[FileSpec]) -> list[FileSpec]:
    return [s for s in specs if s.rel.startswith("large/")]


def _changes(params: Params, specs: list[FileSpec]) -> tuple[list[FileSpec], list[tuple[FileSpec, int, int]]]:
    """Which small files are rewritten and which large-file regions overwritten by a 5 % change."""
    rng = random.Random(params.seed + 1)
    small = [s for s in specs if s.rel.startswith("small/")]
    rewritten = rng.sample(small, max(1, int(len(small) * CHANGE_SHARE)))
    regions = []
    for spec in _large(specs):
        length = max(1, int(spec.size * CHANGE_SHARE / PATCHES_PER_LARGE_FILE))
        slot = spec.size // PATCHES_PER_LARGE_FILE
        for k in range(PATCHES_PER_LARGE_FILE):
            start = k * slot + rng.randrange(max(1, slot - length))
            regions.append((spec, start, min(length, spec.size - start)))
    return rewritten, regions


class Dataset:
    """The data set below `root` (a directory on a benchmark filesystem); `data` is what is backed up."""

    def __init__(self, root: Path, params: Params) -> None:
        self.root = root
        self.data = root / "data"
        self.params = params
        self.specs = plan(params)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def file_count(self) -> int:
        return len(self.specs)

    def _stamp(self) -> dict | None:
        try:
            return json.loads((self.root / STAMP).read_text())
        except (OSError, ValueError):
            return None

    def _set_state(self, state: str) -> None:
        stamp = {"format": FORMAT_VERSION, **asdict(self.params), "state": state}
        (self.root / STAMP).write_text(json.dumps(stamp))
        os.sync()

    def prepare(self, progress: Callable[[str], None] = lambda _: None) -> str:
        """Make the tree match the original data set: reuse, undo a change, or generate. Returns which."""
        stamp = self._stamp()
        if (
            stamp
            and stamp.get("format") == FORMAT_VERSION
            and Params(stamp["size"], stamp["files"], stamp["seed"]) == self.params
        ):
            if stamp.get("state") == "original":
                return "reused"
            if stamp.get("state") == "mutated":
                progress("undoing the previous run's 5% change")
                self.mutate(undo=True)
                return "reused (change undone)"
        progress(f"generating {self.file_count} files, {self.total_bytes / 2**20:.0f} MiB")
        self._set_state("generating")
        if self.data.exists():
            import shutil

            shutil.rmtree(self.data)
        generate(self.data, self.specs, progress)
        self._set_state("original")
        return "generated"

    def mutate(self, undo: bool = False) -> dict[str, int]:
        """Rewrite 5 % of the small files and overwrite 5 % of every large file's bytes, in place
        (or put the original bytes back with `undo`)."""
        rewritten, regions = _changes(self.params, self.specs)
        version = "" if undo else "#v1"
        for spec in rewritten:
            _write(self.data / spec.rel, spec, version)
        for spec, start, length in regions:
            with open(self.data / spec.rel, "r+b") as f:
                f.seek(start)
                for offset in range(start, start + length, WRITE_PIECE):
                    n = min(WRITE_PIECE, start + length - offset)
                    if undo:
                        f.write(content(spec, offset, n))
                    else:
                        f.write(stream(f"patch:{spec.rel}:{start}", "random", offset - start, n))
        self._set_state("original" if undo else "mutated")
        return {
            "files": len(rewritten) + len({s.rel for s, _, _ in regions}),
            "bytes": sum(s.size for s in rewritten) + sum(n for _, _, n in regions),
        }


def _walk(top: Path) -> Iterator[os.DirEntry]:
    with os.scandir(top) as it:
        for entry in it:
            yield entry
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))


def _digest(path: str) -> str:
    h = blake3.blake3(max_threads=1)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest(top: Path) -> dict[str, tuple]:
    """relative path -> (kind, mode, size, content hash) for every entry below `top`."""
    entries = list(_walk(top))
    files = [e for e in entries if e.is_file(follow_symlinks=False)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = dict(zip((e.path for e in files), pool.map(_digest, (e.path for e in files)), strict=True))
    result: dict[str, tuple] = {}
    for e in entries:
        st = e.stat(follow_symlinks=False)
        rel = os.path.relpath(e.path, top)
        if e.is_dir(follow_symlinks=False):
            result[rel] = ("dir", st.st_mode & 0o7777)
        elif e.is_file(follow_symlinks=False):
            result[rel] = ("file", st.st_mode & 0o7777, st.st_size, digests[e.path])
        else:
            result[rel] = ("other", st.st_mode)
    return result


def compare(expected: dict[str, tuple], restored: Path) -> list[str]:
    """Differences between an expected manifest and the tree at `restored` (empty list = identical)."""
    if not restored.is_dir():
        return [f"{restored} was not restored"]
    got = manifest(restored)
    problems = [f"missing: {rel}" for rel in sorted(expected.keys() - got.keys())]
    problems += [f"extra: {rel}" for rel in sorted(got.keys() - expected.keys())]
    problems += [
        f"differs: {rel}" for rel in sorted(expected.keys() & got.keys()) if expected[rel] != got[rel]
    ]
    return problems
