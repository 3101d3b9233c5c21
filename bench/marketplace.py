#!/usr/bin/env python3
"""Throughput of public.book_voucher against a bare-SQL floor, at 1 and 8 clients.

The issue: "book_voucher against a floor of one insert into a table with the same exclusion
constraint plus one insert of a fee row, 1 and 8 clients; target >= 0.6 of the floor."

One database (``yoyo apply`` of ``migrations/``), then, as the owner:

- ``--holders`` users (default 1000) who book, and ``--issuers`` users (default 1000) who
  issue, all with their ``public.thinkers`` row (as after their first marketplace call);
- a pool of bookable vouchers, written straight into ``public.vouchers`` (ids
  ``v-<13 digits>-<12 hex>``, 60 minutes, 50.00 eur, status issued, no holder) and numbered in
  ``bench.slots(n, voucher_id, issuer_id, slot_start, slot_end, price)``: voucher n belongs to
  issuer ``(n - 1) % K + 1`` and its slot starts ``(n - 1) / K`` hours after a base a day
  ahead, so consecutive vouchers are in different calendars, one issuer's slots follow each
  other without overlapping, every slot is in the future and inside its voucher's validity
  (a week before to a month after the slot). Before each scenario the pool is topped up so
  that at least ``--max-tps`` x the scenario's seconds of unused vouchers remain;
- the floor's tables: ``bench.voucher_bookings`` and ``bench.fee_events``, ``(like ...
  including all)`` of the real ones: the same columns, defaults, checks and indexes,
  the exclusion constraint ``exclude using gist (issuer_id with =, tstzrange(slot_start,
  slot_end) with &&) where (status = 'booked')`` included; no foreign keys, no triggers.

Each transaction takes the next voucher of its own side's sequence (``bench.floor_n`` /
``bench.book_voucher_n``, both counting from 1, so the n-th transaction of either side
books slot n): the same lookup, written the same way, in both scripts. Both scripts are
PostgREST's call of a function for a signed-in user, since book_voucher is executable by
``authenticated`` only (it refuses every other role): ``begin``; ``set_config`` of the JWT
claims (a random holder of ``--holders``) and of the role ``authenticated`` for the
transaction; one ``select`` of the function; ``commit``. So both sides pay the same four
round trips, the same role switch and the same lookups:

    select public.book_voucher(s.voucher_id, s.slot_start)
    from (select nextval('bench.book_voucher_n') as n) as q left join bench.slots as s on s.n = q.n;

    select bench.floor_book(s.voucher_id, s.issuer_id, s.slot_start, s.slot_end, s.price_amount,
        s.price_currency)
    from (select nextval('bench.floor_n') as n) as q left join bench.slots as s on s.n = q.n;

(the left join makes a voucher number past the pool an error, never a silent empty select).

**The floor**, ``bench.floor_book``, a plpgsql SECURITY DEFINER function (without a ``set``
clause: a signed-in user may write neither table), is the issue's two inserts: the booking
row (a ``b-...`` id computed inline, the holder from ``auth.uid()``) into
``bench.voucher_bookings``, where the exclusion constraint is checked, and one fee row (2 %
of the price, a constant rule snapshot) into ``bench.fee_events``. A function rather than
two statements in the script: two statements would cost the floor one more round trip than
book_voucher's one call (which would flatter book_voucher), and a function call per
transaction puts a plpgsql entry, SECURITY DEFINER and the plan cache of the statements in
the floor too, as in the other benchmarks. What is left between the two is exactly what
book_voucher adds: the caller's checks (role, JWT, auth.users, thinker row), the locked read
of the voucher and its state checks, the lock of the issuer's thinker row (one booking at
a time per issuer), the subtransaction of the exception block around the insert, the
foreign keys of the booking, the voucher's update (trigger, indexes), the fee
rules read and the snapshot built (charge_fees), the events row (log_event), ``set
search_path`` and the composite result.

The headline comes from separate pgbench runs (bench/harness.py): per client count
``--rounds`` rounds (6 by default here, not the harness' 4; at least 4), each round the
floor and book_voucher alone, order alternated, a checkpoint before every run, ratio =
book_voucher tps / floor tps of the round, median over the rounds;
target >= 0.6. At the end the script checks, on each side, that the bookings written equal
the transactions pgbench counted as processed, that no issuer has two overlapping booked
slots, that fee events (and, for book_voucher, voucher.booked events and booked vouchers)
equal the bookings. After the report, on the throwaway cluster: the server CPU per
transaction of each side (the backends' CPU, from the postmaster's reaped-children times,
median over the runs) and their ratio, a side figure that the machine's other work moves far
less than tps (on stderr with ``--json``). A report, not a test: it exits 0 whatever the
figures.

    .venv/bin/python bench/marketplace.py                       # throwaway cluster (~4 min)
    .venv/bin/python bench/marketplace.py --seconds 3 --json    # JSON on stdout
    .venv/bin/python bench/marketplace.py --issuers 1           # every client on one calendar
    .venv/bin/python bench/marketplace.py --rounds 8            # a busy machine: more rounds
    PAYCORE_TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/marketplace.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FLOOR = "floor"
REAL = "book_voucher"
TARGET = 0.6
DURATION_MINUTES = 60
PRICE = 5000  # cents
CURRENCY = "eur"
FEE_CENTS = 100  # the default rule voucher.booking: 2 % of PRICE
DEFAULT_ROUNDS = 6

SETUP_SQL = """
create schema bench;

-- Who books (holders) and who issues (issuers), by number; disjoint, so nobody books its own.
create table bench.holders (n integer primary key, id uuid not null unique default gen_random_uuid());
create table bench.issuers (n integer primary key, id uuid not null unique default gen_random_uuid());
insert into bench.holders (n) select generate_series(1, %(holders)s);
insert into bench.issuers (n) select generate_series(1, %(issuers)s);
insert into auth.users (id, email)
select id, 'bench-holder-' || n || '@example.invalid' from bench.holders
union all
select id, 'bench-issuer-' || n || '@example.invalid' from bench.issuers;
-- Their thinker rows, as after their first marketplace call.
insert into public.thinkers (id) select id from bench.holders union all select id from bench.issuers;

-- The numbered pool: voucher n of issuer (n - 1) %% K + 1, its slot (n - 1) / K hours after
-- the base. bench.add_vouchers appends to it.
create table bench.meta (base timestamptz not null, issuers integer not null);
insert into bench.meta values (date_trunc('hour', now()) + interval '1 day', %(issuers)s);
create table bench.slots (
    n bigint primary key,
    voucher_id text not null unique,
    issuer_id uuid not null,
    slot_start timestamptz not null,
    slot_end timestamptz not null,
    price_amount bigint not null,
    price_currency text not null
);

create function bench.add_vouchers(p_count integer)
returns bigint
language plpgsql volatile
as $$
declare
    v_from bigint := coalesce((select max(n) from bench.slots), 0);
    v_base timestamptz := (select base from bench.meta);
    v_k integer := (select issuers from bench.meta);
    v_ms text := lpad(floor(extract(epoch from now()) * 1000)::bigint::text, 13, '0');
begin
    insert into bench.slots (n, voucher_id, issuer_id, slot_start, slot_end, price_amount, price_currency)
    select
        g.n, 'v-' || v_ms || '-' || lpad(to_hex(g.n), 12, '0'), i.id,
        v_base + ((g.n - 1) / v_k) * interval '%(duration)s minutes',
        v_base + ((g.n - 1) / v_k + 1) * interval '%(duration)s minutes',
        %(price)s, '%(currency)s'
    from generate_series(v_from + 1, v_from + p_count) as g (n)
    join bench.issuers as i on i.n = (g.n - 1) %% v_k + 1
    order by g.n;
    insert into public.vouchers (
        id, issuer_id, template_id, service_type, title, duration_minutes, valid_from, valid_until,
        price_amount, price_currency, terms
    )
    select
        s.voucher_id, s.issuer_id, 'consulting', 'consulting.session', 'Bench session', %(duration)s,
        s.slot_start - interval '7 days', s.slot_end + interval '30 days', s.price_amount, s.price_currency,
        '{"cancellation": "free until 24 hours before the slot"}'
    from bench.slots as s
    where s.n > v_from
    order by s.n;
    return v_from + p_count;
end;
$$;

-- The sides' voucher numbers: the n-th transaction of either side takes slot n.
create sequence bench.floor_n;
create sequence bench.book_voucher_n;

-- The floor's tables: the real ones' columns, defaults, checks and indexes (the exclusion
-- constraint included), without foreign keys and triggers.
create table bench.voucher_bookings (like public.voucher_bookings including all);
create table bench.fee_events (like public.fee_events including all);

-- The floor: the issue's two inserts, as the owner (a signed-in user may write neither table).
create function bench.floor_book(
    p_voucher_id text, p_issuer_id uuid, p_slot_start timestamptz, p_slot_end timestamptz,
    p_price_amount bigint, p_price_currency text
)
returns bench.voucher_bookings
language plpgsql volatile security definer
as $$
declare
    v_booking bench.voucher_bookings;
begin
    insert into bench.voucher_bookings (id, voucher_id, issuer_id, holder_id, slot_start, slot_end)
    values (
        'b-' || lpad(floor(extract(epoch from now()) * 1000)::bigint::text, 13, '0') || '-'
            || left(replace(gen_random_uuid()::text, '-', ''), 12),
        p_voucher_id, p_issuer_id, auth.uid(), p_slot_start, p_slot_end
    )
    returning * into v_booking;
    insert into bench.fee_events (
        fee_id, subject_type, subject_id, base_amount, amount_cents, currency, fee_rule
    )
    values (
        'voucher.booking', 'voucher_booking', v_booking.id, p_price_amount,
        round(p_price_amount * 0.02)::bigint, p_price_currency,
        '{"id": "voucher.booking", "scope": "voucher", "percentage": 0.02, "fixed_amount": 0,
          "currency": null, "beneficiary_id": null}'
    );
    return v_booking;
end;
$$;

-- What the signed-in scripts read and call.
grant usage on schema bench to authenticated;
grant select on bench.holders, bench.slots to authenticated;
grant usage on sequence bench.floor_n, bench.book_voucher_n to authenticated;
revoke all on function bench.floor_book(text, uuid, timestamptz, timestamptz, bigint, text)
from public;
grant execute on function bench.floor_book(text, uuid, timestamptz, timestamptz, bigint, text)
to authenticated;
"""

# PostgREST's prologue for a signed-in user's call: claims and role for the transaction only.
AUTH_BEGIN = (
    "begin;\n"
    "select set_config('request.jwt.claims', json_build_object('sub', id, 'role', 'authenticated')::text, "
    "true), set_config('role', 'authenticated', true) from bench.holders where n = :h;\n"
)
AUTH_END = "commit;\n"
CALLS = {
    FLOOR: "select bench.floor_book(s.voucher_id, s.issuer_id, s.slot_start, s.slot_end, s.price_amount, "
    "s.price_currency)\n"
    "from (select nextval('bench.floor_n') as n) as q left join bench.slots as s on s.n = q.n;\n",
    REAL: "select public.book_voucher(s.voucher_id, s.slot_start)\n"
    "from (select nextval('bench.book_voucher_n') as n) as q left join bench.slots as s on s.n = q.n;\n",
}
# How a script names its side (the harness writes each script to a file).
MARKERS = {FLOOR: "bench.floor_book(", REAL: "public.book_voucher("}

# Set by scenarios(): the unused vouchers probe() keeps in the pool before a scenario.
pool_need: dict[int, int] = {}
pool_calls: list[int] = []
max_clients = 1
cpu_enabled = False
# Transactions pgbench counted as processed, per side, over every run (warm-ups included).
committed: Counter[str] = Counter()
runs_per_side: Counter[str] = Counter()
# Server CPU per transaction (us) of each run alone, per (clients, side): throwaway cluster only.
cpu_runs: dict[tuple[int, str], list[float]] = {}
postmasters: dict[str, int | None] = {}
_pgbench = harness.pgbench
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the exited children the process has reaped (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / TICKS


def postmaster(conninfo: str) -> int | None:
    """The local postmaster's pid (the checkpointer's parent), or None when it cannot be read."""
    if conninfo not in postmasters:
        pid = None
        try:
            with psycopg.connect(conninfo) as conn:
                query = "select pid from pg_stat_activity where backend_type = 'checkpointer'"
                row = conn.execute(query).fetchone()
            if row:
                stat = Path(f"/proc/{row[0]}/stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                if b"postgres" in Path(f"/proc/{parent}/cmdline").read_bytes():
                    reaped_cpu(parent)
                    pid = parent
        except (OSError, ValueError, IndexError, psycopg.Error):
            pid = None
        postmasters[conninfo] = pid
    return postmasters[conninfo]


def counting_pgbench(
    target: harness.Target, scripts: list[Path], clients: int, threads: int, seconds: int
) -> str:
    """harness.pgbench, also counting each side's processed transactions for the final check.

    On the throwaway cluster it also takes the CPU the run's backends used, from the
    postmaster's reaped-children times: each pgbench connection is a backend that exits when
    the run ends. A side figure that other work on the machine hardly moves, unlike tps.
    """
    pm = postmaster(target.conninfo) if cpu_enabled else None
    before = reaped_cpu(pm) if pm else 0.0
    out = _pgbench(target, scripts, clients, threads, seconds)
    sides = [next((s for s, m in MARKERS.items() if m in p.read_text()), "?") for p in scripts]
    if len(scripts) == 1:
        match = harness.TXNS_RE.search(out)
        counts = [int(match.group(1)) if match else 0]
    else:
        counts = [int(m.group(1)) for m in harness.SCRIPT_TXNS_RE.finditer(out)]
    for side, count in zip(sides, counts, strict=False):
        committed[side] += count
        runs_per_side[side] += 1
    if pm and len(scripts) == 1:
        # The backends exit just after pgbench does; the postmaster reaps them within moments.
        deadline, last = time.monotonic() + 2.0, -1.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = reaped_cpu(pm)
            if now == last:
                break
            last = now
        if counts[0]:
            cpu_runs.setdefault((clients, sides[0]), []).append((last - before) / counts[0] * 1e6)
    return out


# The harness runs every pgbench through harness.pgbench (run_alone, run_mixed look it up at
# call time): wrapping it is how this module sees each run's processed transactions and CPU
# without changing the shared harness.
harness.pgbench = counting_pgbench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Six rounds rather than the harness' four: on this shared machine one run in four is often
    # hit by other work, and the whole run still takes about 4 minutes.
    parser.set_defaults(rounds=DEFAULT_ROUNDS)
    parser.add_argument("--holders", type=int, default=1000, help="users who book (default 1000)")
    parser.add_argument(
        "--issuers", type=int, default=1000,
        help="issuers the vouchers are spread over, one after the other (default 1000; 1: every "
        "client books in one calendar)",
    )
    parser.add_argument(
        "--max-tps", type=int, default=5000,
        help="tps the voucher pool is sized for: before each scenario at least this x its seconds "
        "of unused vouchers (default 5000)",
    )


def setup(conninfo: str, database: str, args: argparse.Namespace) -> dict[str, Any]:
    holders, issuers = int(args.holders), int(args.issuers)
    if holders < 1 or issuers < 1 or args.max_tps < 1:
        raise SystemExit("--holders, --issuers and --max-tps must be at least 1")
    params = {
        "holders": holders, "issuers": issuers, "duration": DURATION_MINUTES, "price": PRICE,
        "currency": CURRENCY,
    }
    facts: dict[str, Any] = {"holders": holders, "issuers": issuers}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute((SETUP_SQL % params).encode())
        # The default fee rule is what book_voucher charges: 2 %, any currency.
        row = conn.execute(
            "select percentage, fixed_amount, currency, active from public.fees where id = 'voucher.booking'"
        ).fetchone()
        facts["fee_rule"] = (
            f"voucher.booking {float(row[0]) * 100:g} % + {row[1]} cents, currency {row[2] or 'any'}, "
            f"{'active' if row[3] else 'inactive'}" if row else "voucher.booking missing"
        )
        t = time.monotonic()
        facts.update(top_up(conn, first_need()))
        facts["pool_s"] = round(time.monotonic() - t, 1)
        conn.execute("vacuum analyze")
        facts["first_call"] = first_call(conn)
    return facts


def first_call(conn: psycopg.Connection[Any]) -> str:
    """One call of each side on the last voucher of the pool, as a signed-in holder, rolled back."""
    conn.execute("begin")
    try:
        conn.execute(AUTH_BEGIN.removeprefix("begin;\n").replace(":h", "1"))
        row = conn.execute(
            "select (public.book_voucher(s.voucher_id, s.slot_start)).slot_end = s.slot_end, "
            "(bench.floor_book(s.voucher_id, s.issuer_id, s.slot_start, s.slot_end, s.price_amount, "
            "s.price_currency)).slot_end = s.slot_end "
            "from bench.slots as s where s.n = (select max(n) from bench.slots)"
        ).fetchone()
        conn.execute("reset role")
        fees = conn.execute(
            "select (select amount_cents from public.fee_events), (select amount_cents from bench.fee_events)"
        ).fetchone()
    finally:
        conn.execute("rollback")
    if not row or row != (True, True) or not fees or tuple(fees) != (FEE_CENTS, FEE_CENTS):
        raise SystemExit(f"a first call of each side went wrong: slot ends {row}, fees {fees}")
    return f"both sides booked one slot, fee {FEE_CENTS} cents each (rolled back)"


def first_need() -> int:
    return pool_need[pool_calls[0]] if pool_calls else 0


def top_up(conn: psycopg.Connection[Any], need: int) -> dict[str, Any]:
    """Append vouchers until at least ``need`` are unused by the side that used the most."""
    row = conn.execute(
        "select coalesce(max(n), 0), "
        "greatest((select last_value from bench.floor_n where is_called), "
        "(select last_value from bench.book_voucher_n where is_called), 0) from bench.slots"
    ).fetchone()
    pool, used = (int(row[0]), int(row[1])) if row else (0, 0)
    added = max(0, used + need - pool)
    if added:
        with conn.transaction():
            conn.execute("select bench.add_vouchers(%s)", (added,))
        conn.execute("analyze bench.slots")
        conn.execute("analyze public.vouchers")
    return {"vouchers": pool + added, "used": used, "added": added}


def scenarios(args: argparse.Namespace) -> list[harness.Scenario]:
    global max_clients, cpu_enabled
    cpu_enabled = not args.database_url and sys.platform.startswith("linux")
    pick = f"\\set h random(1, {int(args.holders)})\n"
    scripts = {variant: pick + AUTH_BEGIN + call + AUTH_END for variant, call in CALLS.items()}
    runs = args.rounds + min(args.mixed_rounds, args.rounds)
    seconds = runs * args.seconds + args.warmup_seconds
    calendar = (
        "one calendar" if args.issuers == 1
        else f"{args.issuers} calendars, consecutive vouchers in different ones"
    )
    result = []
    pool_need.clear()
    pool_calls.clear()
    for i, clients in enumerate(args.client_counts):
        pool_need[i] = seconds * args.max_tps
        pool_calls.append(i)
        result.append(harness.Scenario(
            "book", clients, scripts,
            description=f"the next unused voucher, {calendar}, a random holder of {args.holders}, as "
            "authenticated (begin, JWT claims and role set local, call, commit)",
        ))
    max_clients = max(args.client_counts)
    return result


def probe(conninfo: str) -> dict[str, Any]:
    """Before a scenario: top the voucher pool up for it; the bookings so far."""
    index = pool_calls.pop(0) if pool_calls else None
    need = pool_need.get(index, 0) if index is not None else 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        facts = top_up(conn, need)
        row = conn.execute(
            "select (select count(*) from public.voucher_bookings), "
            "(select count(*) from bench.voucher_bookings)"
        ).fetchone()
        if row:
            facts["bookings"] = int(row[0])
            facts["floor bookings"] = int(row[1])
    return facts


OVERLAPS = """
select count(*) from (
    select b.slot_start < max(b.slot_end) over (
        partition by b.issuer_id order by b.slot_start rows between unbounded preceding and 1 preceding
    ) as overlaps
    from {table} as b
    where b.status = 'booked'
) as o
where o.overlaps
"""

CHECK_SQL = """
select
    (select count(*) from public.voucher_bookings),
    (select count(*) from public.voucher_bookings where status = 'booked'),
    (select count(*) from public.voucher_bookings as b
     join public.vouchers as v on v.id = b.voucher_id
     where v.status = 'booked' and v.holder_id = b.holder_id and b.status = 'booked'),
    (select count(*) from public.vouchers where status = 'booked'),
    (select count(*) from public.fee_events as f
     join public.voucher_bookings as b on f.subject_type = 'voucher_booking' and f.subject_id = b.id
     where f.fee_id = 'voucher.booking' and f.amount_cents = %(fee)s and f.base_amount = %(price)s),
    (select count(*) from public.fee_events),
    (select count(*) from public.events where type = 'voucher.booked'),
    (select count(*) from bench.voucher_bookings),
    (select count(*) from bench.fee_events as f
     join bench.voucher_bookings as b on f.subject_id = b.id where f.amount_cents = %(fee)s),
    (select count(*) from bench.fee_events),
    (select last_value from bench.book_voucher_n where is_called),
    (select last_value from bench.floor_n where is_called)
"""


def check(conninfo: str) -> tuple[bool, str]:
    """Each side: bookings = processed transactions, no overlapping booked slots, fees = bookings."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(CHECK_SQL, {"fee": FEE_CENTS, "price": PRICE}).fetchone()
        assert row
        (real, real_booked, real_matched, vouchers_booked, real_fees_ok, real_fees, booked_events,
         floor, floor_fees_ok, floor_fees, real_seq, floor_seq) = (int(v or 0) for v in row)
        overlaps = {
            side: int((conn.execute(OVERLAPS.format(table=table)).fetchone() or [-1])[0])
            for side, table in ((REAL, "public.voucher_bookings"), (FLOOR, "bench.voucher_bookings"))
        }
    problems: list[str] = []
    want = {REAL: committed[REAL], FLOOR: committed[FLOOR]}

    def expect(label: str, got: int, wanted: int) -> None:
        if got != wanted:
            problems.append(f"{label} {got} <> {wanted}")

    expect("book_voucher: bookings vs processed transactions", real, want[REAL])
    expect("book_voucher: booked bookings", real_booked, real)
    expect("book_voucher: bookings whose voucher is booked by their holder", real_matched, real)
    expect("book_voucher: vouchers booked", vouchers_booked, real)
    expect(f"book_voucher: fee events of {FEE_CENTS} cents on a booking", real_fees_ok, real)
    expect("book_voucher: fee events", real_fees, real)
    expect("book_voucher: voucher.booked events", booked_events, real)
    expect("floor: bookings vs processed transactions", floor, want[FLOOR])
    expect(f"floor: fee rows of {FEE_CENTS} cents on a booking", floor_fees_ok, floor)
    expect("floor: fee rows", floor_fees, floor)
    for side, count in overlaps.items():
        expect(f"{side}: overlapping booked slots of one issuer", count, 0)
    # A run that ends (-T) rolls back the transactions its clients are in: their voucher
    # numbers are spent, at most one per client and run.
    for side, seq, done in ((REAL, real_seq, real), (FLOOR, floor_seq, floor)):
        bound = runs_per_side[side] * max_clients
        if not 0 <= seq - done <= bound:
            problems.append(
                f"{side}: {seq} voucher numbers taken for {done} bookings (at most {bound} abandoned)"
            )
    text = (
        f"book_voucher {real} bookings = {want[REAL]} processed transactions, {real_fees} fee events, "
        f"{booked_events} voucher.booked events, {vouchers_booked} vouchers booked; floor {floor} bookings = "
        f"{want[FLOOR]} processed, {floor_fees} fee rows; overlapping booked slots per issuer: "
        f"{overlaps[REAL]} / {overlaps[FLOOR]}; voucher numbers abandoned at run ends: "
        f"{real_seq - real} / {floor_seq - floor}"
    )
    if problems:
        return False, "; ".join(problems) + " -- " + text
    return True, text


BENCHMARK = harness.Benchmark(
    name="marketplace",
    title="book_voucher vs bare-SQL floor (two inserts: exclusion-constrained booking + fee row)",
    setup=setup,
    scenarios=scenarios,
    check=check,
    probe=probe,
    add_arguments=add_arguments,
    target_ratio=TARGET,
    doc=__doc__ or "",
)


def cpu_report(json_mode: bool) -> None:
    """After the report: the server CPU per transaction of each side (a side figure)."""
    if not cpu_runs:
        return
    lines = [
        "",
        "server CPU per transaction (side figure: the CPU of the run's backends, from the "
        "postmaster's reaped-children times, median over the runs alone, warm-ups included; other "
        "work on the machine moves it far less than tps; an autovacuum worker that ends during a "
        "run is counted in it):",
        f"{'clients':>7} {FLOOR + ' us/txn':>13} {REAL + ' us/txn':>20} {'cpu ratio':>10}  runs",
    ]
    for clients in sorted({c for c, _ in cpu_runs}):
        runs = {side: cpu_runs.get((clients, side), []) for side in (FLOOR, REAL)}
        per = {side: statistics.median(v) if v else 0.0 for side, v in runs.items()}
        ratio = per[FLOOR] / per[REAL] if per[REAL] else 0.0
        lines.append(
            f"{clients:>7} {per[FLOOR]:>13.0f} {per[REAL]:>20.0f} {ratio:>10.3f}  "
            + "; ".join(f"{side} " + " ".join(f"{v:.0f}" for v in values) for side, values in runs.items())
        )
    lines.append(f"cpu ratio = {FLOOR} CPU / {REAL} CPU per transaction: the tps ratio a CPU-bound "
                 "machine would show.")
    text = "\n".join(lines)
    if json_mode:
        harness.log(text)
    else:
        print(text)


if __name__ == "__main__":
    status = harness.main(BENCHMARK, sys.argv[1:])
    cpu_report("--json" in sys.argv[1:])
    raise SystemExit(status)
