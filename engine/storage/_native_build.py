"""cffi builder of ``engine.storage._raftlog``, the binding of the native log store (native/).

API (out-of-line) mode: setuptools compiles this at ``pip install .`` / ``pip install -e .``
through ``cffi_modules`` in setup.py.  The cdef is the part of ``native/include/raftlog.h``
between the ``RAFTLOG_CDEF_BEGIN``/``RAFTLOG_CDEF_END`` markers, so the header stays the single
source of the C API.  cffi releases the GIL around every call, so fdatasync and large writes do
not stall other Python threads.

Run directly (``python engine/storage/_native_build.py``) to build the module in place.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.normpath(os.path.join(_HERE, "..", ".."))
_HEADER = os.path.join(_ROOT, "native", "include", "raftlog.h")
_SOURCES = ["codec.c", "crc32c.c", "fault.c", "hardstate.c", "log.c", "recovery.c", "segment.c",
            "syncer.c"]


def _rel(path: str) -> str:
    """Paths relative to the working directory when possible (setuptools prefers them)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


def _cdef() -> str:
    """The declarations between the cdef markers of raftlog.h."""
    with open(_HEADER, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"/\* RAFTLOG_CDEF_BEGIN \*/(.*)/\* RAFTLOG_CDEF_END \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{_HEADER}: RAFTLOG_CDEF markers not found")
    return match.group(1)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "engine.storage._raftlog",
    '#include "raftlog.h"\n',
    sources=[_rel(os.path.join(_ROOT, "native", "src", name)) for name in _SOURCES],
    include_dirs=[_rel(os.path.join(_ROOT, "native", "include"))],
    extra_compile_args=["-O2", "-std=gnu99", "-fvisibility=hidden", "-pthread"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=_ROOT, verbose=True)
