"""Typed decoding from many threads at once: each round defines fresh Structs (annotations not yet
resolved, as on a program's first decode) and eight threads decode them together, switching as
often as the interpreter can. Plain msgspec.msgpack.decode(type=...) crashed that way (SIGSEGV,
msgspec 0.22); shadowvault.typed_decoding must not. Run in a child process, so a crash is a
failure of this test and not of the test runner."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import shadowvault

CHILD = textwrap.dedent(
    """
    import sys, threading, types
    import msgspec
    from shadowvault.repo.format import decode_document
    from shadowvault.typed_decoding import convert, decode_json

    sys.setswitchinterval(1e-6)
    SOURCE = '''
    from __future__ import annotations
    import msgspec
    class Inner(msgspec.Struct, array_like=True):
        a: int
        b: list[bytes]
        c: dict[str, int] = {}
    class Outer(msgspec.Struct):
        items: list[Inner]
        name: str = ""
        more: list[Inner] = []
    '''
    for round_ in range(150):
        module = types.ModuleType(f"fresh{round_}")
        sys.modules[module.__name__] = module
        exec(SOURCE, module.__dict__)
        value = module.Outer(items=[module.Inner(1, [b"x"])], name=str(round_))
        document = b"\\x00" + msgspec.msgpack.encode(value)
        text = msgspec.json.encode(value)
        plain = msgspec.to_builtins(value)
        barrier = threading.Barrier(8)
        decoded = []

        def decode(kind):
            barrier.wait()
            if kind == 0:
                decoded.append(decode_document(document, module.Outer, "a document"))
            elif kind == 1:
                decoded.append(decode_json(text, module.Outer))
            else:
                decoded.append(convert(plain, module.Outer))

        threads = [threading.Thread(target=decode, args=(n % 3,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert decoded == [value] * 8, decoded
    print("all decoded")
    """
)


def test_first_decodes_of_a_type_from_eight_threads_at_once_neither_crash_nor_differ() -> None:
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == "all decoded"


def test_no_module_decodes_a_type_with_msgspec_directly() -> None:
    """Every typed decode goes through shadowvault.typed_decoding (decoders made at import time,
    once, in one thread, are safe too)."""
    direct = re.compile(r"msgspec\.(json\.decode|msgpack\.decode|convert)\(")
    package = Path(shadowvault.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "typed_decoding.py" and direct.search(path.read_text())
    ]
    assert offenders == []
