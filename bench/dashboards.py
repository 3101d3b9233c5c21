#!/usr/bin/env python3
"""The six marketplace dashboards (views for service_role) at 1M rows: each with its index and without.

Every view of ``schema/70_marketplace_ops.sql`` is meant to read one range of one index, so
that it stays fast as its table grows. This script checks that on a database of realistic
size, and shows what the index buys:

- the database: ``yoyo apply`` of ``migrations/`` (bench/harness.py: a throwaway cluster, or
  ``--database-url`` / ``$PAYCORE_TEST_DATABASE_URL``, never ``$DATABASE_URL``), then, as
  the owner, with set-based SQL (``generate_series``) and nothing disabled (foreign keys,
  checks, the bookings' exclusion constraint and every index are maintained row by row, as
  in production): ``--users`` (default 10000) auth users and their thinkers (ids derived
  from the user number, ``md5(...)::uuid``), then ``--rows`` (default 1,000,000) rows each
  in presence_sessions, vouchers, voucher_bookings (one per voucher), mortgage_applications
  (on ``--rows`` / 5 properties), mortgage_offers (one per application that is not open)
  and transfers, one transaction per table. The load is CPU-bound (foreign-key triggers,
  CHECK regexes, the GiST exclusion index, 3-6 indexes per table), so after the users it
  runs as two streams side by side (``--load-jobs``, default min(2, CPUs)): presence,
  vouchers, bookings / properties, applications, offers, transfers. Then, once every
  stream has committed (an open load transaction keeps vacuum from setting pages
  all-visible, and the index-only scans would fetch every heap row), ``vacuum analyze`` of
  the tables over as many connections, ``analyze`` and a checkpoint. Load, vacuum and
  build times are reported (about 4.5 minutes for 1M rows on 2 shared cores).
- time: vouchers, bookings, applications, offers and transfers are created over the last
  ``SPAN_DAYS`` (730) days with a density growing linearly (a growing marketplace: row g
  of N at ``sqrt((g - 0.5) / N)`` of the span, in insertion order, so the heap is in time
  order like an append log): the 90-day windows hold about 23 % of each table, the last
  day about 0.3 %. Presence sessions are scattered in the heap (random ``last_seen_at``):
  ``--online`` (default 3000) sessions are the "hot" ones, seen in the last 30 seconds,
  95 % of them declared online; the others were seen 2 minutes to 730 days ago, skewed to
  recent (``power(random(), 2.5)``: about 16 % in the last 7 days). Because the load and
  the vacuum take minutes and the presence window is one minute, the hot sessions get a
  heartbeat (one UPDATE of their ``last_seen_at`` to now, then ``vacuum`` of the table)
  right before each presence view is measured.
- consistency, so that the filters select what they would: a booking's voucher is booked,
  consumed (its slot is over) or, for the 1 booking in 7 that is cancelled, issued again
  (expired once ``valid_until`` passed); bookings of one issuer are days apart, so booked
  slots never overlap; the newest 5 % of applications are pending (open or offered, one
  per property), older ones accepted (35 %) or rejected, their offers accepted, withdrawn
  or open accordingly; transfers older than a day are settled.

Measured, for each view, on one connection as service_role (as the dashboards run; the
owner if that role cannot be taken), autocommit: ``select * from public.<view>``, one
warm-up call of each side, then ``--repeats`` (default 5) calls of each, the order
alternated per repetition: **with the index** (the planner's choice) and **full scan** (the
same query in a transaction with ``set local enable_indexscan, enable_indexonlyscan,
enable_bitmapscan = off``; the connection prepares nothing, so each call is planned under
its side's settings). Reported: median and min-max client-side ms (plan, execution, rows
fetched) of both, their ratio, whether both returned the same rows, and the plan of
each side, ``explain (analyze, buffers, costs off, timing on)``, with its key nodes: every
access to one of the six big tables, checked against the index the view is meant to use
(an Index Only Scan, Index Scan or Bitmap Index Scan on it; no Seq Scan; and an Index Cond
on the index's leading column, without which the whole index is read), plus parallel
workers, JIT and sorts that spill to disk. ``--candidate
FILE.sql`` (repeatable) runs SQL as the owner after the measurements (e.g. a new index or
a rewritten view), analyzes, and measures the indexed side of every view again, so a fix
can be tried before it goes into a migration. A report, not a test: it exits 0 whatever
the figures.

    .venv/bin/python bench/dashboards.py                      # throwaway cluster, 1M rows per table
    .venv/bin/python bench/dashboards.py --rows 100000 --repeats 3
    .venv/bin/python bench/dashboards.py --candidate /tmp/fix.sql   # also measure a fix
    .venv/bin/python bench/dashboards.py --json               # JSON on stdout, the report on stderr
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = "dashboards"
SPAN_DAYS = 730
HOT_SECONDS = 30  # the hot presence sessions were seen in the last HOT_SECONDS at load
COLD_GAP = "2 minutes"  # every other session was seen at least this long before the load
PRESENCE_SKEW = 2.5  # cold sessions: seen SPAN_DAYS * power(random(), PRESENCE_SKEW) before
PAIR_CODE_VOCABULARY = 1000  # pair-0 .. pair-999; each thinker holds rows / users of them
PENDING_SHARE = 0.05  # the newest 5 % of applications are open or offered
PROPERTIES_PER_ROW = 0.2  # properties = rows / 5
FULL_SCAN = ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan")
INDEXED, FULL = "index", "full scan"


@dataclass(frozen=True)
class View:
    """A dashboard and, per big table it reads, the index it is meant to read it through."""

    name: str
    indexes: dict[str, str]
    window: str
    presence: bool = False


VIEWS = [
    View("marketplace_presence_now", {"presence_sessions": "presence_sessions_last_seen_at_idx"},
         "1 minute", presence=True),
    View("marketplace_popular_pair_codes", {"presence_sessions": "presence_sessions_last_seen_at_idx"},
         "7 days", presence=True),
    View("marketplace_bookings_per_day", {"voucher_bookings": "voucher_bookings_created_at_idx"}, "90 days"),
    View("marketplace_template_utilisation", {"vouchers": "vouchers_created_at_idx"}, "90 days"),
    View("marketplace_mortgage_figures", {
        "mortgage_applications": "mortgage_applications_status_created_at_idx",
        "mortgage_offers": "mortgage_offers_created_at_idx",
    }, "status; 90 days"),
    View("marketplace_transfer_sums", {"transfers": "transfers_created_at_idx"}, "90 days"),
]
BIG_TABLES = [
    "presence_sessions", "vouchers", "voucher_bookings", "mortgage_applications", "mortgage_offers",
    "transfers",
]


def log(message: str) -> None:
    harness.log(message)


# --------------------------------------------------------------------------- load

# A user's id from its number n (1..users): the same in auth.users, thinkers and every row.
def uid(n: str) -> str:
    return f"md5('paycore-bench-user-' || ({n}))::uuid"


# <prefix>-<milliseconds of ts, 13 digits>-<12 hex digits of g>: the seed's id format.
def mid(prefix: str, ts: str, g: str) -> str:
    return (f"'{prefix}-' || lpad(floor(extract(epoch from {ts}) * 1000)::bigint::text, 13, '0') || '-' || "
            f"lpad(to_hex({g}), 12, '0')")


# Row g of n, created at sqrt((g - 0.5) / n) of the span (density growing linearly), the
# newest an hour before the load.
def created(g: str, n: int) -> str:
    return (f"T0 - interval '{SPAN_DAYS} days' + (interval '{SPAN_DAYS} days' - interval '1 hour') "
            f"* sqrt(({g} - 0.5) / {n})")


USERS_SQL = """
insert into auth.users (id, email, created_at, updated_at)
select {uid}, 'bench-' || n || '@example.invalid', T0 - interval '{span} days' - interval '30 days',
    T0 - interval '{span} days' - interval '30 days'
from generate_series(1, {users}) as n;
insert into public.thinkers (id, created_at)
select {uid}, T0 - interval '{span} days' - interval '30 days' from generate_series(1, {users}) as n
"""

# Thinker t = (g - 1) % users holds pair codes c = 0, 1, ... (g - 1) / users, named
# pair-((c * 7919 + t * 31) % vocabulary): distinct per thinker (7919 is prime to the
# vocabulary), spread evenly over the vocabulary. The heap is in no time order.
PRESENCE_SQL = """
insert into public.presence_sessions
    (thinker_id, pair_code, status, last_seen_at, online_since, beats, created_at, updated_at)
select
    {thinker},
    'pair-' || (((x.g - 1) / {users}) * 7919 + ((x.g - 1) % {users}) * 31) % {vocabulary},
    case when x.r2 < (case when x.hot then 0.95 else 0.6 end) then 'online' else 'offline' end,
    x.seen,
    x.seen - x.r4 * interval '2 hours',
    1 + floor(x.r4 * 240)::integer,
    x.seen - x.r4 * interval '2 hours' - x.r2 * interval '30 days',
    x.seen
from (
    select
        r.g, r.r1 < {hot_share} as hot, r.r2, r.r4,
        case
            when r.r1 < {hot_share} then T0 - r.r3 * interval '{hot_seconds} seconds'
            else T0 - interval '{cold_gap}' - interval '{span} days' * power(r.r3, {skew})
        end as seen
    from (
        select g, random() as r1, random() as r2, random() as r3, random() as r4
        from generate_series(1, {rows}) as g
    ) as r
) as x
"""

# Voucher g: issuer (g - 1) % users, holder another user; its one booking (below) is
# cancelled when g % 7 = 0. Templates skewed (the first most used), 10 % without one.
VOUCHERS_SQL = """
insert into public.vouchers (
    id, issuer_id, holder_id, template_id, service_type, title, duration_minutes, valid_from, valid_until,
    price_amount, price_currency, status, consumed_at, created_at, updated_at
)
select
    {id}, {issuer}, {holder}, y.template_id, y.service_type, y.title, y.duration,
    y.created_at, y.created_at + interval '60 days',
    case when y.free then null else 5000 + (y.g * 37) % 150 * 100 end,
    case when y.free then null else 'eur' end,
    case
        when y.g % 7 = 0 then
            case when y.created_at + interval '60 days' < T0 then 'expired' else 'issued' end
        when y.slot_end < T0 then 'consumed'
        else 'booked'
    end,
    case when y.g % 7 <> 0 and y.slot_end < T0 then y.slot_end end,
    y.created_at, y.created_at
from (
    select
        x.g, x.created_at, x.free, t.id as template_id,
        coalesce(t.service_type, 'custom.session') as service_type,
        coalesce(t.title, 'Custom session') as title, coalesce(t.default_duration, 60) as duration,
        x.created_at + interval '1 day' + make_interval(mins => coalesce(t.default_duration, 60)) as slot_end
    from (
        select
            g, {created} as created_at, random() < 0.2 as free,
            case when r < 0.1 then null
                else (array[{templates}])[1 + floor(power((r - 0.1) / 0.9, 1.5) * {ntemplates})::integer]
            end as template_id
        from (select g, random() as r from generate_series(1, {rows}) as g) as s
    ) as x
    left join public.voucher_templates as t on t.id = x.template_id
) as y
"""

TEMPLATES = ["consulting", "coaching", "therapy", "realestate.viewing", "legal.consultation",
             "mortgage.consultation"]

# One booking per voucher, made 0-49 minutes after it was issued, its slot a day after;
# the voucher's state says whether it was cancelled.
BOOKINGS_SQL = """
insert into public.voucher_bookings (
    id, voucher_id, issuer_id, holder_id, slot_start, slot_end, status, cancel_reason, cancelled_by,
    cancelled_at, created_at, updated_at
)
select
    'b-' || lpad(floor(extract(epoch from x.booked_at) * 1000)::bigint::text, 13, '0') || '-'
    || right(x.id, 12),
    x.id, x.issuer_id, x.holder_id, x.slot_start, x.slot_start + make_interval(mins => x.duration_minutes),
    case when x.cancelled then 'cancelled' else 'booked' end,
    case when x.cancelled then 'bench: cancelled by the holder' end,
    case when x.cancelled then x.holder_id end,
    case when x.cancelled then least(T0, x.booked_at + interval '1 hour') end,
    x.booked_at, x.booked_at
from (
    select
        v.id, v.issuer_id, v.holder_id, v.duration_minutes, v.valid_from + interval '1 day' as slot_start,
        v.status in ('issued', 'expired') as cancelled,
        least(
            T0, v.created_at + ('x' || right(v.id, 2))::bit(8)::integer % 50 * interval '1 minute'
        ) as booked_at
    from public.vouchers as v
) as x
"""

PROPERTIES_SQL = """
insert into public.properties (id, owner_id, address, created_at)
select 'house-' || p, {owner}, 'Bench street ' || p || ', 1000 Bench',
    T0 - interval '{span} days' - random() * interval '30 days'
from generate_series(1, {properties}) as p;
select setval('paycore.property_numbers', {properties})
"""

# Application g is on property (g - 1) % properties, by its owner; the newest pending
# ones are consecutive, so one pending application per borrower and property.
APPLICATIONS_SQL = """
insert into public.mortgage_applications (
    id, property_id, borrower_id, desired_loan, currency, duration_years, rate_type, max_interest, status,
    created_at, updated_at
)
select
    {id}, 'house-' || ((x.g - 1) % {properties} + 1), {borrower},
    20000000 + x.g % 80 * 1000000, case when x.g % 10 = 0 then 'chf' else 'eur' end,
    10 + x.g % 4 * 5, case when x.g % 3 = 0 then 'variable' else 'fixed' end, 0.0700,
    case
        when x.g > {settled_rows} then case when x.g % 5 < 3 then 'open' else 'offered' end
        when x.g % 20 < 7 then 'accepted'
        else 'rejected'
    end,
    x.created_at, x.created_at
from (select g, {created} as created_at from generate_series(1, {rows}) as g) as x
"""

# One offer per application that is not open, by another user than its borrower.
OFFERS_SQL = """
insert into public.mortgage_offers (
    id, application_id, lender_id, borrower_id, interest_rate, monthly_payment, status, created_at, updated_at
)
select
    'mo-' || lpad(floor(extract(epoch from x.offered_at) * 1000)::bigint::text, 13, '0') || '-'
    || right(x.id, 12),
    x.id, {lender}, x.borrower_id, x.rate, x.desired_loan / (12 * x.duration_years) + 1,
    case x.status when 'accepted' then 'accepted' when 'rejected' then 'withdrawn' else 'open' end,
    x.offered_at, x.offered_at
from (
    select
        a.id, a.borrower_id, a.desired_loan, a.duration_years, a.status,
        substr(a.property_id, 7)::integer as p,
        round((0.02 + 0.045 * random())::numeric, 4) as rate,
        least(T0, a.created_at + (1 + random() * 47) * interval '1 hour') as offered_at
    from public.mortgage_applications as a
    where a.status <> 'open'
) as x
"""

TRANSFERS_SQL = """
insert into public.transfers (
    id, thinker_id, direction, wallet_address, network, crypto_amount, crypto_symbol, fiat_amount,
    fiat_currency, status, settled_at, created_at, updated_at
)
select
    {id}, {thinker}, case when x.r1 < 0.6 then 'in' else 'out' end,
    '0x' || md5('wallet-' || ((x.g - 1) % {users})) || left(md5('w' || ((x.g - 1) % {users})), 8),
    (array['Ethereum Mainnet', 'Polygon', 'Arbitrum One', 'Base', 'Solana'])[x.k],
    round((0.001 + x.r3 * 2)::numeric, 8),
    case when x.r4 < 0.5 then 'USDC' else (array['ETH', 'MATIC', 'ETH', 'ETH', 'SOL'])[x.k] end,
    floor(1000 + power(x.r3, 3) * 5000000)::bigint,
    (array['eur', 'usd', 'chf'])[1 + floor(power(x.r4, 1.5) * 3)::integer],
    case when x.created_at < T0 - interval '1 day' then 'settled' else 'logged' end,
    case when x.created_at < T0 - interval '1 day' then x.created_at + interval '1 hour' end,
    x.created_at, x.created_at
from (
    select
        g, {created} as created_at, random() as r1, 1 + floor(power(random(), 2) * 5)::integer as k,
        random() as r3, random() as r4
    from generate_series(1, {rows}) as g
) as x
"""

# The hot presence sessions (seen within HOT_SECONDS of the load; every other one at least
# COLD_GAP before it) beat again: last seen now.
HEARTBEAT_SQL = """
update public.presence_sessions as s
set last_seen_at = now() - random() * interval '10 seconds', updated_at = now(), beats = s.beats + 1
where s.last_seen_at >= {t0} - interval '{hot_seconds} seconds' - interval '5 seconds'
"""


def load_statements(args: argparse.Namespace) -> list[list[tuple[str, str]]]:
    """Streams of (table, SQL): the users first, then the streams that may run side by side.

    ``T0`` in the SQL stands for the load's anchor timestamp.
    """
    users, rows = args.users, args.rows
    properties = max(1, int(rows * PROPERTIES_PER_ROW))
    pending = min(properties, max(1, int(rows * PENDING_SHARE)))
    return [
        [("users", USERS_SQL.format(uid=uid("n"), users=users, span=SPAN_DAYS))],
        [
            ("presence_sessions", PRESENCE_SQL.format(
                thinker=uid(f"(x.g - 1) % {users} + 1"), users=users, vocabulary=args.vocabulary,
                hot_share=args.online / rows, hot_seconds=HOT_SECONDS, cold_gap=COLD_GAP, span=SPAN_DAYS,
                skew=PRESENCE_SKEW, rows=rows,
            )),
            ("vouchers", VOUCHERS_SQL.format(
                id=mid("v", "y.created_at", "y.g"), issuer=uid(f"(y.g - 1) % {users} + 1"),
                # another user: the issuer's number plus 1 .. users - 1, modulo users
                holder=uid(f"((y.g - 1) % {users} + 1 + (y.g * 7) % ({users} - 1)) % {users} + 1"),
                created=created("g", rows), templates=", ".join(f"'{t}'" for t in TEMPLATES),
                ntemplates=len(TEMPLATES), rows=rows,
            )),
            ("voucher_bookings", BOOKINGS_SQL),
        ],
        [
            ("properties", PROPERTIES_SQL.format(
                owner=uid(f"(p - 1) % {users} + 1"), span=SPAN_DAYS, properties=properties,
            )),
            ("mortgage_applications", APPLICATIONS_SQL.format(
                id=mid("ma", "x.created_at", "x.g"), properties=properties,
                borrower=uid(f"((x.g - 1) % {properties}) % {users} + 1"),
                settled_rows=rows - pending, created=created("g", rows), rows=rows,
            )),
            ("mortgage_offers", OFFERS_SQL.format(
                lender=uid(f"((x.p - 1) % {users} + 1 + (x.p * 7) % ({users} - 1)) % {users} + 1"),
            )),
            ("transfers", TRANSFERS_SQL.format(
                id=mid("tx", "x.created_at", "x.g"), thinker=uid(f"(x.g - 1) % {users} + 1"), users=users,
                created=created("g", rows), rows=rows,
            )),
        ],
    ]


def literal(ts: datetime) -> str:
    return f"'{ts.isoformat()}'::timestamptz"


def load_stream(conninfo: str, t0: datetime, seed: float, stream: list[tuple[str, str]]) -> dict[str, Any]:
    """One stream on its own connection, a transaction per table."""
    out: dict[str, Any] = {"load_s": {}, "loaded": {}}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"select setseed({seed})".encode())
        for table, text in stream:
            t = time.monotonic()
            with conn.transaction():
                for statement in text.replace("T0", literal(t0)).split(";\n"):
                    conn.execute(statement.encode())
            seconds = round(time.monotonic() - t, 1)
            name = sql.Identifier("auth" if table == "users" else "public", table)
            count = conn.execute(sql.SQL("select count(*) from {}").format(name)).fetchone()
            out["load_s"][table] = seconds
            out["loaded"][table] = int(count[0]) if count else -1
            log(f"  {table}: {out['loaded'][table]:,} rows in {seconds:.1f} s")
    return out


def vacuum(conninfo: str, tables: list[str]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in tables:
            schema, name = table.split(".")
            conn.execute(sql.SQL("vacuum analyze {}").format(sql.Identifier(schema, name)))


def setup(conninfo: str, args: argparse.Namespace) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("select now()").fetchone()
    assert row
    t0: datetime = row[0]
    facts: dict[str, Any] = {"t0": t0.isoformat(), "users": args.users, "rows_per_table": args.rows,
                             "load_jobs": args.load_jobs, "load_s": {}, "loaded": {}}
    started = time.monotonic()
    first, *streams = load_statements(args)
    done = [load_stream(conninfo, t0, 0.42, first)]
    with ThreadPoolExecutor(max_workers=args.load_jobs) as pool:
        futures = [pool.submit(load_stream, conninfo, t0, 0.42 + 0.1 * (i + 1), stream)
                   for i, stream in enumerate(streams)]
        done += [f.result() for f in futures]
    for d in done:
        facts["load_s"].update(d["load_s"])
        facts["loaded"].update(d["loaded"])
    facts["load_wall_s"] = round(time.monotonic() - started, 1)
    # After every stream has committed (an open load transaction would keep vacuum from
    # marking pages all-visible), the tables split over the same number of connections.
    t = time.monotonic()
    tables = ["auth.users", "public.thinkers", "public.profiles", "public.properties"] + [
        f"public.{table}" for table in BIG_TABLES]
    with ThreadPoolExecutor(max_workers=args.load_jobs) as pool:
        list(pool.map(lambda part: vacuum(conninfo, part), [tables[i::args.load_jobs]
                                                             for i in range(args.load_jobs)]))
    facts["vacuum_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("analyze")  # the small tables (templates, fees, ...) too
        try:
            conn.execute("checkpoint")
            facts["checkpoint_s"] = round(time.monotonic() - t, 1)
        except psycopg.errors.InsufficientPrivilege:
            facts["checkpoint_s"] = None
        facts["build_s"] = round(time.monotonic() - started, 1)
        facts["tables"] = table_facts(conn)
    return facts


def table_facts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for table in BIG_TABLES:
        row = conn.execute(
            """
            select c.reltuples::bigint, pg_size_pretty(pg_relation_size(c.oid)),
                pg_size_pretty(pg_indexes_size(c.oid)), relallvisible::float / nullif(relpages, 0)
            from pg_class as c where c.oid = %s::regclass
            """,
            (f"public.{table}",),
        ).fetchone()
        assert row
        out[table] = {"rows": int(row[0]), "heap": row[1], "indexes": row[2],
                      "all_visible": round(float(row[3] or 0), 3)}
    return out


def index_facts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Per index of the six tables: its table, leading column, size, definition."""
    rows = conn.execute(
        """
        select i.relname, t.relname, pg_get_indexdef(x.indexrelid, 1, true),
            pg_size_pretty(pg_relation_size(x.indexrelid)), pg_get_indexdef(x.indexrelid)
        from pg_index as x
        join pg_class as i on i.oid = x.indexrelid
        join pg_class as t on t.oid = x.indrelid
        where t.relnamespace = 'public'::regnamespace and t.relname = any(%s)
        """,
        (BIG_TABLES,),
    ).fetchall()
    return {r[0]: {"table": r[1], "leading": r[2], "size": r[3], "definition": r[4]} for r in rows}


def heartbeat(conn: psycopg.Connection[Any], t0: str) -> int:
    """The hot presence sessions beat now; vacuum so the index stays index-only."""
    cur = conn.execute(
        HEARTBEAT_SQL.format(t0=literal(datetime.fromisoformat(t0)), hot_seconds=HOT_SECONDS).encode()
    )
    conn.execute("vacuum public.presence_sessions")
    return cur.rowcount


# --------------------------------------------------------------------------- plans

NODE_RE = re.compile(
    r"^(?P<indent>\s*)(?:->\s+)?(?P<node>\S.*?)\s+"
    r"\((?:actual time=(?P<start>[0-9.]+)\.\.(?P<end>[0-9.]+) rows=(?P<rows>\d+) loops=(?P<loops>\d+)"
    r"|(?P<never>never executed))\)$"
)
ACCESS_RE = re.compile(
    r"^(?P<kind>(?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan))"
    r"(?: Backward)?(?: using (?P<index>\S+))? on (?P<rel>\S+)"
)


def access_nodes(plan: str, indexes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each scan of a big table (and each Bitmap Index Scan of one of their indexes), with its details."""
    lines = plan.splitlines()
    nodes: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        m = NODE_RE.match(line)
        if not m:
            continue
        a = ACCESS_RE.match(m.group("node"))
        if not a:
            continue
        kind, index, rel = a.group("kind"), a.group("index"), a.group("rel")
        if kind == "Bitmap Index Scan":
            index, rel = rel, indexes.get(rel, {}).get("table", "?")
        if rel not in BIG_TABLES:
            continue
        node: dict[str, Any] = {
            "node": kind, "index": index, "table": rel,
            "rows": None if m.group("never") else int(m.group("rows")) * int(m.group("loops")),
            "ms": None if m.group("never") else float(m.group("end")),
            "loops": None if m.group("never") else int(m.group("loops")),
        }
        for detail in lines[i + 1:]:
            if NODE_RE.match(detail) or not detail.startswith(" "):  # the next node, or the footer
                break
            d = detail.strip()
            for key, prefix in (("index_cond", "Index Cond:"), ("filter", "Filter:"),
                                ("removed", "Rows Removed by Filter:"), ("buffers", "Buffers:"),
                                ("heap_blocks", "Heap Blocks:"), ("recheck", "Recheck Cond:")):
                if d.startswith(prefix):
                    node.setdefault(key, d[len(prefix):].strip())
            if d.startswith("Heap Fetches:"):
                node["heap_fetches"] = int(d.split(":")[1])
        nodes.append(node)
    return nodes


def check(view: View, nodes: list[dict[str, Any]], indexes: dict[str, dict[str, Any]]) -> list[str]:
    """What keeps the plan from reading one range of the intended index, per table (empty: none)."""
    problems: list[str] = []
    for table, index in view.indexes.items():
        reads = [n for n in nodes if n["table"] == table and n["node"] != "Bitmap Heap Scan"]
        if not reads:
            problems.append(f"{table}: not read at all (?)")
        for n in reads:
            if n["node"].endswith("Seq Scan"):
                problems.append(f"{table}: {n['node']} ({n['rows']} rows out), not {index}")
            elif n["index"] != index:
                problems.append(f"{table}: read through {n['index']}, not {index}")
            else:
                lead = indexes.get(index, {}).get("leading", "?")
                cond = n.get("index_cond", "")
                if not re.search(rf"\b{re.escape(lead)}\b", cond):
                    problems.append(
                        f"{table}: {n['node']} on {index} without a condition on its leading column "
                        f"{lead} (Index Cond: {cond or 'none'}): it reads the whole index"
                    )
    return problems


def explain(conn: psycopg.Connection[Any], query: str, full: bool) -> str:
    text = "explain (analyze, buffers, costs off, timing on) " + query
    if full:
        with conn.transaction():
            for setting in FULL_SCAN:
                conn.execute(f"set local {setting} = off".encode())
            rows = conn.execute(text.encode()).fetchall()
    else:
        rows = conn.execute(text.encode()).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def plan_facts(plan: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, pattern in (("planning_ms", r"Planning Time: ([0-9.]+) ms"),
                         ("execution_ms", r"Execution Time: ([0-9.]+) ms")):
        m = re.search(pattern, plan)
        out[key] = float(m.group(1)) if m else None
    top = next((NODE_RE.match(line) for line in plan.splitlines() if NODE_RE.match(line)), None)
    out["top"] = top.group("node") if top else "?"
    workers = re.search(r"Workers Launched: (\d+)", plan)
    out["workers"] = int(workers.group(1)) if workers else 0
    jit = re.search(r"^JIT:", plan, re.MULTILINE)
    out["jit"] = bool(jit)
    out["spills"] = [ln.strip() for ln in plan.splitlines() if "Disk:" in ln or "external" in ln]
    return out


# --------------------------------------------------------------------------- timing


def timed(conn: psycopg.Connection[Any], query: str, full: bool) -> tuple[float, list[Any]]:
    if full:
        with conn.transaction():
            for setting in FULL_SCAN:
                conn.execute(f"set local {setting} = off".encode())
            t = time.perf_counter()
            rows = conn.execute(query.encode()).fetchall()
            elapsed = time.perf_counter() - t
    else:
        t = time.perf_counter()
        rows = conn.execute(query.encode()).fetchall()
        elapsed = time.perf_counter() - t
    return elapsed * 1000, rows


def measure(
    conn: psycopg.Connection[Any], view: View, repeats: int, indexes: dict[str, dict[str, Any]],
    loads: list[float], sides: tuple[str, ...] = (INDEXED, FULL),
) -> dict[str, Any]:
    query = f"select * from public.{view.name}"
    warmup = {side: round(timed(conn, query, side == FULL)[0], 1) for side in sides}
    ms: dict[str, list[float]] = {side: [] for side in sides}
    last: dict[str, list[Any]] = {}
    same: list[bool] = []
    orders: list[list[str]] = []
    for rep in range(repeats):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for side in order:
            elapsed, rows = timed(conn, query, side == FULL)
            ms[side].append(elapsed)
            last[side] = rows
        orders.append(order)
        if len(sides) == 2:
            same.append(last[INDEXED] == last[FULL])
        loads.append(os.getloadavg()[0])
        log(f"  rep {rep + 1}: " + ", ".join(f"{side} {ms[side][-1]:.1f} ms" for side in order))
    plans: dict[str, Any] = {}
    for side in sides:
        text = explain(conn, query, side == FULL)
        nodes = access_nodes(text, indexes)
        plans[side] = {"text": text, "nodes": nodes, **plan_facts(text)}
    problems = check(view, plans[INDEXED]["nodes"], indexes)
    out: dict[str, Any] = {
        "view": view.name, "window": view.window, "intended": view.indexes,
        "warmup_ms": warmup, "orders": orders,
        "ms": {k: [round(v, 2) for v in vs] for k, vs in ms.items()},
        "median_ms": {k: round(statistics.median(vs), 2) for k, vs in ms.items()},
        "min_ms": {k: round(min(vs), 2) for k, vs in ms.items()},
        "max_ms": {k: round(max(vs), 2) for k, vs in ms.items()},
        "rows_returned": len(last[INDEXED]),
        "first_row": [str(v) for v in last[INDEXED][0]] if last[INDEXED] else None,
        "plans": plans,
        "problems": problems,
        "uses_intended_index": not problems,
    }
    if len(sides) == 2:
        out["same_rows"] = all(same)
        out["speedup"] = round(out["median_ms"][FULL] / out["median_ms"][INDEXED], 1)
    return out


def measure_all(
    conn: psycopg.Connection[Any], owner: psycopg.Connection[Any], args: argparse.Namespace, t0: str,
    indexes: dict[str, dict[str, Any]], loads: list[float], sides: tuple[str, ...] = (INDEXED, FULL),
) -> list[dict[str, Any]]:
    """Every view on ``conn``; ``owner`` (the owner's connection) gives the heartbeats."""
    results = []
    for view in VIEWS:
        beat = None
        if view.presence:
            beat = heartbeat(owner, t0)
        beaten = f" ({beat} hot presence sessions beat just before)" if beat is not None else ""
        log(f"{view.name} ...{beaten}")
        r = measure(conn, view, args.repeats, indexes, loads, sides)
        r["heartbeat_rows"] = beat
        results.append(r)
        for side in sides:
            log(f"--- {view.name}, {side}:\n{r['plans'][side]['text']}")
        log("  " + ("uses " + ", ".join(view.indexes.values()) if not r["problems"]
                    else "PROBLEM: " + "; ".join(r["problems"])))
    return results


def service_role(conn: psycopg.Connection[Any]) -> str:
    """Take service_role for the measurements (the dashboards' role), else stay the owner."""
    try:
        conn.execute("set role service_role")
        return "service_role"
    except psycopg.Error as error:
        row = conn.execute("select current_user").fetchone()
        user = str(row[0]) if row else "?"
        log(f"  cannot set role service_role ({error.__class__.__name__}): measuring as {user}")
        return user


# --------------------------------------------------------------------------- report


def node_line(n: dict[str, Any]) -> str:
    using = f" using {n['index']}" if n.get("index") and n["node"] != "Bitmap Index Scan" else ""
    if n["node"] == "Bitmap Index Scan":
        using = f" on {n['index']}"
    parts = [f"{n['node']}{using}" + (f" on {n['table']}" if n["node"] != "Bitmap Index Scan" else
                                       f" (of {n['table']})"),
             f"rows {n['rows']:,}" if n["rows"] is not None else "never executed"]
    if n.get("loops") and n["loops"] > 1:
        parts.append(f"loops {n['loops']}")
    if "heap_fetches" in n:
        parts.append(f"heap fetches {n['heap_fetches']}")
    if n.get("index_cond"):
        parts.append(f"cond {n['index_cond']}")
    if n.get("filter"):
        parts.append(f"filter {n['filter']}" + (f" (removed {n['removed']})" if n.get("removed") else ""))
    if n.get("buffers"):
        parts.append(f"buffers {n['buffers']}")
    return ", ".join(parts)


def render(r: dict[str, Any]) -> str:
    f, b = r["server"], r["build"]
    loads = r["load_average_1m"]
    lines = [
        f"marketplace dashboards at {b['rows_per_table']:,} rows per table: each view with its index "
        "(the planner's choice) and as a full scan",
        f"PostgreSQL {f['server_version']}; synchronous_commit={f['synchronous_commit']}, "
        f"fsync={f['fsync']}, "
        f"shared_buffers={f['shared_buffers']}, work_mem={f['work_mem']}, jit={f['jit']}, "
        f"max_parallel_workers_per_gather={f['max_parallel_workers_per_gather']}; {r['cpus']} CPUs "
        f"({platform.machine()}); migrations sha256 {r['migrations_sha256']}",
        f"one client (psycopg, autocommit) as {r['role']}; per view 1 warm-up call of each side, then "
        f"{r['repeats']} of each, order alternated; ms = client-side, select * from the view, all rows "
        f"fetched; full scan = set local {', '.join(FULL_SCAN)} = off; 1-min load average during the calls "
        f"{loads[0]:.1f}-{loads[1]:.1f}",
        "",
    ]
    header = (f"{'view':<33} {'window':<15} {'index ms':>9} {'min-max':>13} {'full ms':>8} {'min-max':>13} "
              f"{'x':>6} {'same':>4}  intended index used")
    lines += [header, "-" * len(header)]
    for v in r["views"]:
        md, lo, hi = v["median_ms"], v["min_ms"], v["max_ms"]
        lines.append(
            f"{v['view']:<33} {v['window'][:15]:<15} {md[INDEXED]:>9.1f} "
            f"{f'{lo[INDEXED]:.1f}-{hi[INDEXED]:.1f}':>13} {md[FULL]:>8.1f} "
            f"{f'{lo[FULL]:.1f}-{hi[FULL]:.1f}':>13} {v['speedup']:>6.1f} "
            f"{'yes' if v['same_rows'] else 'NO':>4}  "
            + ("yes" if v["uses_intended_index"] else "NO")
        )
    lines.append("x = full-scan ms / index ms (medians); same = both sides returned the same rows every time")
    lines += ["", "key nodes (plan with the index; then the full-scan plan's):"]
    for v in r["views"]:
        p, q = v["plans"][INDEXED], v["plans"][FULL]
        lines.append(
            f"{v['view']}: top {p['top']}; execution {p['execution_ms']} ms "
            f"(full scan {q['execution_ms']} ms), "
            f"{v['rows_returned']} rows returned"
            + (f"; {v['heartbeat_rows']} hot sessions beat just before" if v.get("heartbeat_rows") is not None
               else "")
        )
        for n in p["nodes"]:
            lines.append(f"  index: {node_line(n)}")
        for n in q["nodes"]:
            lines.append(f"  full:  {node_line(n)}")
        notes = [", ".join([x for x, on in (("JIT", side["jit"]), (f"{side['workers']} parallel workers",
                                                                    side["workers"])) if on] + side["spills"])
                 or "-" for side in (p, q)]
        if notes != ["-", "-"]:
            lines.append(f"  note: index side {notes[0]}; full side {notes[1]}")
        for problem in v["problems"]:
            lines.append(f"  PROBLEM {problem}")
    for c in r.get("candidates", []):
        if "error" in c:
            lines += ["", f"candidate {c['file']} failed (rolled back, nothing measured): {c['error']}"]
            continue
        lines += ["", f"candidate {c['file']} (run as the owner, then analyze): the index side again"]
        before = {v["view"]: v for v in r["views"]}
        for v in c["views"]:
            old = before[v["view"]]["median_ms"][INDEXED]
            plan = v["plans"][INDEXED]
            lines.append(
                f"  {v['view']:<33} {v['median_ms'][INDEXED]:>9.1f} ms (was {old:.1f}); top {plan['top']}"
                + "".join(f"; {spill}" for spill in plan["spills"]) + "; "
                + ("uses the intended index" if v["uses_intended_index"] else "; ".join(v["problems"]))
            )
            for n in v["plans"][INDEXED]["nodes"]:
                lines.append(f"    {node_line(n)}")
    lines += ["", f"database {b['name']}: {b['users']:,} users and thinkers; anchor T0 {b['t0']}"]
    for table in BIG_TABLES:
        t = b["tables"][table]
        lines.append(
            f"  {table:<22} {b['loaded'][table]:>9,} rows loaded in {b['load_s'][table]:>5.1f} s; "
            f"heap {t['heap']}, "
            f"indexes {t['indexes']}, all-visible {t['all_visible']:.0%}"
        )
    lines.append(
        f"  users {b['load_s']['users']:.1f} s, properties {b['load_s']['properties']:.1f} s "
        f"({b['loaded']['properties']:,}); {b['load_jobs']} stream(s) side by side "
        "(per-table times overlap); "
        f"load {b['load_wall_s']:.0f} s wall, vacuum analyze {b['vacuum_s']:.0f} s, "
        + (f"checkpoint {b['checkpoint_s']:.0f} s" if b["checkpoint_s"] is not None else "no checkpoint")
        + f"; build {b['build_s']:.0f} s"
    )
    lines.append(f"total runtime: {r['total_runtime_s']:.0f} s")
    lines += ["", "plans (explain (analyze, buffers, costs off, timing on) select * from the view):"]
    for v in r["views"]:
        for side in (INDEXED, FULL):
            lines += [f"--- {v['view']}, {side}:", v["plans"][side]["text"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows in each of the six big tables (offers: those of applications not open; "
                        "default 1000000)")
    parser.add_argument("--users", type=int, default=10_000, help="auth users and thinkers (default 10000)")
    parser.add_argument("--online", type=int, default=3000,
                        help="hot presence sessions, seen in the last minute (default 3000)")
    parser.add_argument("--load-jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="load streams run side by side: presence and vouchers / mortgages and transfers "
                        "(default min(2, CPUs))")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side and view (default 5)")
    parser.add_argument("--candidate", type=Path, action="append", default=[], metavar="FILE.sql",
                        help="SQL run as the owner after the measurements, then every view measured again "
                        "(index side); repeatable, each on top of the previous")
    parser.add_argument(
        "--database-url", default=os.environ.get(harness.URL_ENV),
        help=f"server (a user that may create databases) to use instead of a throwaway cluster; the database "
        f"paycore_bench_{BENCH} is (re)created there and dropped afterwards (default: ${harness.URL_ENV}; "
        "$DATABASE_URL is never read)",
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the text report on stderr")
    parser.add_argument("--keep", action="store_true", help="keep the cluster or database afterwards")
    args = parser.parse_args(argv)
    if (args.rows < 100 or args.users < 10 or args.repeats < 1 or args.load_jobs < 1
            or not 1 <= args.online <= args.rows // 10):
        parser.error(
            "--rows >= 100, --users >= 10, --repeats >= 1, --load-jobs >= 1, 1 <= --online <= rows / 10"
        )
    # Pair codes: a thinker holds ceil(rows / users) distinct ones of the vocabulary. Bookings:
    # an issuer's vouchers are users rows apart, at least SPAN * users / (2 rows) apart in time
    # (the newest), which must exceed a slot (60 minutes) for booked slots never to overlap.
    if args.users * 1000 < args.rows:
        parser.error("--users must be at least rows / 1000")
    for path in args.candidate:
        if not path.is_file():
            parser.error(f"--candidate {path}: no such file")
    args.vocabulary = max(PAIR_CODE_VOCABULARY, math.ceil(args.rows / args.users))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    name = harness.database_name(BENCH, harness.DEFAULT_DATABASE)
    loads: list[float] = []
    result: dict[str, Any] = {
        "benchmark": BENCH,
        "method": "one client (psycopg, autocommit), select * from each view; per view 1 warm-up call of "
        "each side, then --repeats calls of each, order alternated; index = the planner's choice, "
        f"full scan = set local {', '.join(FULL_SCAN)} = off; client-side ms, median",
        "migrations_sha256": harness.migrations_digest(),
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "clients": 1,
    }
    with (
        harness.server(args.database_url, args.keep) as (server_url, _throwaway),
        harness.databases(server_url, [name], args.keep) as conninfos,
    ):
        conninfo = conninfos[name]
        log(f"loading {args.users:,} users, then {args.rows:,} rows per table into {name} "
            f"({args.load_jobs} stream(s) side by side) ...")
        build = setup(conninfo, args)
        build["name"] = name
        log(f"  built in {build['build_s']:.0f} s")
        facts = harness.server_facts(conninfo)
        # prepare_threshold=None: every call planned afresh under the settings of its side (psycopg
        # would otherwise prepare a query after 5 calls and reuse that plan for both sides).
        with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
            for setting in ("work_mem", "jit", "max_parallel_workers_per_gather"):
                row = conn.execute(sql.SQL("show {}").format(sql.Identifier(setting))).fetchone()
                facts[setting] = str(row[0]) if row else "?"
            indexes = index_facts(conn)
            with psycopg.connect(conninfo, autocommit=True) as owner:
                result["role"] = service_role(conn)
                result["views"] = measure_all(conn, owner, args, build["t0"], indexes, loads)
        candidates = []
        for path in args.candidate:
            log(f"candidate {path} ...")
            with (
                psycopg.connect(conninfo, autocommit=True) as owner,
                psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn,
            ):
                try:
                    with owner.transaction():
                        owner.execute(path.read_text().encode())
                except psycopg.Error as error:
                    log(f"  {path} failed, skipped: {error}")
                    candidates.append({"file": str(path), "sql": path.read_text(), "error": str(error)})
                    continue
                owner.execute("analyze")
                indexes = index_facts(owner)
                service_role(conn)
                views = measure_all(conn, owner, args, build["t0"], indexes, loads, sides=(INDEXED,))
            candidates.append({"file": str(path), "sql": path.read_text(), "views": views})
        result["candidates"] = candidates
    result.update(server=facts, build=build, load_average_1m=[min(loads, default=0), max(loads, default=0)])
    result["total_runtime_s"] = round(time.monotonic() - started, 1)
    report = render(result)
    if args.json:
        log(report)
        print(json.dumps(result, indent=2, default=str))
    else:
        print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
