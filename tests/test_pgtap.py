"""Each file under tests/pgtap/ is one test: it passes when every TAP line is ok and the
number of tests run equals its plan. The same files run under pg_prove (make pgtap)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import localdb

PGTAP_DIR = Path(__file__).resolve().parent / "pgtap"
FILES = sorted(PGTAP_DIR.glob("*.sql"))


def tap_problems(stdout: str) -> list[str]:
    """What is wrong with a TAP stream: failed tests with their diagnostics, plan mismatch."""
    lines = stdout.splitlines()
    planned = None
    ran = 0
    problems: list[str] = []
    for i, line in enumerate(lines):
        if m := re.match(r"^1\.\.(\d+)", line):
            planned = int(m.group(1))
        elif re.match(r"^ok \d+", line):
            ran += 1
        elif re.match(r"^not ok \d+", line):
            ran += 1
            if "# TODO" in line:
                continue
            diag = [line]
            for follow in lines[i + 1:]:
                if not follow.startswith("#"):
                    break
                diag.append(follow)
            problems.append("\n".join(diag))
    if planned is None:
        problems.append("no plan: the file must call plan(N)")
    elif planned != ran:
        problems.append(f"planned {planned} tests but ran {ran}")
    return problems


def test_tap_parser_catches_failures() -> None:
    assert tap_problems("1..2\nok 1 - a\nok 2 - b\n") == []
    assert tap_problems("1..2\nok 1 - a\n") == ["planned 2 tests but ran 1"]
    failed = tap_problems("1..1\nnot ok 1 - a\n# Failed test 1\n#   have: 1\n#   want: 2\n")
    assert failed == ["not ok 1 - a\n# Failed test 1\n#   have: 1\n#   want: 2"]
    assert tap_problems("ok 1\n") == ["no plan: the file must call plan(N)"]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_pgtap_file(db: str, path: Path) -> None:
    proc = subprocess.run(
        [str(localdb.PG_BIN / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
         "-d", db, "-f", str(path)],
        # From the repository root: files read fixtures (tests/fixtures/) by relative path.
        capture_output=True, text=True, timeout=600, cwd=localdb.ROOT,
    )
    problems = tap_problems(proc.stdout)
    if proc.returncode != 0:
        problems.insert(0, f"psql exited {proc.returncode}: {proc.stderr.strip()}")
    assert not problems, f"{path.name}:\n" + "\n\n".join(problems)
