"""Storage benchmark (pyperf): append throughput of the log stores, recovery time, and the disk's
raw fdatasync rate, with native/pure-Python ratios.

    python -m bench.bench_storage --quick          # about a minute
    python -m bench.bench_storage -o storage.json  # full run, pyperf JSON

Cases (each reported as time per entry; the summary turns it into entries/s):

- ``append.<impl>.<payload>B.batch<B>.<sync>``: ``impl`` is ``native-encoded`` (records encoded
  beforehand, ``NativeLogStore.append_encoded``: a follower appending a received batch),
  ``native-entries`` (``NativeLogStore.append`` of Entry lists) or ``pure-python``
  (``FileLogStore`` with the pure-Python codec and CRC, i.e. the fallback when the C module is
  missing); ``sync`` is ``nosync`` or ``fdatasync`` (one ``sync()`` per batch);
- ``recovery.<impl>.1M``: opening a log of 1,000,000 16-byte entries (index rebuild, every CRC);
- ``disk.fdatasync``: write 41 bytes + fdatasync, the ceiling of any synced case.

Independent of the other bench modules on purpose; results go to stdout (and ``-o`` JSON) and a
summary JSON in ``bench-results/storage-summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pyperf

from engine import codec
from engine.storage.filestore import FileLogStore
from engine.types import Entry

try:
    from engine.storage.native import NativeLogStore
except ImportError:  # pragma: no cover - the benchmark says so in its output
    NativeLogStore = None  # type: ignore[assignment,misc]

IMPLS = ("native-encoded", "native-entries", "pure-python")
PAYLOADS = (16, 1024)
BATCHES = (1, 64, 1024)
RECOVERY_ENTRIES = 1_000_000


@contextlib.contextmanager
def pure_codec() -> Iterator[None]:
    """Make the codec (and so FileLogStore) use the pure-Python CRC and encoder."""
    saved = codec.crc32c, codec.encode_entries, codec.decode_entries
    codec.crc32c = codec.crc32c_py
    codec.encode_entries = codec.encode_entries_py
    codec.decode_entries = codec.decode_entries_py
    try:
        yield
    finally:
        codec.crc32c, codec.encode_entries, codec.decode_entries = saved


def open_store(impl: str, directory: str, fsync: bool) -> Any:
    if impl.startswith("native"):
        if NativeLogStore is None:
            raise RuntimeError("native module not built: pip install -e .")
        return NativeLogStore(directory, fsync=fsync)
    return FileLogStore(directory, fsync=fsync)


def time_append(loops: int, impl: str, payload_size: int, batch: int, sync: bool,
                data_dir: str) -> float:
    """Seconds to append ``loops`` batches of ``batch`` entries (fdatasync after each if sync)."""
    directory = tempfile.mkdtemp(prefix="bench-storage-", dir=data_dir)
    data = b"x" * payload_size
    ctx = pure_codec() if impl == "pure-python" else contextlib.nullcontext()
    try:
        with ctx:
            store = open_store(impl, directory, fsync=sync)
            batches: list[Any] = [
                [Entry(i, 1, 0, data) for i in range(1 + k * batch, 1 + (k + 1) * batch)]
                for k in range(loops)
            ]
            if impl == "native-encoded":
                batches = [codec.encode_entries(b) for b in batches]
                append = store.append_encoded
            else:
                append = store.append
            flush = store.sync
            start = time.perf_counter()
            if sync:
                for b in batches:
                    append(b)
                    flush()
            else:
                for b in batches:
                    append(b)
            elapsed = time.perf_counter() - start
            store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return elapsed


def recovery_dir(data_dir: str) -> str:
    """A log of RECOVERY_ENTRIES 16-byte entries, built once and reused (both stores read it)."""
    directory = os.path.join(data_dir, f"bench-storage-recovery-{RECOVERY_ENTRIES}")
    marker = os.path.join(directory, "COMPLETE")
    if not os.path.exists(marker):
        shutil.rmtree(directory, ignore_errors=True)
        store = (NativeLogStore or FileLogStore)(directory, fsync=False)
        data = b"y" * 16
        for lo in range(1, RECOVERY_ENTRIES + 1, 10_000):
            store.append([Entry(i, 1, 0, data) for i in range(lo, lo + 10_000)])
        store.sync()
        store.close()
        with open(marker, "w") as f:
            f.write("ok\n")
    return directory


def time_recovery(loops: int, impl: str, data_dir: str) -> float:
    """Seconds to open (recover) the 1M-entry log ``loops`` times."""
    directory = recovery_dir(data_dir)
    ctx = pure_codec() if impl == "pure-python" else contextlib.nullcontext()
    total = 0.0
    with ctx:
        for _ in range(loops):
            start = time.perf_counter()
            store = open_store(impl, directory, fsync=False)
            total += time.perf_counter() - start
            if store.last_index() != RECOVERY_ENTRIES:
                raise RuntimeError(f"recovered {store.last_index()} entries, not 1M")
            store.close()
    return total


def time_fdatasync(loops: int, data_dir: str) -> float:
    """Seconds for ``loops`` times (append 41 bytes, fdatasync) on a plain file."""
    fd, path = tempfile.mkstemp(prefix="bench-storage-fsync-", dir=data_dir)
    record = b"z" * 41
    try:
        start = time.perf_counter()
        for k in range(loops):
            os.pwrite(fd, record, k * 41)
            os.fdatasync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)


def summarize(results: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """Entries/s per case, native/pure ratios, recovery seconds, fdatasync rate."""
    rate = {name: 1.0 / bench.mean() for name, bench in results.items()
            if name.startswith(("append.", "disk."))}
    summary: dict[str, Any] = {"data_dir": data_dir, "entries_per_second": {}, "ratios": {},
                               "recovery_seconds": {}, "fdatasync_per_second": None}
    lines = [f"{'case':<50} {'entries/s':>14}  native/pure"]
    for payload in PAYLOADS:
        for batch in BATCHES:
            for sync in ("nosync", "fdatasync"):
                pure = rate.get(f"append.pure-python.{payload}B.batch{batch}.{sync}")
                for impl in IMPLS:
                    name = f"append.{impl}.{payload}B.batch{batch}.{sync}"
                    if name not in rate:
                        continue
                    summary["entries_per_second"][name] = rate[name]
                    ratio = ""
                    if pure and impl != "pure-python":
                        summary["ratios"][name] = rate[name] / pure
                        ratio = f"{rate[name] / pure:9.1f}x"
                    lines.append(f"{name:<50} {rate[name]:>14,.0f}  {ratio}")
    for impl in ("native", "pure-python"):
        name = f"recovery.{impl}.1M"
        if name in results:
            summary["recovery_seconds"][impl] = results[name].mean()
            lines.append(f"{name:<50} {results[name].mean():>13.3f}s")
    if "disk.fdatasync" in rate:
        summary["fdatasync_per_second"] = rate["disk.fdatasync"]
        lines.append(f"{'disk.fdatasync (41 B write + fdatasync) ops/s':<50} "
                     f"{rate['disk.fdatasync']:>14,.0f}")
    print("\n" + "\n".join(lines))
    return summary


def main() -> None:
    quick = "--quick" in sys.argv

    def forward(cmd: list[str], args: argparse.Namespace) -> None:
        """pyperf rebuilds the worker command line: pass our own options on."""
        if args.quick:
            cmd.append("--quick")
        cmd.extend(["--data-dir", args.data_dir, "--only", args.only])

    settings = dict(processes=1, values=2, warmups=1, min_time=0.05) if quick else dict(
        processes=3, values=3, warmups=1, min_time=0.1)
    runner = pyperf.Runner(add_cmdline_args=forward, **settings)  # type: ignore[arg-type]
    parser: argparse.ArgumentParser = runner.argparser
    parser.add_argument("--quick", action="store_true", help="1 process, 2 values per case")
    parser.add_argument("--data-dir", default=tempfile.gettempdir(),
                        help="where the logs are written (default: the temp dir; use a disk, "
                             "not tmpfs, for meaningful fdatasync numbers)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--summary", default=os.path.join("bench-results",
                                                          "storage-summary.json"))
    args = runner.parse_args()
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)

    results: dict[str, Any] = {}

    def run(name: str, func: Any, *fargs: Any, inner_loops: int = 1) -> None:
        if args.only and args.only not in name:
            return
        bench = runner.bench_time_func(name, func, *fargs, inner_loops=inner_loops)
        if bench is not None:
            results[name] = bench

    impls = IMPLS if NativeLogStore is not None else ("pure-python",)
    run("disk.fdatasync", time_fdatasync, data_dir)
    for payload in PAYLOADS:
        for batch in BATCHES:
            for sync in (False, True):
                for impl in impls:
                    name = (f"append.{impl}.{payload}B.batch{batch}."
                            f"{'fdatasync' if sync else 'nosync'}")
                    run(name, time_append, impl, payload, batch, sync, data_dir,
                        inner_loops=batch)
    if NativeLogStore is not None:
        run("recovery.native.1M", time_recovery, "native", data_dir)
    if not quick:
        run("recovery.pure-python.1M", time_recovery, "pure-python", data_dir)

    if not runner.args.worker and results:
        summary = summarize(results, data_dir)
        summary["quick"] = quick
        summary["crc32c"] = (
            __import__("engine.storage.native", fromlist=["x"]).crc32c_implementation()
            if NativeLogStore is not None else "pure-python"
        )
        if args.summary:
            os.makedirs(os.path.dirname(args.summary) or ".", exist_ok=True)
            with open(args.summary, "w") as f:
                json.dump(summary, f, indent=2)
            print(f"summary written to {args.summary}")


if __name__ == "__main__":
    main()
