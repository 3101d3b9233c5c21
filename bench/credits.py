#!/usr/bin/env python3
"""Throughput of public.adjust_credits against a bare-SQL floor, with the ledger empty and at 10M rows.

The floor, ``bench.floor_adjust``, is the least any credit change must do: one UPDATE of
the balance and one INSERT of a ledger row (into ``bench.ledger``, a copy of
``public.credit_transactions`` with its defaults, checks and indexes but without its
foreign keys and triggers). Both are driven by pgbench with the same user lookup.

Two databases: ``empty`` (one seed row per user in each ledger) and ``10M``
(``--ledger-rows`` rows loaded with one set-based insert into public.credit_transactions,
and the same rows copied into bench.ledger, so that both sides pay the same index sizes).
Scenarios ``spread`` (a random user of N) and ``hot`` (one user), at each client count,
in each database; ``spread+key`` (a unique idempotency key per call) as information.

The headline comes from separate pgbench runs (bench/harness.py): per scenario 4+ rounds,
each round the floor and adjust_credits alone, order alternated, ratio = adjust_credits
tps / floor tps of the round, median over the rounds; target >= 0.7 in every row, and at
10M the ratio may fall by at most 0.1 against empty. The floor's own tps at 10M against
empty is reported. This is a report, not a test: it exits 0 whatever the figures.

    .venv/bin/python bench/credits.py                        # throwaway cluster, defaults
    .venv/bin/python bench/credits.py --seconds 3 --json     # JSON on stdout
    .venv/bin/python bench/credits.py --candidate /tmp/lean.sql   # also time bench.lean(...)
    PAYCORE_TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/credits.py   # existing server
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FLOOR = "floor"
REAL = "adjust_credits"
EMPTY = "empty"
SEED_AMOUNT = 100  # per ledger row, in each of the two ledgers

SETUP_SQL = """
create schema bench;

-- Users by number, so that pgbench scripts can pick one with \\set u random(1, N).
create table bench.users (n integer primary key, id uuid not null unique);
insert into auth.users (id, email)
select gen_random_uuid(), 'bench-' || n || '@example.invalid'
from generate_series(1, %(users)s) as n;
insert into bench.users (n, id)
select n, (select u.id from auth.users as u where u.email = 'bench-' || n || '@example.invalid')
from generate_series(1, %(users)s) as n;

-- The floor: the same ledger shape (defaults, checks, indexes), no foreign keys, no triggers.
create table bench.ledger (like public.credit_transactions including all);

create function bench.floor_adjust(p_user_id uuid, p_amount bigint)
returns bigint
language plpgsql volatile
as $$
declare
    v bigint;
begin
    update public.credits set balance = balance + p_amount where user_id = p_user_id
    returning balance into v;
    insert into bench.ledger (user_id, amount, balance_after, type)
    values (p_user_id, p_amount, v, 'bench');
    return v;
end;
$$;

-- Balances first (the ledger's foreign key points at them), set to what both ledgers will
-- sum to: user n gets every N-th of the %(rows)s rows, %(amount)s credits each, in each ledger.
insert into public.credits (user_id, balance)
select u.id, 2 * %(amount)s * (%(rows)s / %(users)s + (u.n <= %(rows)s %% %(users)s)::integer)
from bench.users as u;
"""

# One set-based insert: row g goes to user (g - 1) %% N + 1, one second after row g - 1,
# balance_after the user's running balance in this ledger.
LOAD_SQL = """
insert into public.credit_transactions (user_id, amount, balance_after, type, created_at)
select
    u.id,
    %(amount)s,
    %(amount)s * ((g.g - 1) / %(users)s + 1),
    'bench_seed',
    now() - (%(rows)s - g.g) * interval '1 second'
from generate_series(1, %(rows)s) as g (g)
join bench.users as u on u.n = (g.g - 1) %% %(users)s + 1
"""

# The same rows (ids included) for the floor, in the same physical order.
COPY_SQL = "insert into bench.ledger select * from public.credit_transactions"

# Every script looks the user up the same way, so the floor pays for the lookup too.
LOOKUP = "(select id from bench.users where n = :u)"
PICK_KEY = "\\set k random(1, 4611686018427387903)\n"
KEY_ARGS = ", null, '{}', :client_id::text || '-' || :k::text"


def size_label(rows: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if rows >= size and rows % (size // 10) == 0:
            return f"{rows / size:g}{unit}"
    return str(rows)


def big(args: argparse.Namespace) -> str | None:
    return size_label(args.ledger_rows) if args.ledger_rows else None


def databases(args: argparse.Namespace) -> list[str]:
    label = big(args)
    return [EMPTY, label] if label else [EMPTY]


def compare(args: argparse.Namespace) -> tuple[str, str] | None:
    label = big(args)
    return (label, EMPTY) if label else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="users with a balance (default 1000)")
    parser.add_argument(
        "--ledger-rows", type=int, default=10_000_000,
        help="rows in each ledger of the big database (default 10000000; 0: the empty database only)",
    )
    parser.add_argument(
        "--candidate", type=Path, action="append", default=[], metavar="FILE.sql",
        help="SQL that creates bench.<FILE stem> with adjust_credits' signature; timed as a third "
        "variant in the same rounds (repeatable; for trying changes without touching the migrations)",
    )


def candidate_names(args: argparse.Namespace) -> list[str]:
    names = []
    for path in args.candidate:
        name = path.stem
        reserved = (FLOOR, REAL, "floor_adjust", "ledger", "users")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name in reserved:
            raise SystemExit(f"{path}: the file stem must be a lowercase SQL name, not {name!r}")
        names.append(name)
    return names


def setup(conninfo: str, database: str, args: argparse.Namespace) -> dict[str, Any]:
    users = int(args.users)
    rows = users if database == EMPTY else int(args.ledger_rows)
    if rows < users:
        raise SystemExit(f"--ledger-rows must be at least --users ({users})")
    params = {"users": users, "rows": rows, "amount": SEED_AMOUNT}
    facts: dict[str, Any] = {"ledger_rows": rows, "users": users}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute((SETUP_SQL % params).encode())
            # The load is setup, not traffic: skip the foreign-key triggers of 10M inserts where we
            # may (superuser). The append-only triggers fire on UPDATE/DELETE/TRUNCATE only.
            try:
                with conn.transaction():
                    conn.execute("set local session_replication_role = replica")
                facts["session_replication_role"] = "replica"
            except psycopg.errors.InsufficientPrivilege:
                facts["session_replication_role"] = "origin"
            t = time.monotonic()
            conn.execute((LOAD_SQL % params).encode())
            facts["load_s"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            conn.execute(COPY_SQL)
            facts["copy_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        conn.execute("vacuum analyze")
        facts["vacuum_s"] = round(time.monotonic() - t, 1)
        for path in args.candidate:
            conn.execute(path.read_text().encode())
            signature = f"bench.{path.stem}(uuid, bigint, text, text, jsonb, text)"
            row = conn.execute("select to_regprocedure(%s) is not null", (signature,)).fetchone()
            if not row or not row[0]:
                raise SystemExit(f"{path} must create {signature}")
        size = conn.execute(
            "select pg_size_pretty(pg_total_relation_size('public.credit_transactions'))"
        ).fetchone()
        facts["ledger_size"] = size[0] if size else "?"
    return facts


def scenarios(args: argparse.Namespace) -> list[harness.Scenario]:
    users = int(args.users)
    spread, hot = f"\\set u random(1, {users})\n", "\\set u 1\n"
    functions = {REAL: "public.adjust_credits", **{n: f"bench.{n}" for n in candidate_names(args)}}

    def scripts(pick: str, keyed: bool = False) -> dict[str, str]:
        out = {FLOOR: pick + f"select * from bench.floor_adjust({LOOKUP}, 1);\n"}
        for name, function in functions.items():
            out[name] = (
                pick + (PICK_KEY if keyed else "")
                + f"select * from {function}({LOOKUP}, 1, 'bench'{KEY_ARGS if keyed else ''});\n"
            )
        return out

    result: list[harness.Scenario] = []
    kinds = [("spread", spread, "random user of N, +1"), ("hot", hot, "every client on one user, +1")]
    for name, pick, description in kinds:
        for clients in args.client_counts:
            for database in databases(args):  # side by side in time: the comparison is fairer
                result.append(
                    harness.Scenario(name, clients, scripts(pick), database, description=description)
                )
    for database in databases(args):
        result.append(harness.Scenario(
            "spread+key", max(args.client_counts), scripts(spread, keyed=True), database, info=True,
            description="random user of N, +1, a unique idempotency key per call",
        ))
    return result


def ledger_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """public.credit_transactions and every bench table with a user_id and an amount (the floors')."""
    rows = conn.execute(
        """
        select n.nspname, c.relname
        from pg_catalog.pg_class as c
        join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        where c.relkind = 'r'
            and (n.nspname = 'bench' or (n.nspname, c.relname) = ('public', 'credit_transactions'))
            and (
                select count(*) from pg_catalog.pg_attribute as a
                where a.attrelid = c.oid and a.attname in ('user_id', 'amount') and not a.attisdropped
            ) = 2
        order by 1 desc, 2
        """
    ).fetchall()
    return [(str(schema), str(table)) for schema, table in rows]


def probe(conninfo: str) -> dict[str, Any]:
    """Ledger rows at the start of a scenario (the runs themselves add rows)."""
    with psycopg.connect(conninfo) as conn:
        out: dict[str, Any] = {}
        for schema, table in ledger_tables(conn):
            query = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
            row = conn.execute(query).fetchone()
            out[f"{schema}.{table}"] = int(row[0]) if row else -1
        return out


def check(conninfo: str) -> tuple[bool, str]:
    """balance = sum of the user's rows over every ledger (the floor's included), for every user."""
    with psycopg.connect(conninfo) as conn:
        tables = ledger_tables(conn)
        union = sql.SQL(" union all ").join(
            sql.SQL("select user_id, amount from {}").format(sql.Identifier(*t)) for t in tables
        )
        query = sql.SQL(
            """
            select count(*), (select count(*) from public.credits)
            from public.credits as c
            left join (
                select l.user_id, sum(l.amount) as total from ({}) as l group by l.user_id
            ) as s on s.user_id = c.user_id
            where c.balance is distinct from s.total
            """
        ).format(union)
        row = conn.execute(query).fetchone()
        broken, total = (int(row[0]), int(row[1])) if row else (-1, -1)
        names = " + ".join(f"{schema}.{table}" for schema, table in tables)
        if broken == 0:
            return True, f"balance = sum({names}) for all {total} users"
        return False, f"{broken} of {total} users have balance <> sum({names})"


BENCHMARK = harness.Benchmark(
    name="credits",
    title="adjust_credits vs bare-SQL floor",
    setup=setup,
    scenarios=scenarios,
    databases=databases,
    database_label="ledger",
    check=check,
    probe=probe,
    compare=compare,
    add_arguments=add_arguments,
    doc=__doc__ or "",
)


if __name__ == "__main__":
    raise SystemExit(harness.main(BENCHMARK, sys.argv[1:]))
