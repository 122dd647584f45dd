"""The storage-fault table (bench/storage_faults.py) on a few rows, in quick mode.

The point is the table's last-but-one column: an acknowledged write lost in any row is a
durability regression, so every row must say 0.  The outcomes are checked too (a row that
silently stopped exercising recovery would otherwise keep passing).  A few seconds in all.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from bench import storage_faults as sf

ROWS = {
    # label prefix -> how the outcome must start
    "bit flip / follower / newest record / recover_corrupt_log=off": "recovered from peers",
    "bit flip / follower / committed prefix (middle record) / recover_corrupt_log=off":
        "refused to start: CorruptLogError",
    "bit flip / leader / committed prefix (middle record) / recover_corrupt_log=on":
        "recovered from peers",
    "deleted file / follower / middle segment / recover_corrupt_log=on": "recovered from peers",
    f"bit flip / {sf.WORST} /": "recovered from peers",
}


def _rows(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert tuple(header) == sf.COLUMNS
    rows = []
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_quick_rows_lose_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "faults.md"
    argv = ["--quick", "--catchup", "0", "--markdown", str(path)]
    for label in ROWS:
        argv += ["--row", label]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = sf.main(argv)
    table = path.read_text()
    assert out.getvalue() == table
    rows = _rows(table)
    labels = [" / ".join([r["fault"], r["where"], r["hits"],
                          f"recover_corrupt_log={r['recover_corrupt_log']}"]) for r in rows]
    assert len(rows) == len(ROWS), labels
    for (prefix, outcome), label, row in zip(ROWS.items(), labels, rows, strict=True):
        assert label.startswith(prefix), (label, prefix)
        assert row["acked writes lost"] == "0", row
        assert row["outcome"].startswith(outcome), row
        assert "DIVERGE" not in row["notes"] and "DID NOT CONVERGE" not in row["notes"], row
    worst = rows[-1]
    assert "leaderless while the leader was down" in worst["notes"], worst
    assert status == 0, err.getvalue()


def test_every_case_has_a_unique_label() -> None:
    labels = [case.label for case in sf.CASES]
    assert len(set(labels)) == len(labels)
    hits = {case.hits for case in sf.CASES}
    for needed in ("newest record", "committed prefix (middle record)", "hard state",
                   "newest snapshot", "newest segment", "middle segment"):
        assert needed in hits


def test_catchup_refetches_the_log_and_matches_the_leader() -> None:
    result = sf.run_catchup(sf.CATCHUP_CASES[1], 300, seed=11)
    assert result.recovering_mark > 0
    assert result.refetched >= 299
    assert result.checked == "same commands as the leader, same leader and term"
    assert result.seconds > 0


def test_lost_writes_counts_a_command_missing_from_any_running_node() -> None:
    acked = [b"a", b"b", b"c"]
    assert sf.lost_writes(acked, [[b"a", b"b", b"c", b"x"], [b"a", b"b", b"c"]]) == 0
    assert sf.lost_writes(acked, [[b"a", b"b", b"c"], [b"a", b"c"]]) == 1
    assert sf.lost_writes(acked, []) == 3
