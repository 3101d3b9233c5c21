#!/usr/bin/env python3
"""Latency of public.get_ecosystem_stats over 1M events against a bare-SQL floor.

One database, ``yoyo apply`` of ``migrations/``, then N users (``--users``, default 20000)
and ``--events`` events (default 1,000,000) loaded with one set-based insert into
public.events, in time order, spread evenly over the last 90 days (less one hour, so that
the 90-day window taken minutes later still holds every one of them): apps cv / letters /
rise at 50 / 35 / 15 %, ten event types (skewed), 3 % without an actor; each app's actors
drawn from its own range of users, the ranges overlapping so that 40 % of the users are
active in two or three apps. Then ``vacuum analyze public.events`` (the visibility map: the
time index is scanned index-only) and a checkpoint.

Timed, for each window (``--days``, default 7,30,90; 90 covers every event): one warm-up
call of each side, then ``--repeats`` (default 5) calls of each, one client (psycopg, one
connection, autocommit), the order alternated per repetition (floor first, then the function
first). The floor is the bare SQL no statistics of the window can avoid, one aggregate pass
over the same rows::

    select app_id, type, count(*), count(distinct actor_id) from public.events
    where created_at >= now() - interval 'N days' and created_at < now() group by 1, 2

ratio of a repetition = floor ms / function ms (<= 1: the function is slower). Reported:
median and min-max per side and of the ratio, clients = 1, synchronous_commit, and the
verdict "under 1 s" (median) per window. Then the plan of the 90-day call as executed inside
the function (auto_explain on the timing connection; without superuser, EXPLAIN of the
function's query copied from the installed body with the window as literals), of the floor,
and of the function's first call on a new connection (custom plan); at the end one
``paycore.purge_events(interval '60 days')`` (information: rows deleted and seconds). A
report, not a test: it exits 0 whatever the figures.

Server and databases come from bench/harness.py (throwaway cluster or --database-url /
$PAYCORE_TEST_DATABASE_URL, never $DATABASE_URL); its Scenario/pgbench rounds measure
throughput, so the latency loop is here.

    .venv/bin/python bench/ecosystem.py                      # throwaway cluster, 1M events
    .venv/bin/python bench/ecosystem.py --events 200000 --repeats 3 --no-purge
    .venv/bin/python bench/ecosystem.py --json               # JSON on stdout, the report on stderr
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = "ecosystem"
FUNCTION = "get_ecosystem_stats"
FLOOR = "floor"
INDEX = "events_created_at_app_id_type_actor_id_idx"
LIMIT_MS = 1000.0  # the issue: under a second at 1M events
SPAN_DAYS = 90
PURGE_OLDER_THAN = "60 days"
NULL_ACTOR = 0.03

# app, share of the events, first user (fraction of N), users (fraction of N). Overlaps:
# cv and letters share users 40-60 %, letters and rise 55-80 %, all three 55-60 %; 40 % of
# the users are in two or three apps, the last 10 % in none.
APPS = [("cv", 0.50, 0.00, 0.60), ("letters", 0.35, 0.40, 0.40), ("rise", 0.15, 0.55, 0.35)]
# Ten types, the first the most frequent (type i has weight ~ sqrt(i+1) - sqrt(i)).
TYPES = [
    "session.started", "page.viewed", "feature.used", "generation.completed", "export.completed",
    "credits.adjusted", "nudge.sent", "share.created", "subscription.activated", "feedback.sent",
]

USERS_SQL = """
create schema bench;
create table bench.users (n integer primary key, id uuid not null unique);
insert into bench.users (n, id) select n, gen_random_uuid() from generate_series(1, {users}) as n;
insert into auth.users (id, email) select id, 'bench-' || n || '@example.invalid' from bench.users order by n;
"""

# One set-based insert, in time order (row g one step after row g - 1), like a real log.
LOAD_SQL = """
insert into public.events (app_id, type, actor_id, created_at)
select x.app_id, x.type, case when x.rn < {null_actor} then null else u.id end, x.created_at
from (
    select
        r.g,
        {app_case} as app_id,
        (array[{types}])[1 + floor(power(r.rt, 2) * {ntypes})::integer] as type,
        r.rn,
        {user_case} as n,
        now() - interval '{span} days' + interval '1 hour'
            + (r.g - 1) * ((interval '{span} days' - interval '1 hour') / {events}) as created_at
    from (
        select g, random() as ra, random() as rt, random() as ru, random() as rn
        from generate_series(1, {events}) as g
    ) as r
) as x
join bench.users as u on u.n = x.n
order by x.g
"""

FLOOR_SQL = """
select e.app_id, e.type, count(*) as events, count(distinct e.actor_id) as users
from public.events as e
where e.created_at >= now() - interval '{days} days' and e.created_at < now()
group by 1, 2
"""

FUNCTION_SQL = "select public.get_ecosystem_stats(%s)"

AUTO_EXPLAIN = [
    "load 'auto_explain'",
    "set auto_explain.log_min_duration = 0",
    "set auto_explain.log_analyze = on",
    "set auto_explain.log_buffers = on",
    "set auto_explain.log_timing = on",
    "set auto_explain.log_nested_statements = on",
    "set auto_explain.log_format = text",
    "set auto_explain.log_level = notice",
]


def log(message: str) -> None:
    harness.log(message)


def load_sql(users: int, events: int) -> str:
    app_case, user_case, edge = "case", "case", 0.0
    for i, (app, share, start, size) in enumerate(APPS):
        edge += share
        first, count = int(start * users), max(1, int(size * users))
        last = i == len(APPS) - 1
        cond = "else" if last else f"when r.ra < {edge:.4f} then"
        app_case += f" {cond} '{app}'"
        user_case += f" {cond} ({first} + floor(r.ru * {count})::integer) % {users} + 1"
    return LOAD_SQL.format(
        null_actor=NULL_ACTOR, app_case=app_case + " end", user_case=user_case + " end",
        types=", ".join(f"'{t}'" for t in TYPES), ntypes=len(TYPES), span=SPAN_DAYS, events=events,
    )


def setup(conn: psycopg.Connection[Any], args: argparse.Namespace) -> dict[str, Any]:
    facts: dict[str, Any] = {"users": args.users, "events": args.events}
    t = time.monotonic()
    with conn.transaction():
        conn.execute(USERS_SQL.format(users=args.users).encode())
    facts["users_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    with conn.transaction():
        conn.execute("select setseed(0.42)")
        # Setup, not traffic: skip the actor foreign key's trigger for 1M rows where we may.
        try:
            with conn.transaction():
                conn.execute("set local session_replication_role = replica")
            facts["session_replication_role"] = "replica"
        except psycopg.errors.InsufficientPrivilege:
            facts["session_replication_role"] = "origin"
        cur = conn.execute(load_sql(args.users, args.events).encode())
        facts["loaded"] = cur.rowcount
    facts["load_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    conn.execute("vacuum analyze public.events")
    facts["vacuum_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    try:
        conn.execute("checkpoint")
        facts["checkpoint_s"] = round(time.monotonic() - t, 1)
    except psycopg.errors.InsufficientPrivilege:
        facts["checkpoint_s"] = None
    row = conn.execute(
        """
        select pg_size_pretty(pg_relation_size('public.events')),
            pg_size_pretty(pg_relation_size(%s::regclass)),
            pg_size_pretty(pg_total_relation_size('public.events')),
            (select relallvisible::float / nullif(relpages, 0) from pg_class
                where oid = 'public.events'::regclass)
        """,
        (f"public.{INDEX}",),
    ).fetchone()
    assert row
    facts.update(heap=row[0], index=row[1], total=row[2], all_visible=round(float(row[3] or 0), 3))
    return facts


def timed(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] | None = None
) -> tuple[float, Any]:
    t = time.perf_counter()
    rows = conn.execute(query.encode() if params is None else query, params).fetchall()
    return (time.perf_counter() - t) * 1000, rows


def time_window(conn: psycopg.Connection[Any], days: int, repeats: int, loads: list[float]) -> dict[str, Any]:
    floor_sql = FLOOR_SQL.format(days=days)
    sides = {
        FLOOR: lambda: timed(conn, floor_sql),
        FUNCTION: lambda: timed(conn, FUNCTION_SQL, (days,)),
    }
    warmup = {name: round(run()[0], 1) for name, run in sides.items()}
    ms: dict[str, list[float]] = {FLOOR: [], FUNCTION: []}
    orders: list[list[str]] = []
    last: dict[str, Any] = {}
    for rep in range(repeats):
        order = [FLOOR, FUNCTION] if rep % 2 == 0 else [FUNCTION, FLOOR]
        for name in order:
            elapsed, rows = sides[name]()
            ms[name].append(elapsed)
            last[name] = rows
        orders.append(order)
        loads.append(os.getloadavg()[0])
        log(f"  {days} d rep {rep + 1}: " + ", ".join(f"{n} {ms[n][-1]:.0f} ms" for n in order)
            + f", ratio {ms[FLOOR][-1] / ms[FUNCTION][-1]:.3f}")
    stats = last[FUNCTION][0][0]
    ratios = [f / x for f, x in zip(ms[FLOOR], ms[FUNCTION], strict=True)]
    return {
        "days": days,
        "warmup_ms": warmup,
        "ms": {k: [round(v, 1) for v in vs] for k, vs in ms.items()},
        "orders": orders,
        "median_ms": {k: round(statistics.median(vs), 1) for k, vs in ms.items()},
        "min_ms": {k: round(min(vs), 1) for k, vs in ms.items()},
        "max_ms": {k: round(max(vs), 1) for k, vs in ms.items()},
        "ratios": [round(r, 3) for r in ratios],
        "ratio": round(statistics.median(ratios), 3),
        "under_1s": statistics.median(ms[FUNCTION]) < LIMIT_MS,
        "events_in_window": int(stats["events"]),
        "floor_events": int(sum(r[2] for r in last[FLOOR])),
        "active_users": int(stats["active_users"]),
        "cross_app_users": int(stats["cross_app_users"]),
        "users_per_app": stats["users_per_app"],
        "app_pairs": stats["app_pairs"],
        "groups": len(stats["by_type"]),
    }


# --------------------------------------------------------------------------- plans

NODE_RE = re.compile(
    r"^(\s*(?:->\s+)?)(.+?)\s+\(cost=[^)]*\)\s+"
    r"\(actual time=([0-9.]+)\.\.([0-9.]+) rows=(\d+) loops=(\d+)"
)
SCAN_RE = re.compile(
    r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Heap Scan|Seq Scan))(?: using (\S+))? on events\b"
)


def summarize(plan: str) -> dict[str, Any]:
    """Top node, the scan of public.events, heap fetches, buffers, temp spill, JIT."""
    lines = plan.splitlines()
    out: dict[str, Any] = {}
    top_at = next((i for i, line in enumerate(lines) if NODE_RE.match(line)), None)
    if top_at is not None:
        m = NODE_RE.match(lines[top_at])
        assert m
        out["top"] = f"{m.group(2)} (actual {m.group(4)} ms, rows {m.group(5)})"
        buffers = next((ln.strip() for ln in lines[top_at + 1:] if ln.strip().startswith("Buffers:")), None)
        out["top_buffers"] = buffers
    scans = []
    for i, line in enumerate(lines):
        s = SCAN_RE.search(line)
        if not s or "(cost=" not in line:
            continue
        m = NODE_RE.match(line)
        scan: dict[str, Any] = {  # rows: all loops (a parallel scan's workers together)
            "node": s.group(1), "index": s.group(2), "rows": int(m.group(5)) * int(m.group(6)) if m else None,
        }
        for detail in lines[i + 1:i + 8]:
            d = detail.strip()
            if d.startswith("Heap Fetches:"):
                scan["heap_fetches"] = int(d.split(":")[1])
            elif d.startswith(("Index Cond:", "Filter:")):
                scan["cond"] = d
            elif NODE_RE.match(detail):
                break
        scans.append(scan)
    out["events_scans"] = scans
    conds = " ".join(s.get("cond", "") for s in scans)
    generic = re.search(r"\$\d", conds)
    out["plan_kind"] = "generic ($n parameters)" if generic else "custom (window as constants)"
    out["spills"] = [ln.strip() for ln in lines if "Disk:" in ln or "Disk Usage:" in ln or "external" in ln]
    jit = [ln.strip() for ln in lines if ln.strip().startswith(("Functions:", "Timing:"))]
    out["jit"] = " ".join(jit) if jit else None
    duration = re.search(r"duration: ([0-9.]+) ms", plan) or re.search(r"Execution Time: ([0-9.]+) ms", plan)
    out["duration_ms"] = float(duration.group(1)) if duration else None
    return out


def function_plan(conn: psycopg.Connection[Any], days: int, where: str) -> tuple[str, str]:
    """(how, plan text) of the function's window query for ``days``, as the timed calls ran it."""
    notices: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    try:
        for statement in AUTO_EXPLAIN:
            conn.execute(statement.encode())
    except psycopg.Error as error:
        log(f"  auto_explain not available ({error.__class__.__name__}): EXPLAIN of the copied query")
        return "EXPLAIN of the installed function's query, window as literals", copied_plan(conn, days)
    conn.add_notice_handler(on_notice)
    try:
        conn.execute(FUNCTION_SQL, (days,)).fetchall()
    finally:
        conn.remove_notice_handler(on_notice)
        conn.execute("set auto_explain.log_min_duration = -1")
    plan = next((n for n in notices if "materialized" in n and "events" in n), "")
    return f"auto_explain inside the function, {where}", plan


def copied_plan(conn: psycopg.Connection[Any], days: int) -> str:
    row = conn.execute(
        "select prosrc from pg_proc where oid = 'public.get_ecosystem_stats(integer)'::regprocedure"
    ).fetchone()
    assert row
    body = str(row[0])
    start, end = body.find("with w as materialized"), body.find(" into v_result;")
    if start < 0 or end < 0:
        return "(the function's query was not found in its body)"
    query = body[start:end]
    bounds = conn.execute("select now(), now() - make_interval(days => %s)", (days,)).fetchone()
    assert bounds
    for name, value in (("v_until", bounds[0]), ("v_since", bounds[1])):
        query = re.sub(rf"\b{name}\b", f"'{value.isoformat()}'::timestamptz", query)
    query = re.sub(r"\bp_days\b", str(days), query)
    rows = conn.execute(("explain (analyze, buffers) " + query).encode()).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def floor_plan(conn: psycopg.Connection[Any], days: int) -> str:
    rows = conn.execute(("explain (analyze, buffers) " + FLOOR_SQL.format(days=days)).encode()).fetchall()
    return "\n".join(str(r[0]) for r in rows)


# --------------------------------------------------------------------------- report


def plan_lines(title: str, s: dict[str, Any]) -> list[str]:
    lines = [title, f"  top node: {s.get('top', '?')}" + (
        f"; {s['duration_ms']:.0f} ms" if s.get("duration_ms") is not None else "")]
    for scan in s["events_scans"] or [{"node": "(no scan of events found)"}]:
        using = f" using {scan['index']}" if scan.get("index") else ""
        fetches = f", heap fetches {scan['heap_fetches']}" if "heap_fetches" in scan else ""
        lines.append(f"  events: {scan['node']}{using}, rows {scan.get('rows')}{fetches}")
    index_only = any(
        x["node"].endswith("Index Only Scan") and x.get("index") == INDEX for x in s["events_scans"]
    )
    lines.append(f"  index-only scan of {INDEX}: {'yes' if index_only else 'no'}; plan {s['plan_kind']}")
    lines.append(f"  top buffers: {s.get('top_buffers') or '-'}")
    lines.append("  spills to disk: " + ("; ".join(s["spills"]) if s["spills"] else "none"))
    lines.append(f"  JIT: {s['jit'] or 'not used'}")
    return lines


def render(r: dict[str, Any]) -> str:
    f, b = r["server"], r["build"]
    loads = r["load_average_1m"]
    lines = [
        f"{FUNCTION} vs bare-SQL floor: latency per call, one client (psycopg), {b['events']:,} events",
        f"PostgreSQL {f['server_version']}; synchronous_commit={f['synchronous_commit']}, "
        f"fsync={f['fsync']}, shared_buffers={f['shared_buffers']}, work_mem={f['work_mem']}, "
        f"jit={f['jit']}; "
        f"{r['cpus']} CPUs ({platform.machine()}); migrations sha256 {r['migrations_sha256']}",
        f"clients=1, synchronous_commit={r['synchronous_commit']} (read-only calls); per window 1 warm-up "
        f"call of each side, then {r['repeats']} of each, order alternated (floor first, then the function "
        f"first); 1-min load average during the calls {loads[0]:.1f}-{loads[1]:.1f}",
        "floor = select app_id, type, count(*), count(distinct actor_id) from public.events "
        "where created_at in the window group by 1, 2",
        "ratio = floor ms / function ms of the same repetition (<= 1: the function is slower); "
        "median and min-max over the repetitions",
        "",
    ]
    header = (f"{'window':>6} {'events':>9} {'function ms':>12} {'min-max':>13} {'floor ms':>9} "
              f"{'min-max':>13} {'ratio':>6} {'min-max':>11}  under 1 s")
    lines += [header, "-" * len(header)]
    for w in r["windows"]:
        md, lo, hi = w["median_ms"], w["min_ms"], w["max_ms"]
        fn_span = f"{lo[FUNCTION]:.0f}-{hi[FUNCTION]:.0f}"
        floor_span = f"{lo[FLOOR]:.0f}-{hi[FLOOR]:.0f}"
        ratio_span = f"{min(w['ratios']):.3f}-{max(w['ratios']):.3f}"
        lines.append(
            f"{w['days']:>4} d {w['events_in_window']:>9} {md[FUNCTION]:>12.0f} {fn_span:>13} "
            f"{md[FLOOR]:>9.0f} {floor_span:>13} {w['ratio']:>6.3f} {ratio_span:>11}  "
            + ("yes" if w["under_1s"] else "NO")
        )
    lines.append(
        f"under 1 s at {b['events']:,} events (median of the function): "
        + ", ".join(f"{w['days']} d {'yes' if w['under_1s'] else 'no'}" for w in r["windows"])
    )
    lines += ["", "repetitions (ms, in run order; warm-up first):"]
    for w in r["windows"]:
        reps = "; ".join(
            ", ".join(f"{n} {w['ms'][n][i]:.0f}" for n in order) for i, order in enumerate(w["orders"])
        )
        warm = ", ".join(f"{n} {v:.0f}" for n, v in w["warmup_ms"].items())
        lines.append(f"  {w['days']:>2} d: warm-up {warm} | {reps}")
    lines += ["", "what the function returned (last call of each window):"]
    for w in r["windows"]:
        pairs = ", ".join(f"{'+'.join(p['apps'])} {p['users']}" for p in w["app_pairs"])
        per_app = ", ".join(f"{k} {v}" for k, v in w["users_per_app"].items())
        lines.append(
            f"  {w['days']:>2} d: events {w['events_in_window']} (floor counted {w['floor_events']}), "
            f"active users {w['active_users']}, cross-app {w['cross_app_users']}, per app {per_app}; "
            f"pairs {pairs}; {w['groups']} app+type groups"
        )
    plans = r.get("plans") or {}
    if plans:
        lines.append("")
        lines += plan_lines(f"plan of {FUNCTION}({plans['days']}): {plans['function_how']}",
                            plans["function"])
        lines += plan_lines(
            f"plan of the floor ({plans['days']} d): EXPLAIN (ANALYZE, BUFFERS)", plans["floor"]
        )
        if "first_call" in plans:
            lines += plan_lines(
                f"plan of {FUNCTION}({plans['days']}) on a new connection (first call took "
                f"{r['first_call_ms']:.0f} ms without EXPLAIN): {plans['first_call_how']}",
                plans["first_call"],
            )
    lines += [
        "",
        f"database {b['name']}: {b['users']} users, {b['loaded']:,} events over the last {SPAN_DAYS} days "
        f"(less 1 h), apps " + "/".join(f"{a} {s:.0%}" for a, s, _, _ in APPS)
        + f", {len(TYPES)} types, {NULL_ACTOR:.0%} without actor; heap {b['heap']}, index {b['index']}, "
        f"table with all indexes {b['total']}, all-visible {b['all_visible']:.0%}",
        f"  built: users {b['users_s']:.0f} s, events {b['load_s']:.0f} s "
        f"(session_replication_role {b['session_replication_role']}), vacuum analyze {b['vacuum_s']:.0f} s, "
        + (f"checkpoint {b['checkpoint_s']:.0f} s" if b["checkpoint_s"] is not None else "no checkpoint"),
    ]
    purge = r.get("purge")
    if purge:
        lines.append(
            f"purge_events(interval '{PURGE_OLDER_THAN}') (information): {purge['deleted']:,} rows "
            f"deleted in {purge['seconds']:.1f} s, {purge['left']:,} events left"
        )
    lines.append(f"total runtime: {r['total_runtime_s']:.0f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events loaded (default 1000000)")
    parser.add_argument("--users", type=int, default=20_000, help="users in auth.users (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side and window (default 5)")
    parser.add_argument("--days", default="7,30,90", help="comma-separated windows in days (default 7,30,90)")
    parser.add_argument("--no-purge", action="store_true", help="skip the purge_events timing at the end")
    parser.add_argument(
        "--database-url", default=os.environ.get(harness.URL_ENV),
        help=f"server (a user that may create databases and owns or may call the functions) to use instead "
        f"of a throwaway cluster; the database paycore_bench_{BENCH} is (re)created there and dropped "
        f"afterwards (default: ${harness.URL_ENV}; $DATABASE_URL is never read)",
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the text report on stderr")
    parser.add_argument("--keep", action="store_true", help="keep the cluster or database afterwards")
    args = parser.parse_args(argv)
    try:
        args.windows = [int(d) for d in args.days.split(",") if d.strip()]
    except ValueError:
        parser.error("--days takes comma-separated integers")
    if not args.windows or min(args.windows) < 1 or max(args.windows) > 366:
        parser.error("--days takes integers 1 to 366")
    if args.events < 1 or args.users < 10 or args.repeats < 1:
        parser.error("--events >= 1, --users >= 10, --repeats >= 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    name = harness.database_name(BENCH, harness.DEFAULT_DATABASE)
    loads: list[float] = []
    result: dict[str, Any] = {
        "benchmark": BENCH,
        "method": "one client (psycopg, autocommit); per window 1 warm-up call of each side, then --repeats "
        "calls of each, order alternated; ratio = floor ms / function ms per repetition; median",
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
        log(f"loading {args.users} users and {args.events:,} events into {name} ...")
        t = time.monotonic()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            build = setup(conn, args)
        build.update(name=name, setup_s=round(time.monotonic() - t, 1))
        log(f"  done in {build['setup_s']:.0f} s (events {build['load_s']:.0f} s, "
            f"vacuum {build['vacuum_s']:.0f} s)")
        facts = harness.server_facts(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for setting in ("work_mem", "jit"):
                row = conn.execute(sql.SQL("show {}").format(sql.Identifier(setting))).fetchone()
                facts[setting] = str(row[0]) if row else "?"
            result["synchronous_commit"] = facts["synchronous_commit"]
            windows = []
            for days in args.windows:
                log(f"window {days} d ...")
                windows.append(time_window(conn, days, args.repeats, loads))
            result["windows"] = windows
            days = max(args.windows)
            log(f"plans of the {days}-day window ...")
            how, plan = function_plan(conn, days, "on the timing connection after the timed calls")
            fplan = floor_plan(conn, days)
            log(f"--- {FUNCTION}({days}) ({how}):\n{plan}\n--- floor ({days} d):\n{fplan}\n---")
            result["plans"] = {
                "days": days, "function_how": how, "function": summarize(plan), "floor": summarize(fplan),
                "function_text": plan, "floor_text": fplan,
            }
        # A new session plans the function's query afresh (custom plans for its first 5 calls; the
        # timed calls above ran on one connection, where plpgsql may have switched to a generic plan).
        log(f"first call of {FUNCTION}({days}) on a new connection ...")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            result["first_call_ms"] = round(timed(conn, FUNCTION_SQL, (days,))[0], 1)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            how, plan = function_plan(conn, days, "its first call on another new connection")
            log(f"--- {FUNCTION}({days}) on a new connection ({how}):\n{plan}\n---")
            result["plans"].update(first_call_how=how, first_call=summarize(plan), first_call_text=plan)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            if not args.no_purge:
                log(f"purge_events(interval '{PURGE_OLDER_THAN}') ...")
                t = time.monotonic()
                row = conn.execute(
                    "select paycore.purge_events(%s::interval)", (PURGE_OLDER_THAN,)
                ).fetchone()
                seconds = time.monotonic() - t
                left = conn.execute("select count(*) from public.events").fetchone()
                result["purge"] = {
                    "deleted": int(row[0]) if row else -1, "seconds": round(seconds, 2),
                    "left": int(left[0]) if left else -1,
                }
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
