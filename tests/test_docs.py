"""docs/ is generated from the catalog (scripts/gen_docs.py): it must equal what the database
built from migrations/ says, and the error tables it derives from function bodies must be
complete (every raise carries a PT SQLSTATE and a known hint)."""

from __future__ import annotations

import difflib

import psycopg
import pytest

import gen_docs


def test_docs_are_generated_from_the_catalog(db: str) -> None:
    stale = []
    for path, want in gen_docs.render(db).items():
        have = path.read_text() if path.exists() else ""
        if have != want:
            diff = "\n".join(difflib.unified_diff(have.splitlines(), want.splitlines(), str(path.name),
                                                  "catalog", lineterm="", n=1))
            stale.append(f"{path.relative_to(gen_docs.ROOT)}:\n{diff[:4000]}")
    if stale:
        pytest.fail(f"docs/ differs from the catalog; regenerate with `{gen_docs.REGENERATE}`\n"
                    + "\n\n".join(stale))


def test_every_raise_has_a_pt_sqlstate_and_a_known_hint(db: str) -> None:
    with psycopg.connect(db, options="-c search_path=pg_catalog") as conn:
        functions = gen_docs.load_functions(conn)
    problems = []
    for fn in functions.values():
        for r in gen_docs.raises_in(fn.source):
            if r.code not in gen_docs.KNOWN_HINTS or r.hint not in gen_docs.KNOWN_HINTS[r.code]:
                problems.append(f"{fn.qualified}: raise {r.message!r} has errcode={r.code} hint={r.hint}")
    assert not problems, "\n".join(problems)


def test_every_public_function_documents_its_errors(db: str) -> None:
    """Each public function that checks anything says which errors: the derived table is not
    empty for a function with arguments (a parser that silently found nothing would pass the
    drift check above)."""
    with psycopg.connect(db, options="-c search_path=pg_catalog") as conn:
        functions = gen_docs.load_functions(conn)
    empty = [f.qualified for f in functions.values()
             if f.schema == "public" and f.arguments and not gen_docs.errors_of(f, functions)]
    assert not empty, f"no errors found for {empty}"
    adjust = {(r.code, r.hint) for r in gen_docs.errors_of(functions["public.adjust_credits"], functions)}
    assert {("PT400", "invalid_argument"), ("PT402", "insufficient_credits"), ("PT403", "forbidden"),
            ("PT404", "not_found"),
            ("PT409", "idempotency_conflict"), ("PT409", "balance_limit_exceeded")} == adjust
