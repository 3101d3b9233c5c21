"""Writes a module's first migration: its schema/, functions/ and policies/ files
concatenated, behind the lock_timeout preamble every migration carries.

    python scripts/module_migration.py 0004 create-billing 30_billing [--depends 0003.create-credits]

It refuses to overwrite an existing migration: once landed, a migration is never edited;
later changes to a module are new, hand-written migrations (ALTER, create or replace).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PREAMBLE = """-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';
"""


def render(name: str, module: str, depends: str | None) -> str:
    parts = []
    if depends:
        parts.append(f"-- depends: {depends}\n")
    parts.append(f"-- {name}: schema/{module}.sql, functions/{module}.sql, policies/{module}.sql\n\n")
    parts.append(PREAMBLE)
    for folder in ("schema", "functions", "policies"):
        parts.append("\n" + (ROOT / folder / f"{module}.sql").read_text())
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("number")
    parser.add_argument("name")
    parser.add_argument("module")
    parser.add_argument("--depends")
    parser.add_argument("--force", action="store_true", help="overwrite: only a migration not yet landed")
    args = parser.parse_args()
    path = ROOT / "migrations" / f"{args.number}.{args.name}.sql"
    if path.exists() and not args.force:
        raise SystemExit(f"{path.name} exists; a landed migration is never edited: write a new one")
    path.write_text(render(args.name, args.module, args.depends))
    print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
