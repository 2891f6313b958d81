"""Typed msgspec decoding that is safe from many threads at once.

msgspec resolves a Struct's annotations the first time the Struct is decoded or converted, and two
threads doing that at once for the same type crash the process (SIGSEGV, msgspec 0.22; index files
loaded by a thread pool hit it in CI, and the daemon decodes job records and shadow sets from job
threads and API handlers alike). Here every decoder is made once per type, under a lock: a decoder,
once made, holds complete type information, and using it from many threads is safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
K = TypeVar("K")
D = TypeVar("D")
DecodeHook = Callable[[type, Any], Any]

_lock = threading.Lock()
_json: dict[tuple[object, DecodeHook | None], msgspec.json.Decoder[Any]] = {}
_msgpack: dict[object, msgspec.msgpack.Decoder[Any]] = {}


def _made_once(cache: dict[K, D], key: K, make: Callable[[], D]) -> D:
    """`cache[key]`, made by `make` under the lock the first time (looked up without it after)."""
    found = cache.get(key)
    if found is None:
        with _lock:
            found = cache.get(key)
            if found is None:
                found = cache[key] = make()
    return found


def json_decoder(type_: type[T], dec_hook: DecodeHook | None = None) -> msgspec.json.Decoder[T]:
    return _made_once(_json, (type_, dec_hook), lambda: msgspec.json.Decoder(type_, dec_hook=dec_hook))


def msgpack_decoder(type_: type[T]) -> msgspec.msgpack.Decoder[T]:
    return _made_once(_msgpack, type_, lambda: msgspec.msgpack.Decoder(type_))


def decode_json(data: bytes | str, type_: type[T], dec_hook: DecodeHook | None = None) -> T:
    """msgspec.json.decode(data, type=type_), safe from many threads."""
    return json_decoder(type_, dec_hook).decode(data)


def decode_msgpack(data: bytes, type_: type[T]) -> T:
    """msgspec.msgpack.decode(data, type=type_), safe from many threads."""
    return msgpack_decoder(type_).decode(data)


def convert(obj: object, type_: type[T]) -> T:
    """msgspec.convert(obj, type_), after the type's information was completed under the lock."""
    json_decoder(type_)
    return msgspec.convert(obj, type=type_)
