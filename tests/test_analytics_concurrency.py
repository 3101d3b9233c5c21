"""Nudges under real concurrency: the same nudge key for one user, recorded by many sessions
at the same instant, is recorded once; every session learns whether it was the one."""

from __future__ import annotations

import uuid

import parallel
import psycopg

THREADS = 16
RECORD_SQL = "select public.record_nudge(%s::uuid, 'cv', %s::text, %s::text, '{}'::jsonb)"


def test_one_nudge_key_recorded_at_once_by_many_sessions_is_recorded_once(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        user = parallel.create_user(conn, "nudge")
    key = f"cv.upsell.{uuid.uuid4().hex[:8]}"

    # As PostgREST calls it with the secret key, 16 sessions at once.
    results = parallel.run_parallel(
        db, THREADS,
        lambda i, conn: parallel.call(conn, "service_role", None, RECORD_SQL, (user, key, f"channel_{i}"))[0],
        name="nudge",
    )

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
