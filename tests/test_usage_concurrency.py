"""Monthly usage limits under real concurrency.

Threads, one autocommit connection each, start their calls of check_usage_limit and
release_usage together (a barrier) against one user and a fresh feature of app cv with a
free-tier limit, as the database owner (trusted like service_role), as service_role and as
the user itself the way PostgREST runs an RPC (set local role, request.jwt.claims). Every
returned result is checked, and the counters in user_usage_limits at the end.

Each connection sets paycore.now for itself (a session setting, gone with the connection),
so the tests do not depend on the real date. The random seed is printed and included in
every failure message; rerun a failing case with PAYCORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import parallel
import psycopg
import pytest

CLOCK = "2031-03-15 12:00:00+00"  # paycore.now of every call that is not about the month boundary
CLOCK_MONTH = (datetime(2031, 3, 1, tzinfo=UTC), datetime(2031, 4, 1, tzinfo=UTC))

USE_SQL = "select public.check_usage_limit(%s::uuid, %s::text, %s::integer, %s::text)"
RELEASE_SQL = "select public.release_usage(%s::uuid, %s::text, %s::integer, %s::text)"

MODES = parallel.MODES
TRUSTED_MODES = parallel.TRUSTED_MODES
SEED = parallel.SEED


# -- plumbing ---------------------------------------------------------------------------------


def create_user(conn: psycopg.Connection) -> uuid.UUID:
    return parallel.create_user(conn, "usage")


def create_feature(conn: psycopg.Connection, limit: int | None, *, soft: bool = False) -> str:
    """A new feature of app cv whose free tier allows `limit` uses a month (None: unlimited)."""
    feature = f"conc_{uuid.uuid4().hex[:16]}"
    conn.execute("insert into public.features (id, app_id) values (%s, 'cv')", (feature,))
    conn.execute(
        "insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit, is_soft)"
        " values ('cv', 'free', %s, %s, %s)", (feature, limit, soft),
    )
    return feature


def set_clock(conn: psycopg.Connection, clock: str = CLOCK) -> None:
    """paycore.now for the rest of this connection's session (not the database's setting)."""
    conn.execute("select set_config('paycore.now', %s, false)", (clock,))


def call(conn: psycopg.Connection, mode: str, user: uuid.UUID, sql: str, params: tuple) -> dict:
    """One RPC (parallel.call); its one column, the JSON result."""
    return parallel.call(conn, mode, user, sql, params)[0]


def use(conn: psycopg.Connection, mode: str, user: uuid.UUID, feature: str, amount: int = 1,
        key: str | None = None, *, pass_user: bool = True) -> dict:
    """check_usage_limit; the user itself may pass null as p_user_id (pass_user False)."""
    return call(conn, mode, user, USE_SQL, (user if pass_user else None, feature, amount, key))


def release(conn: psycopg.Connection, mode: str, user: uuid.UUID, feature: str, amount: int,
            key: str | None = None) -> dict:
    return call(conn, mode, user, RELEASE_SQL, (user, feature, amount, key))


def run_parallel(db: str, n: int, body: Callable[[int, psycopg.Connection], Any],
                 setup: Callable[[int, psycopg.Connection], None] | None = None) -> list[Any]:
    """parallel.run_parallel, every connection's clock set first (set_clock), then setup."""
    def prepare(i: int, conn: psycopg.Connection) -> None:
        set_clock(conn)
        if setup is not None:
            setup(i, conn)

    return parallel.run_parallel(db, n, body, setup=prepare, name="usage")


def usage_rows(conn: psycopg.Connection, user: uuid.UUID, feature: str) -> list[tuple]:
    return conn.execute(
        "select period_start, period_end, used from public.user_usage_limits"
        " where user_id = %s and feature_id = %s order by period_start", (user, feature),
    ).fetchall()


def events(conn: psycopg.Connection, type_: str, user: uuid.UUID, feature: str) -> list[dict]:
    return [r[0] for r in conn.execute(
        "select meta from public.events where type = %s and actor_id = %s and subject_id = %s",
        (type_, user, feature),
    ).fetchall()]


def period(result: dict) -> tuple[datetime, datetime]:
    """The result's period as aware datetimes (jsonb renders them in the session's TimeZone)."""
    return datetime.fromisoformat(result["period_start"]), datetime.fromisoformat(result["period_end"])


def check_shape(result: dict, feature: str, limit: int | None, soft: bool = False) -> list[str]:
    """What every result of one user's free-tier feature says, whatever the interleaving."""
    problems = []
    expected = {"limit": limit, "is_soft": soft, "tier": "free", "app_id": "cv", "feature": feature}
    got = {k: result.get(k) for k in expected}
    if got != expected:
        problems.append(f"result {result} does not describe {expected}")
    used = result["used"]
    if not isinstance(used, int) or used < 0:
        problems.append(f"result {result} reports used {used!r}")
    elif limit is None:
        if result["remaining"] is not None or result["overage"] != 0:
            problems.append(f"result {result} of an unlimited feature: remaining/overage")
    else:
        if result["remaining"] != max(limit - used, 0) or result["overage"] != max(used - limit, 0):
            problems.append(f"result {result}: remaining/overage do not follow from used and limit")
        if not soft and used > limit:
            problems.append(f"result {result} reports used above the hard limit {limit}")
    return problems


# -- one use each, many at once -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_parallel_single_uses_stop_exactly_at_a_hard_limit(db: str, mode: str) -> None:
    """32 sessions each use a feature once at the same instant, hard limit 20: exactly 20 are
    allowed, reporting used 1..20 each once; 12 are refused at used 20; the counter says 20."""
    threads, limit = 32, 20
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)

    results = run_parallel(
        db, threads,
        # The user itself passes its own id or null, alternately.
        lambda i, conn: use(conn, mode, user, feature, pass_user=mode != "authenticated" or i % 2 == 0),
    )

    problems = [p for r in results for p in check_shape(r, feature, limit)]
    allowed = [r for r in results if r["allowed"] is True]
    refused = [r for r in results if r["allowed"] is False]
    counts = Counter(r["allowed"] for r in results)
    assert (len(allowed), len(refused)) == (limit, threads - limit), (mode, counts)
    assert sorted(r["used"] for r in allowed) == list(range(1, limit + 1)), sorted(r["used"] for r in allowed)
    assert [r for r in refused if r["used"] != limit or r["remaining"] != 0] == []
    assert {period(r) for r in results} == {CLOCK_MONTH}
    assert problems == [], problems[:10]
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*CLOCK_MONTH, limit)]
        # The refusals of a month log usage.limit_reached once, whoever refused first.
        reached = events(conn, "usage.limit_reached", user, feature)
    assert len(reached) == 1 and reached[0]["used"] == limit and reached[0]["limit"] == limit, reached


@pytest.mark.parametrize(("limit", "soft"), [(10, True), (None, False)], ids=["soft", "unlimited"])
def test_parallel_single_uses_beyond_a_soft_or_no_limit_are_recorded(db: str, limit: int | None,
                                                                      soft: bool) -> None:
    """32 sessions use a feature with a soft limit of 10 (or none) at once: all allowed, used
    1..32 each once; with the soft limit, overage beyond 10 and one usage.soft_limit_exceeded
    event (from the use that reached 11); never a usage.limit_reached event."""
    threads = 32
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit, soft=soft)

    results = run_parallel(db, threads, lambda i, conn: use(conn, MODES[i % 3], user, feature))

    problems = [p for r in results for p in check_shape(r, feature, limit, soft=soft)]
    assert problems == [], problems[:10]
    assert all(r["allowed"] is True for r in results), [r for r in results if not r["allowed"]]
    assert sorted(r["used"] for r in results) == list(range(1, threads + 1))
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*CLOCK_MONTH, threads)]
        exceeded = events(conn, "usage.soft_limit_exceeded", user, feature)
        reached = events(conn, "usage.limit_reached", user, feature)
    if soft:
        assert len(exceeded) == 1 and exceeded[0]["used"] == limit + 1, exceeded
    else:
        assert exceeded == []
    assert reached == []


# -- random amounts ---------------------------------------------------------------------------


def test_parallel_random_amounts_never_exceed_a_hard_limit(db: str) -> None:
    """16 sessions (owner, service_role and the user itself) each use 1..5 at a time until they
    have been refused 4 times, hard limit 50. The allowed uses form one chain of counter values
    from 0 to the final counter, which is their sum and at most 50; a refusal reports a counter
    that the refused amount would have taken beyond 50."""
    print(f"usage concurrency seed: {SEED} (rerun with PAYCORE_TEST_SEED={SEED})")
    threads, limit, refusals, max_calls = 16, 50, 4, 300
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)

    def body(i: int, conn: psycopg.Connection) -> list[tuple[int, dict]]:
        rng = random.Random(SEED * 1000 + i)
        mode = MODES[i % 3]
        calls: list[tuple[int, dict]] = []
        refused = 0
        while refused < refusals and len(calls) < max_calls:
            amount = rng.randint(1, 5)
            result = use(conn, mode, user, feature, amount)
            calls.append((amount, result))
            refused += result["allowed"] is False
        return calls

    calls = [c for thread_calls in run_parallel(db, threads, body) for c in thread_calls]
    with psycopg.connect(db, autocommit=True) as conn:
        rows = usage_rows(conn, user, feature)
    assert len(rows) == 1, rows
    final = rows[0][2]

    problems = [f"seed {SEED}: {p}" for _, r in calls for p in check_shape(r, feature, limit)]
    allowed = [(a, r["used"]) for a, r in calls if r["allowed"] is True]
    refused = [(a, r["used"]) for a, r in calls if r["allowed"] is False]
    if len(allowed) + len(refused) != len(calls):
        problems.append("a result's allowed is neither true nor false")
    if final > limit or final != sum(a for a, _ in allowed):
        problems.append(f"final used {final}, limit {limit}, allowed amounts {sum(a for a, _ in allowed)}")
    # The row lock serialises the uses: each allowed one moved the counter from used - amount
    # to used, so the values are distinct and chain from 0 to the final counter.
    afters = [u for _, u in allowed]
    if len(set(afters)) != len(afters):
        problems.append(f"allowed uses report a counter value twice: {sorted(afters)}")
    if Counter([u - a for a, u in allowed] + [final]) != Counter(afters + [0]):
        problems.append(f"allowed uses do not form one chain: {sorted(allowed, key=lambda x: x[1])}")
    # Nothing lowers the counter here: a refusal saw (and reports) a counter too high for it.
    bad = [(a, u) for a, u in refused if not (limit - a < u <= final)]
    if bad:
        problems.append(f"refused (amount, used) with room left or beyond the final counter: {bad[:10]}")
    if refused and final + min(a for a, _ in refused) <= limit:
        problems.append(f"final used {final}, yet an amount of {min(a for a, _ in refused)} was refused")
    if len(refused) < threads * refusals or len({a for a, _ in allowed}) < 3:
        problems.append(f"the run did not exercise enough: {len(allowed)} allowed, {len(refused)} refused")
    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:20])


# -- the month boundary ---------------------------------------------------------------------------

BEFORE = "2027-01-31 23:59:59.999+00"
AFTER = "2027-02-01 00:00:00+00"
JANUARY = (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
FEBRUARY = (datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))
TIMEZONES = ("UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Asia/Kolkata")


def test_parallel_uses_straddling_a_month_boundary_count_in_their_own_month(db: str) -> None:
    """16 sessions whose clock is 1 ms before 1 February 2027 and 16 at midnight use a feature
    (hard limit 10) at the same instant, in sessions of various TimeZones: each month's row
    counts its own 10 allowed uses, each result names its own (UTC) month."""
    threads, limit = 32, 10
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)

    def setup(i: int, conn: psycopg.Connection) -> None:
        set_clock(conn, BEFORE if i % 2 == 0 else AFTER)
        conn.execute("select set_config('TimeZone', %s, false)", (TIMEZONES[i // 2 % len(TIMEZONES)],))

    results = run_parallel(db, threads, lambda i, conn: use(conn, MODES[i % 3], user, feature), setup)

    problems = [p for r in results for p in check_shape(r, feature, limit)]
    for side, month in ((0, JANUARY), (1, FEBRUARY)):
        mine = [r for i, r in enumerate(results) if i % 2 == side]
        wrong = [r for r in mine if period(r) != month]
        if wrong:
            problems.append(f"{len(wrong)} calls at {month[0]:%B} report another period, e.g. {wrong[0]}")
        used = sorted(r["used"] for r in mine if r["allowed"] is True)
        if used != list(range(1, limit + 1)):
            problems.append(f"{month[0]:%B}: allowed uses report used {used}")
        if any(r["used"] != limit for r in mine if r["allowed"] is False):
            problems.append(f"{month[0]:%B}: a refusal reports used other than {limit}")
    assert not problems, "\n".join(problems[:20])
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*JANUARY, limit), (*FEBRUARY, limit)]
        reached = events(conn, "usage.limit_reached", user, feature)
    assert sorted(datetime.fromisoformat(m["period_start"]) for m in reached) == [JANUARY[0], FEBRUARY[0]]


# -- releases racing uses -------------------------------------------------------------------------


def test_parallel_releases_and_uses_keep_the_counter_exact_away_from_the_bounds(db: str) -> None:
    """16 sessions use (1..3) and release (1..4) at random, far from zero and from the limit:
    every call moved the counter by its amount, so the results chain from the initial counter
    to the final one, which is the initial counter plus uses minus releases."""
    threads, ops, initial, limit = 16, 40, 3000, 6000
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)
        set_clock(conn)
        assert use(conn, "owner", user, feature, initial)["used"] == initial

    def body(i: int, conn: psycopg.Connection) -> list[tuple[int, dict]]:
        rng = random.Random(SEED * 1000 + 100 + i)
        moves = []
        for _ in range(ops):
            if rng.random() < 0.5:
                amount = rng.randint(1, 3)
                moves.append((amount, use(conn, MODES[i % 3], user, feature, amount)))
            else:
                amount = rng.randint(1, 4)
                moves.append((-amount, release(conn, TRUSTED_MODES[i % 2], user, feature, amount)))
        return moves

    moves = [m for thread_moves in run_parallel(db, threads, body) for m in thread_moves]
    with psycopg.connect(db, autocommit=True) as conn:
        ((_, _, final),) = usage_rows(conn, user, feature)
    problems = [p for _, r in moves for p in check_shape(r, feature, limit)]
    problems += [f"refused {m}" for m in moves if m[1]["allowed"] is not True]
    if final != initial + sum(d for d, _ in moves):
        problems.append(f"final used {final}, expected {initial} + {sum(d for d, _ in moves)}")
    # before + [final] = after + [initial] as multisets: one serial chain of counter values.
    befores = Counter([r["used"] - d for d, r in moves] + [final])
    if befores != Counter([r["used"] for _, r in moves] + [initial]):
        problems.append("the results do not form one chain of counter values")
    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:20])


def test_parallel_releases_racing_uses_keep_the_counter_between_zero_and_the_limit(db: str) -> None:
    """16 sessions use (1..3) and release (1..4) at random, first mostly using (the counter hits
    the hard limit of 30), then mostly releasing (it hits zero). No result and no counter is
    ever below zero or above the limit, and the final counter is within what the allowed uses
    and the releases (each of which gives back at most its amount) can have made of it."""
    threads, ops, initial, limit = 16, 60, 5, 30
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)
        set_clock(conn)
        assert use(conn, "owner", user, feature, initial)["used"] == initial

    def body(i: int, conn: psycopg.Connection) -> list[tuple[str, int, dict]]:
        rng = random.Random(SEED * 1000 + 200 + i)
        calls = []
        for n in range(ops):
            p_use = 0.8 if n < ops // 2 else 0.2
            if rng.random() < p_use:
                amount = rng.randint(1, 3)
                calls.append(("use", amount, use(conn, MODES[i % 3], user, feature, amount)))
            else:
                amount = rng.randint(1, 4)
                calls.append(("release", amount, release(conn, TRUSTED_MODES[i % 2], user, feature, amount)))
        return calls

    calls = [c for thread_calls in run_parallel(db, threads, body) for c in thread_calls]
    with psycopg.connect(db, autocommit=True) as conn:
        rows = usage_rows(conn, user, feature)
    assert len(rows) == 1, rows
    final = rows[0][2]

    problems = [p for _, _, r in calls for p in check_shape(r, feature, limit)]
    uses = [(a, r) for k, a, r in calls if k == "use"]
    releases = [(a, r) for k, a, r in calls if k == "release"]
    allowed = [(a, r["used"]) for a, r in uses if r["allowed"] is True]
    problems += [f"allowed use of {a} reports used {u}" for a, u in allowed if u < a]
    problems += [f"release result {r} says allowed {r['allowed']}" for _, r in releases
                 if r["allowed"] is not (r["used"] < limit)]
    if not 0 <= final <= limit:
        problems.append(f"final used {final} outside 0..{limit}")
    used_total = sum(a for a, _ in allowed)
    released_max = sum(a for a, _ in releases)
    if not initial + used_total - released_max <= final <= initial + used_total:
        problems.append(f"final used {final}: initial {initial} + allowed uses {used_total}"
                        f" - releases of at most {released_max} cannot make it")
    # The run reached both bounds.
    if not any(r["allowed"] is False for _, r in uses):
        problems.append("no use was refused at the limit")
    if not any(r["used"] == 0 for _, r in releases):
        problems.append("no release reached zero")
    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:20])


# -- idempotency keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "initial", "amount"), [
    ("owner", 4, 3),
    ("service_role", 4, 3),
    ("authenticated", 4, 3),
    ("authenticated", 19, 3),  # refused: the refusal is the key's result, nothing recorded
])
def test_parallel_uses_with_one_idempotency_key_apply_once(db: str, mode: str, initial: int,
                                                           amount: int) -> None:
    """8 sessions send the same use with the same idempotency key at the same instant (hard
    limit 20): the counter moves by the amount at most once, all 8 get the first result."""
    threads, limit = 8, 20
    key = f"use-{uuid.uuid4()}"
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)
        set_clock(conn)
        use(conn, "owner", user, feature, initial)

    results = run_parallel(db, threads, lambda i, conn: use(conn, mode, user, feature, amount, key))

    fits = initial + amount <= limit
    expected_used = initial + amount if fits else initial
    assert all(r == results[0] for r in results), results
    assert (results[0]["allowed"], results[0]["used"]) == (fits, expected_used), results[0]
    assert check_shape(results[0], feature, limit) == []
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*CLOCK_MONTH, expected_used)]
        # A signed-in user's keys are stored apart from the server's (paycore:client:<key>).
        stored_key = f"paycore:client:{key}" if mode == "authenticated" else key
        stored = conn.execute(
            "select idempotency_key, operation, amount, result from paycore.usage_operations"
            " where user_id = %s", (user,),
        ).fetchall()
    assert stored == [(stored_key, "use", amount, results[0])], stored


@pytest.mark.parametrize("mode", TRUSTED_MODES)
def test_parallel_releases_with_one_idempotency_key_apply_once(db: str, mode: str) -> None:
    """8 sessions send the same release with the same idempotency key at once: the counter
    drops by the amount once (10 -> 7), all 8 get the same result."""
    threads, limit, initial, amount = 8, 20, 10, 3
    key = f"release-{uuid.uuid4()}"
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)
        set_clock(conn)
        use(conn, "owner", user, feature, initial)

    results = run_parallel(db, threads, lambda i, conn: release(conn, mode, user, feature, amount, key))

    assert all(r == results[0] for r in results), results
    assert (results[0]["used"], results[0]["allowed"]) == (initial - amount, True), results[0]
    assert check_shape(results[0], feature, limit) == []
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*CLOCK_MONTH, initial - amount)]
        stored = conn.execute(
            "select operation, amount from paycore.usage_operations"
            " where user_id = %s and idempotency_key = %s", (user, key),
        ).fetchall()
    assert stored == [("release", amount)], stored


def test_parallel_use_and_release_with_one_idempotency_key(db: str) -> None:
    """8 sessions send one key at once, 4 as a use and 4 as a release of the same amount: one
    operation wins and is applied once, its 4 calls return one result, the other 4 are PT409
    idempotency_conflict."""
    threads, limit, initial, amount = 8, 20, 10, 2
    key = f"both-{uuid.uuid4()}"
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        feature = create_feature(conn, limit)
        set_clock(conn)
        use(conn, "owner", user, feature, initial)

    def body(i: int, conn: psycopg.Connection) -> tuple[str, Any]:
        kind = "use" if i % 2 == 0 else "release"
        try:
            if kind == "use":
                return kind, use(conn, "owner", user, feature, amount, key)
            return kind, release(conn, "service_role", user, feature, amount, key)
        except psycopg.Error as exc:
            return kind, (exc.sqlstate, exc.diag.message_hint)

    results = run_parallel(db, threads, body)

    by_kind: dict[str, list] = {"use": [], "release": []}
    for kind, outcome in results:
        by_kind[kind].append(outcome)
    winners = [k for k, outs in by_kind.items() if all(isinstance(o, dict) for o in outs)]
    assert len(winners) == 1, results
    (winner,) = winners
    loser = "release" if winner == "use" else "use"
    assert by_kind[loser] == [("PT409", "idempotency_conflict")] * (threads // 2), results
    first = by_kind[winner][0]
    assert all(o == first for o in by_kind[winner]), results
    expected = initial + amount if winner == "use" else initial - amount
    assert first["used"] == expected, first
    with psycopg.connect(db, autocommit=True) as conn:
        assert usage_rows(conn, user, feature) == [(*CLOCK_MONTH, expected)]
