"""Coaching readings and partner matchings under real concurrency.

Threads, one autocommit connection each, start their calls together (a barrier): many
add_reading_version calls on one reading or on a few readings of one user, and save_matching
of A with B and of B with A at the same instant. They run as the database owner (trusted like
service_role), as service_role and as the user itself the way PostgREST runs an RPC (set local
role, request.jwt.claims, in a transaction). Every returned row is checked, and the tables at
the end: versions numbered 1..n without a gap or a duplicate, current_version = n, one
matching row per pair and type holding the result of the write that committed last.

The random seed is printed and included in every failure message; rerun a failing case with
PAYCORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import parallel
import psycopg
import pytest

SEED = parallel.SEED
MODES = parallel.MODES

CREATE_SQL = "select r.id from public.create_reading(%s::text, %s::text, '{}'::jsonb, %s::uuid) as r"
ADD_SQL = (
    "select v.reading_id, v.user_id, v.version_number, v.content"
    " from public.add_reading_version(%s::uuid, %s::text) as v"
)
GET_SQL = "select public.get_reading(%s::uuid)"
# The transaction's id (as the 32-bit xid a row's xmin shows) comes with the saved row, so the
# row left at the end can be traced to the write that committed last.
SAVE_SQL = (
    "select m.id, m.user_id_1, m.user_id_2, m.matching_type, m.result, m.created_by,"
    " txid_current() %% 4294967296"
    " from public.save_matching(%s::uuid, %s::text, %s::jsonb, '{}'::jsonb, %s::uuid) as m"
)


# -- plumbing ---------------------------------------------------------------------------------


def create_user(conn: psycopg.Connection) -> uuid.UUID:
    return parallel.create_user(conn, "coaching")


call = parallel.call


def run_parallel(db: str, n: int, body: Callable[[int, psycopg.Connection], Any]) -> list[Any]:
    return parallel.run_parallel(db, n, body, name="coaching")


def create_reading(conn: psycopg.Connection, user: uuid.UUID, content: str) -> uuid.UUID:
    return call(conn, "owner", user, CREATE_SQL, ("natal", content, user))[0]


def versions(conn: psycopg.Connection, reading: uuid.UUID) -> list[tuple[int, str, uuid.UUID]]:
    return conn.execute(
        "select version_number, content, user_id from public.reading_versions"
        " where reading_id = %s order by version_number, id", (reading,),
    ).fetchall()


def current_version(conn: psycopg.Connection, reading: uuid.UUID) -> int:
    return conn.execute(
        "select current_version from public.coach_readings where id = %s", (reading,),
    ).fetchone()[0]


def versioned_events(conn: psycopg.Connection, reading: uuid.UUID) -> list[int]:
    return sorted(r[0] for r in conn.execute(
        "select (meta->>'version_number')::integer from public.events"
        " where type = 'reading.versioned' and subject_type = 'reading' and subject_id = %s",
        (str(reading),),
    ).fetchall())


# -- add_reading_version: one reading ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["authenticated", "service_role", "mix"])
def test_parallel_versions_of_one_reading_are_numbered_without_gap(db: str, mode: str) -> None:
    """16 sessions add a version to one reading (version 1) at the same instant: they get
    versions 2..17, each once, with the content each sent; the table holds 1..17, the reading
    says current_version 17, get_reading returns the 17 versions in order."""
    threads = 16
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        other = create_user(conn)  # owns nothing here: its readings must not be touched
        first = f"version one {uuid.uuid4()}"
        reading = create_reading(conn, user, first)
        bystander = create_reading(conn, other, "someone else's reading")
    sent = [f"thread {i} of {mode} {uuid.uuid4()}" for i in range(threads)]

    def body(i: int, conn: psycopg.Connection) -> tuple:
        m = MODES[i % 3] if mode == "mix" else mode
        return call(conn, m, user, ADD_SQL, (reading, sent[i]))

    results = run_parallel(db, threads, body)

    assert all(r[0] == reading and r[1] == user for r in results), results
    numbers = sorted(r[2] for r in results)
    assert numbers == list(range(2, threads + 2)), numbers
    assert [r[3] for r in results] == sent, "a call returned content it did not send"
    by_number = {r[2]: sent[i] for i, r in enumerate(results)}
    expected = [(1, first, user)] + [(n, by_number[n], user) for n in range(2, threads + 2)]
    with psycopg.connect(db, autocommit=True) as conn:
        assert versions(conn, reading) == expected
        assert current_version(conn, reading) == threads + 1
        assert versioned_events(conn, reading) == list(range(2, threads + 2))
        assert current_version(conn, bystander) == 1 and len(versions(conn, bystander)) == 1
        got = call(conn, "service_role" if mode == "service_role" else "authenticated", user,
                   GET_SQL, (reading,))[0]
    assert (got["id"], got["user_id"], got["current_version"]) == (str(reading), str(user), threads + 1), got
    assert [(v["version_number"], v["content"]) for v in got["versions"]] == [e[:2] for e in expected]
    assert len({v["id"] for v in got["versions"]}) == threads + 1


# -- add_reading_version: several readings, many rounds ---------------------------------------


def test_parallel_versions_of_several_readings_stay_gapless_with_rollbacks(db: str) -> None:
    """32 sessions (owner, service_role and the user itself) each add 10 versions to random
    readings among 8 of one user; one call in five is rolled back after it returned (its
    number is given again). Per reading the committed calls got 2..n each once, the table
    holds 1..n with their contents, and current_version = n = 1 + committed adds."""
    print(f"coaching concurrency seed: {SEED} (rerun with PAYCORE_TEST_SEED={SEED})")
    threads, rounds, n_readings = 32, 10, 8
    with psycopg.connect(db, autocommit=True) as conn:
        user = create_user(conn)
        readings = [create_reading(conn, user, f"reading {k} v1") for k in range(n_readings)]

    def body(i: int, conn: psycopg.Connection) -> list[tuple[uuid.UUID, bool, tuple]]:
        rng = random.Random(SEED * 1000 + i)
        mode = MODES[i % 3]
        calls = []
        for n in range(rounds):
            reading = rng.choice(readings)
            rollback = rng.random() < 0.2
            content = f"t{i} n{n} {'rolled back' if rollback else 'kept'} {uuid.uuid4().hex[:8]}"
            row = call(conn, mode, user, ADD_SQL, (reading, content), rollback=rollback)
            calls.append((reading, rollback, row, content))
        return calls

    calls = [c for thread_calls in run_parallel(db, threads, body) for c in thread_calls]

    problems = [f"call to {r} returned {row} for content {c!r}" for r, _, row, c in calls
                if (row[0], row[1], row[3]) != (r, user, c)]
    kept: dict[uuid.UUID, list[tuple[int, str]]] = defaultdict(list)
    for reading, rollback, row, _ in calls:
        if not rollback:
            kept[reading].append((row[2], row[3]))
    rolled_back = sum(rb for _, rb, _, _ in calls)
    with psycopg.connect(db, autocommit=True) as conn:
        for k, reading in enumerate(readings):
            mine = sorted(kept[reading])
            n = 1 + len(mine)
            if [v for v, _ in mine] != list(range(2, n + 1)):
                problems.append(f"reading {k}: committed calls got versions {[v for v, _ in mine]}")
            stored = versions(conn, reading)
            expected = [(1, f"reading {k} v1", user)] + [(v, c, user) for v, c in mine]
            if stored != expected:
                problems.append(f"reading {k}: versions {[(v, c) for v, c, _ in stored]},"
                                f" expected {[(v, c) for v, c, _ in expected]}")
            if (cv := current_version(conn, reading)) != n:
                problems.append(f"reading {k}: current_version {cv}, expected {n}")
            if versioned_events(conn, reading) != list(range(2, n + 1)):
                problems.append(f"reading {k}: reading.versioned events {versioned_events(conn, reading)}")
    if not 0 < rolled_back < len(calls) or min(len(v) for v in kept.values()) < 5 or len(kept) < n_readings:
        problems.append(f"the run did not exercise enough: {rolled_back} rolled back,"
                        f" kept per reading {Counter({k: len(v) for k, v in kept.items()})}")
    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:20])


# -- save_matching: A with B and B with A at once ---------------------------------------------


@pytest.mark.parametrize("mode", ["authenticated", "mix"])
def test_parallel_matchings_of_a_pair_in_both_orders_make_one_row_per_type(db: str, mode: str) -> None:
    """16 sessions save the synastry of A with B (as A) and of B with A (as B) at the same
    instant, and 8 more the composite of the pair: all succeed; per type every call returns
    the same row, there is one row (user_id_1 the smaller id), and it holds the result, and
    the created_by, of the call that committed last. A call by service_role or the owner on
    behalf of a user leaves created_by null; once such a write has committed, the users' own
    saves of that matching are refused (PT403 forbidden: the service's matching), so in the
    mixed run the row left is the service's."""
    threads, synastry = 24, 16
    with psycopg.connect(db, autocommit=True) as conn:
        a, b = create_user(conn), create_user(conn)
    users = {"A": a, "B": b}

    def plan(i: int) -> tuple[str, str, str, dict]:
        by = "A" if i % 2 == 0 else "B"
        kind = "synastry" if i < synastry else "composite"
        m = MODES[i % 3] if mode == "mix" else mode
        return by, kind, m, {"by": by, "i": i, "kind": kind}

    def body(i: int, conn: psycopg.Connection) -> tuple:
        by, kind, m, result = plan(i)
        me, other = users[by], users["B" if by == "A" else "A"]
        # The user itself passes null or its own id, alternately.
        me_arg = None if m == "authenticated" and i % 4 < 2 else me
        try:
            return call(conn, m, me, SAVE_SQL, (other, kind, json.dumps(result), me_arg))
        except psycopg.Error as exc:
            if (exc.sqlstate, exc.diag.message_hint, m) == ("PT403", "forbidden", "authenticated"):
                return None  # the service's matching: checked below
            raise

    results = run_parallel(db, threads, body)
    refused = [i for i, row in enumerate(results) if row is None]
    if mode == "authenticated":
        assert refused == [], refused

    low, high = min(a, b), max(a, b)
    problems = []
    for i, row in enumerate(results):
        if row is None:
            continue
        by, kind, m, result = plan(i)
        created_by = users[by] if m == "authenticated" else None
        if row[1:6] != (low, high, kind, result, created_by):
            problems.append(f"call {i} ({by} as {m}, {kind}) returned {row[1:6]}")
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            "select id, matching_type, result, created_by, xmin::text::bigint, user_id_1, user_id_2"
            " from public.partner_matchings where (user_id_1, user_id_2) in ((%s, %s), (%s, %s))"
            " order by matching_type", (a, b, b, a),
        ).fetchall()
        saved = Counter(r[0] for r in conn.execute(
            "select subject_id from public.events where type = 'matching.saved' and actor_id in (%s, %s)",
            (a, b),
        ).fetchall())
    assert [r[1] for r in rows] == ["composite", "synastry"], rows
    assert all((r[5], r[6]) == (low, high) for r in rows), rows
    assert rows[0][0] != rows[1][0]
    for row_id, kind, result, created_by, xmin, _, _ in rows:
        mine = [(i, r) for i, r in enumerate(results) if plan(i)[1] == kind and r is not None]
        if mode == "mix" and created_by is not None:
            problems.append(f"{kind}: the service wrote it, yet a user's save is the row left")
        ids = {r[0] for _, r in mine}
        if ids != {row_id}:
            problems.append(f"{kind}: calls returned ids {ids}, the table holds {row_id}")
        # The row left is the one of the write that committed last: its transaction is the
        # row's xmin, and the result and created_by are what that call returned.
        last = [(i, r) for i, r in mine if r[6] == xmin]
        if len(last) != 1:
            problems.append(f"{kind}: the row's xmin {xmin} is the transaction of {len(last)} calls")
        elif (result, created_by) != last[0][1][4:6]:
            problems.append(f"{kind}: the row holds {(result, created_by)}, the last write was {last[0][1]}")
        if result not in [plan(i)[3] for i, _ in mine]:
            problems.append(f"{kind}: the row holds {result}, which no call sent")
        elif created_by != (users[result["by"]] if plan(result["i"])[2] == "authenticated" else None):
            problems.append(f"{kind}: the row holds {result} with created_by {created_by}")
        if saved[str(row_id)] != len(mine):
            problems.append(f"{kind}: {saved[str(row_id)]} matching.saved events for {len(mine)} calls")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
