"""Nudges under real concurrency: the same nudge key for one user, recorded by many sessions
at the same instant, is recorded once; every session learns whether it was the one."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg

THREADS = 16
BARRIER_TIMEOUT = 60
CLAIMS = '{"role": "service_role"}'
RECORD_SQL = "select public.record_nudge(%s::uuid, 'cv', %s::text, %s::text, '{}'::jsonb)"


def record_in_parallel(db: str, user: uuid.UUID, key: str) -> list[dict[str, Any]]:
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def worker(i: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                barrier.wait(BARRIER_TIMEOUT)
                with conn.transaction():
                    # As PostgREST calls it with the secret key.
                    conn.execute("select set_config('request.jwt.claims', %s, true)", (CLAIMS,))
                    conn.execute("set local role service_role")
                    results[i] = conn.execute(RECORD_SQL, (user, key, f"channel_{i}")).fetchone()[0]
        except Exception as exc:  # reported below, with the thread's number
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
    assert not errors, errors
    return results


def test_one_nudge_key_recorded_at_once_by_many_sessions_is_recorded_once(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        user = conn.execute(
            "insert into auth.users (id, email) values (gen_random_uuid(), %s) returning id",
            (f"nudge-{uuid.uuid4().hex[:12]}@example.test",),
        ).fetchone()[0]
    key = f"cv.upsell.{uuid.uuid4().hex[:8]}"

    results = record_in_parallel(db, user, key)

    winners = [r for r in results if r["recorded"]]
    assert len(winners) == 1, results
    (winner,) = winners
    # Every session got the same nudge back: the one that was recorded, with its channel.
    assert {r["id"] for r in results} == {winner["id"]}, results
    assert {r["channel"] for r in results} == {winner["channel"]}, results
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            "select id, channel from public.nudges_sent where user_id = %s and nudge_key = %s", (user, key),
        ).fetchall()
        events = conn.execute(
            "select subject_id from public.events where type = 'nudge.sent' and actor_id = %s", (user,),
        ).fetchall()
    assert rows == [(uuid.UUID(winner["id"]), winner["channel"])], rows
    assert events == [(winner["id"],)], events
