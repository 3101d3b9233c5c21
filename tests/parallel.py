"""Plumbing shared by the concurrency tests of the newer modules (usage, coaching,
analytics): a fresh user, one RPC as PostgREST runs it, and threads that start together.

SEED is the random seed of a run: failure messages carry it; rerun a failing case with
PAYCORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

BARRIER_TIMEOUT = 60
SEED = int(os.environ.get("PAYCORE_TEST_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)

MODES = ("owner", "service_role", "authenticated")
TRUSTED_MODES = ("owner", "service_role")


def create_user(conn: psycopg.Connection, prefix: str) -> uuid.UUID:
    return conn.execute(
        "insert into auth.users (id, email) values (gen_random_uuid(), %s) returning id",
        (f"{prefix}-{uuid.uuid4().hex[:12]}@example.test",),
    ).fetchone()[0]


def call(conn: psycopg.Connection, mode: str, user: uuid.UUID | None, sql: str, params: tuple, *,
         rollback: bool = False) -> tuple:
    """One RPC, in one transaction, as the owner (the connection's user, trusted like
    service_role) or as PostgREST runs it for service_role or for the signed-in user (set local
    role, request.jwt.claims); returns its row. With rollback, the transaction is rolled back
    after the call (a request that failed later, or a client that gave up)."""
    with conn.transaction():
        if mode != "owner":
            claims = {"sub": str(user), "role": mode} if mode == "authenticated" else {"role": mode}
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            conn.execute(f"set local role {mode}")
        row = conn.execute(sql, params).fetchone()
        if rollback:
            raise psycopg.Rollback()
    return row


def run_parallel(db: str, n: int, body: Callable[[int, psycopg.Connection], Any], *,
                 setup: Callable[[int, psycopg.Connection], None] | None = None,
                 name: str = "worker") -> list[Any]:
    """Runs body(i, conn) in n threads, each on its own autocommit connection, released
    together by a barrier once every connection is open and set up; returns what each body
    returned. A thread that raises fails the test."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[str] = []
    lock = threading.Lock()

    def target(i: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                if setup is not None:
                    setup(i, conn)
                barrier.wait(timeout=BARRIER_TIMEOUT)
                results[i] = body(i, conn)
        except BaseException as exc:  # noqa: BLE001 - a dead thread must fail the test
            barrier.abort()
            with lock:
                errors.append(f"thread {i}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    threads = [threading.Thread(target=target, args=(i,), name=f"{name}-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), f"seed {SEED}: thread {t.name} hangs"
    assert not errors, f"seed {SEED}: {len(errors)} threads failed:\n" + "\n".join(errors[:5])
    return results
