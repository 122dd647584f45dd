"""The native codec acceleration agrees with the pure-Python reference, byte for byte, and the
hardware and table CRC32C agree with each other."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine import codec
from engine.types import Entry

from .conftest import native_mod

needs_native = pytest.mark.skipif(native_mod is None, reason="native module not built")
ROOT = Path(__file__).resolve().parents[2]


def random_entries(rng: random.Random, n: int) -> list[Entry]:
    index = rng.randint(1, 1 << 40)
    return [
        Entry(index + k, rng.randint(0, 1 << 62), rng.randint(0, 255),
              rng.randbytes(rng.choice([0, 1, 7, 16, 100, 3000])))
        for k in range(n)
    ]


def test_crc32c_reference_vectors():
    # RFC 3720 B.4 test vectors.
    for fn in {codec.crc32c, codec.crc32c_py}:
        assert fn(b"123456789") == 0xE3069283
        assert fn(bytes(32)) == 0x8A9136AA
        assert fn(b"\xff" * 32) == 0x62A8AB43
        assert fn(bytes(range(32))) == 0x46DD794E
        assert fn(b"") == 0


@needs_native
def test_hardware_and_table_crc_agree():
    lib, ffi = native_mod.lib, native_mod.ffi
    rng = random.Random(7)
    data = rng.randbytes(5000)
    for length in [*range(0, 70), 255, 256, 1000, 4093, 4999]:
        for offset in range(8):
            chunk = data[offset:offset + length]
            table = lib.rl_crc32c_table(0, chunk, len(chunk))
            assert lib.rl_crc32c_hw(0, chunk, len(chunk)) == table
            if length < 300:
                assert codec.crc32c_py(chunk) == table
    lib.rl_crc32c_force_table(1)
    try:
        assert codec.crc32c(b"123456789") == 0xE3069283
        assert codec.crc32c(data) == lib.rl_crc32c_hw(0, data, len(data))
    finally:
        lib.rl_crc32c_force_table(0)
    assert native_mod.crc32c_implementation() in ("sse4.2", "table")
    del ffi


@needs_native
def test_native_codec_matches_reference():
    rng = random.Random(11)
    for n in [0, 1, 2, 50]:
        entries = random_entries(rng, n)
        encoded = codec.encode_entries_native(entries)
        assert encoded == codec.encode_entries_py(entries)
        assert codec.decode_entries_native(encoded) == entries
        assert codec.decode_entries_py(encoded) == entries
        assert codec.decode_entries_native(memoryview(encoded)) == entries


@needs_native
@pytest.mark.parametrize("encode", ["native", "py"])
def test_bad_fields_raise_codec_error(encode):
    fn = codec.encode_entries_native if encode == "native" else codec.encode_entries_py
    for bad in [Entry(-1, 1, 0, b""), Entry(1, 1 << 64, 0, b""), Entry(1, 1, 256, b"")]:
        with pytest.raises(codec.CodecError):
            fn([bad])


@pytest.mark.parametrize("decode", ["native", "py"])
def test_decode_rejects_damage(decode):
    if decode == "native" and native_mod is None:
        pytest.skip("native module not built (no C compiler at install); "
                    "the pure-Python store covers the format")
    fn = codec.decode_entries_native if decode == "native" else codec.decode_entries_py
    encoded = codec.encode_entries_py([Entry(i, 1, 0, b"abc" * i) for i in range(1, 6)])
    with pytest.raises(codec.CodecError):
        fn(encoded[:-1])
    with pytest.raises(codec.CodecError):
        fn(encoded[:10])
    damaged = bytearray(encoded)
    damaged[40] ^= 1
    with pytest.raises(codec.CodecError, match="offset"):
        fn(bytes(damaged))


def test_pure_python_fallback_end_to_end(tmp_path):
    """With RAFT_ENGINE_NO_NATIVE=1 the codec and open_stores use pure Python, and the files
    they write are read back by whichever implementation this process has."""
    script = r"""
import logging, sys
logging.basicConfig(level=logging.WARNING)
from engine import codec
from engine.storage.open import open_stores
from engine.types import Entry, HardState
assert not codec.NATIVE
log, stable = open_stores(sys.argv[1])
assert type(log).__name__ == "FileLogStore", type(log)
log.append([Entry(i, 2, 0, b"p%d" % i) for i in range(1, 30)])
log.sync()
stable.save(HardState(term=2, vote="me", commit=10))
log.close(); stable.close()
"""
    env = dict(os.environ, RAFT_ENGINE_NO_NATIVE="1")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "RAFT_ENGINE_NO_NATIVE" in result.stderr  # the fallback is logged
    from engine.storage.open import open_stores

    log, stable = open_stores(str(tmp_path))
    try:
        assert log.entries(1, 30) == [Entry(i, 2, 0, b"p%d" % i) for i in range(1, 30)]
        assert stable.load().vote == "me"
    finally:
        log.close()
        stable.close()
