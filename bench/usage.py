#!/usr/bin/env python3
"""Throughput of public.check_usage_limit and public.get_user_app_tier against bare-SQL floors.

One database: N users (``--users``, default 1000), every 2nd one with an active premium
subscription to app ``cv`` and some with canceled, past_due or other apps' rows, so that the
tier lookup does real work; a feature ``bench_uses`` of app cv whose monthly limit (hard,
2,000,000,000 for free and premium) is checked on every call and never refuses; one counter
row per user for the current month (and a year of history rows of other features).

The floors, run the same way (one function call per transaction, same user lookup):

- ``bench.floor_use(user, n)``: the one statement any usage check must run, an upsert of
  the user's counter row in the real ``public.user_usage_limits`` (same constraints,
  trigger and indexes) with the guard ``where used + n <= limit``, for the calendar month
  (UTC) computed as check_usage_limit computes it;
- ``bench.floor_tier(user, app)``: one indexed select of the user's active subscription to
  the app in ``public.user_subscriptions``, coalesced to 'free'.

Scenarios ``use-spread`` / ``tier-spread`` (a random user of N) and ``use-hot`` /
``tier-hot`` (always user 1) at each client count, as the database owner (trusted, like
service_role); ``use-auth`` / ``tier-auth`` (information) at the highest client count, as
PostgREST calls a function for a signed-in user: ``begin``, the JWT claims and the role
``authenticated`` set for the transaction, the call, ``commit``, on both sides.

The headline comes from separate pgbench runs (bench/harness.py): per scenario 4+ rounds,
each round the floor and the function alone, order alternated, ratio = function tps /
floor tps of the round, median over the rounds; target >= 0.7 in every row but the
information ones. At the end: every bench_uses counter is within 0..limit, and their sum
equals the upserts the server counted (pg_stat_user_tables). A report, not a test: it exits
0 whatever the figures.

    .venv/bin/python bench/usage.py                          # throwaway cluster, defaults (~12 min)
    .venv/bin/python bench/usage.py --seconds 3 --json       # JSON on stdout
    PAYCORE_TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/usage.py   # existing server
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FLOOR = "floor"
FUNCTION = "function"  # check_usage_limit or get_user_app_tier: the scenario's name says which
APP = "cv"
FEATURE = "bench_uses"
LIMIT = 2_000_000_000  # hard, never reached: the guard is evaluated on every call, never refuses
HISTORY_MONTHS = 12

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

-- Subscriptions, so that the tier lookup has rows to read and judge. cv: every odd user an
-- active premium one (user 1, the hot user, pays); every 4th an old canceled one (no longer
-- entitles). Other apps: every 3rd user active in letters, every 10th past_due beyond the
-- grace period in rise.
insert into public.user_subscriptions
    (user_id, app_id, tier_id, status, current_period_start, current_period_end,
     cancel_at_period_end, canceled_at, activated_at)
select u.id, s.app_id, 'premium', s.status, s.period_start, s.period_start + interval '30 days',
    s.status = 'canceled', case when s.status = 'canceled' then s.period_start end,
    s.period_start - interval '1 year'
from bench.users as u
cross join lateral (
    select 'cv' as app_id, 'active' as status, paycore.clock() - interval '10 days' as period_start
    where u.n %% 2 = 1
    union all
    select 'cv', 'canceled', paycore.clock() - interval '100 days' where u.n %% 4 = 0
    union all
    select 'letters', 'active', paycore.clock() - interval '5 days' where u.n %% 3 = 0
    union all
    select 'rise', 'past_due', paycore.clock() - interval '20 days' where u.n %% 10 = 5
) as s;

-- The feature the runs use: checked against a hard limit on every call, never refused.
insert into public.features (id, app_id, description) values ('%(feature)s', '%(app)s', 'bench: uses');
insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit, is_soft)
values ('%(app)s', 'free', '%(feature)s', %(limit)s, false),
       ('%(app)s', 'premium', '%(feature)s', %(limit)s, false);

-- The counters: a year of history of two real features, then this month's bench_uses row of
-- every user (used 0), so that every run updates (as in steady state) and none races to
-- insert a user's first row.
insert into public.user_usage_limits (user_id, app_id, feature_id, period_start, period_end, used)
select u.id, '%(app)s', f.id, m.start at time zone 'UTC', (m.start + interval '1 month') at time zone 'UTC',
    (u.n + m.k) %% 4
from bench.users as u
cross join (values ('cv_generations'), ('cv_exports')) as f (id)
cross join lateral (
    select k, date_trunc('month', paycore.clock() at time zone 'UTC') - k * interval '1 month' as start
    from generate_series(1, %(history)s) as k
) as m;
insert into public.user_usage_limits (user_id, app_id, feature_id, period_start, period_end, used)
select u.id, '%(app)s', '%(feature)s',
    date_trunc('month', paycore.clock() at time zone 'UTC') at time zone 'UTC',
    (date_trunc('month', paycore.clock() at time zone 'UTC') + interval '1 month') at time zone 'UTC',
    0
from bench.users as u;

-- Rows inserted here: the check subtracts them from the inserts the server counts.
create table bench.meta (seeded_usage_rows bigint not null);
insert into bench.meta select count(*) from public.user_usage_limits;

-- Who may read bench.users: the authenticated scenarios look the user up too.
grant usage on schema bench to authenticated;
grant select on bench.users to authenticated;
"""

# The floors. plpgsql like the functions measured, so that entering a function and the plan
# cache of the statement inside are in the floor too; SECURITY DEFINER only in the variants
# for the authenticated scenarios (a signed-in user may not write user_usage_limits, and would
# read user_subscriptions through RLS), without a set clause.
FLOOR_SQL = """
create function bench.floor_use{suffix}(p_user_id uuid, p_n integer)
returns bigint
language plpgsql volatile{definer}
as $$
declare
    v_month timestamp := date_trunc('month', now() at time zone 'UTC');
    v_used bigint;
begin
    insert into public.user_usage_limits as u (user_id, app_id, feature_id, period_start, period_end, used)
    values (p_user_id, '{app}', '{feature}', v_month at time zone 'UTC',
        (v_month + interval '1 month') at time zone 'UTC', p_n)
    on conflict (user_id, feature_id, period_start) do update
    set used = u.used + excluded.used
    where u.used + excluded.used <= {limit}
    returning u.used into v_used;
    return v_used;
end;
$$;

create function bench.floor_tier{suffix}(p_user_id uuid, p_app_id text)
returns text
language plpgsql stable{definer}
as $$
begin
    return coalesce((
        select s.tier_id
        from public.user_subscriptions as s
        where s.user_id = p_user_id and s.app_id = p_app_id
            and s.status = 'active' and s.current_period_end > now()
        order by s.current_period_end desc
        limit 1
    ), 'free');
end;
$$;
"""

# Every script looks the user up the same way, so the floor pays for the lookup too.
LOOKUP = "(select id from bench.users where n = :u)"
# PostgREST's prologue for a signed-in user's call: claims and role for the transaction only.
AUTH_BEGIN = (
    "begin;\n"
    "select set_config('request.jwt.claims', json_build_object('sub', id, 'role', 'authenticated')::text, "
    "true), set_config('role', 'authenticated', true) from bench.users where n = :u;\n"
)
AUTH_END = "commit;\n"

# A pgbench run that ends (-T) abandons the transactions its clients are in the middle of:
# with begin ... commit, an upsert already counted by the server is rolled back. At most one
# per client and run; scenarios() sets the bound for the check.
abandonable_upserts = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="users (default 1000)")
    parser.add_argument(
        "--no-auth", action="store_true",
        help="skip the authenticated (PostgREST-style) information scenarios",
    )


def setup(conninfo: str, database: str, args: argparse.Namespace) -> dict[str, Any]:
    users = int(args.users)
    if users < 1:
        raise SystemExit("--users must be at least 1")
    params = {"users": users, "app": APP, "feature": FEATURE, "limit": LIMIT, "history": HISTORY_MONTHS}
    floors = {"app": APP, "feature": FEATURE, "limit": LIMIT}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute((SETUP_SQL % params).encode())
            conn.execute(FLOOR_SQL.format(suffix="", definer="", **floors).encode())
            conn.execute(FLOOR_SQL.format(suffix="_definer", definer=" security definer", **floors).encode())
            conn.execute(
                "grant execute on function bench.floor_use_definer(uuid, integer), "
                "bench.floor_tier_definer(uuid, text) to authenticated"
            )
        t = time.monotonic()
        conn.execute("vacuum analyze")
        facts: dict[str, Any] = {"users": users, "vacuum_s": round(time.monotonic() - t, 1)}
        row = conn.execute(
            """
            select
                (select count(*) from public.user_subscriptions),
                (select count(*) from public.user_subscriptions where app_id = %s),
                (select count(*) from public.user_usage_limits)
            """,
            (APP,),
        ).fetchone()
        if row:
            facts["subscriptions"] = int(row[0])
            facts[f"{APP}_subscriptions"] = int(row[1])
            facts["usage_rows"] = int(row[2])
        # Both sides answer alike before anything is timed: user 1 pays, user 2 does not.
        if users >= 2:
            row = conn.execute(
                "select public.get_user_app_tier(u.id, %(app)s), bench.floor_tier(u.id, %(app)s) "
                "from bench.users as u where u.n in (1, 2) order by u.n",
                {"app": APP},
            ).fetchall()
            if [tuple(r) for r in row] != [("premium", "premium"), ("free", "free")]:
                raise SystemExit(f"unexpected tiers of users 1 and 2 (function, floor): {row}")
    return facts


def scenarios(args: argparse.Namespace) -> list[harness.Scenario]:
    users = int(args.users)
    spread, hot = f"\\set u random(1, {users})\n", "\\set u 1\n"
    use = {
        FLOOR: f"select bench.floor_use{{s}}({LOOKUP}, 1);\n",
        FUNCTION: f"select public.check_usage_limit({LOOKUP}, '{FEATURE}', 1);\n",
    }
    tier = {
        FLOOR: f"select bench.floor_tier{{s}}({LOOKUP}, '{APP}');\n",
        FUNCTION: f"select public.get_user_app_tier({LOOKUP}, '{APP}');\n",
    }

    def scripts(pick: str, calls: dict[str, str], auth: bool = False) -> dict[str, str]:
        suffix = "_definer" if auth else ""
        return {
            variant: pick + (AUTH_BEGIN if auth else "") + call.format(s=suffix) + (AUTH_END if auth else "")
            for variant, call in calls.items()
        }

    result: list[harness.Scenario] = []
    kinds = [
        ("use-spread", spread, use, "check_usage_limit, random user of N, +1"),
        ("use-hot", hot, use, "check_usage_limit, every client on user 1's counter, +1"),
        ("tier-spread", spread, tier, "get_user_app_tier, random user of N"),
        ("tier-hot", hot, tier, "get_user_app_tier, always user 1"),
    ]
    for name, pick, calls, description in kinds:
        for clients in args.client_counts:
            result.append(harness.Scenario(name, clients, scripts(pick, calls), description=description))
    global abandonable_upserts
    abandonable_upserts = 0
    if not args.no_auth:
        clients = max(args.client_counts)
        runs = 2 * (args.rounds + (1 if args.warmup_seconds else 0)) + min(args.mixed_rounds, args.rounds)
        abandonable_upserts = runs * clients  # use-auth: both sides write
        auth = "as authenticated (begin, JWT claims and role set local, call, commit)"
        result += [
            harness.Scenario(
                "use-auth", clients, scripts(spread, use, auth=True), info=True,
                description=f"check_usage_limit, random user of N, +1, {auth}",
            ),
            harness.Scenario(
                "tier-auth", clients, scripts(spread, tier, auth=True), info=True,
                description=f"get_user_app_tier, random user of N, {auth}",
            ),
        ]
    return result


def probe(conninfo: str) -> dict[str, Any]:
    """The bench_uses counters at the start of a scenario (the use scenarios add to them)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "select count(*), coalesce(sum(used), 0) from public.user_usage_limits where feature_id = %s",
            (FEATURE,),
        ).fetchone()
        return {"counters": int(row[0]), "used": int(row[1])} if row else {}


def check(conninfo: str) -> tuple[bool, str]:
    """Every bench_uses counter within 0..limit, and their sum = the upserts the server counted.

    Every committed upsert of a run, by either side, adds 1 to one counter and is counted by
    the server as one update (or one insert, for a month's first row); setup's inserts added 0.
    The server also counts the upserts of transactions rolled back, which only the end of a
    run of the begin ... commit scripts makes (``abandonable_upserts`` at most). The statistics
    of a pgbench connection reach the server when it exits, just after pgbench does: wait for
    them a few seconds.
    """
    query = """
        select
            count(*) filter (where c.used < 0 or c.used > l.monthly_limit),
            count(*),
            coalesce(sum(c.used), 0),
            (select n_tup_upd + n_tup_ins - (select seeded_usage_rows from bench.meta)
             from pg_catalog.pg_stat_user_tables
             where relid = 'public.user_usage_limits'::regclass)
        from public.user_usage_limits as c
        join public.tier_limits as l
            on l.app_id = c.app_id and l.feature_id = c.feature_id and l.tier_id = 'free'
        where c.feature_id = %s
    """
    bound = abandonable_upserts
    deadline = time.monotonic() + 10
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            conn.execute("select pg_catalog.pg_stat_clear_snapshot()")
            row = conn.execute(query, (FEATURE,)).fetchone()
            assert row
            over, rows, used, upserts = (int(v) if v is not None else -1 for v in row)
            if 0 <= upserts - used <= bound or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    rolled_back = upserts - used
    problems = []
    if over:
        problems.append(f"{over} of {rows} counters outside 0..{LIMIT}")
    if not 0 <= rolled_back <= bound:
        problems.append(
            f"sum(used) {used} against {upserts} upserts counted by the server "
            f"(rolled back at the end of a run: at most {bound})"
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{rows} {FEATURE} counters within 0..{LIMIT}; sum(used) {used} = {upserts} upserts counted "
        f"by the server - {rolled_back} rolled back at the end of a run (at most {bound})"
    )


BENCHMARK = harness.Benchmark(
    name="usage",
    title="check_usage_limit and get_user_app_tier vs bare-SQL floors",
    setup=setup,
    scenarios=scenarios,
    check=check,
    probe=probe,
    add_arguments=add_arguments,
    doc=__doc__ or "",
)


if __name__ == "__main__":
    raise SystemExit(harness.main(BENCHMARK, sys.argv[1:]))
