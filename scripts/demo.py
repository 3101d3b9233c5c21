"""make demo: credits and paid generations through their lifecycle, on the project database.

Starts the project cluster and applies new migrations if needed (as ``make migrate``), creates
a user, then calls the public functions the way PostgREST does: in a transaction, ``set local
role`` plus the JWT claims in ``request.jwt.claims``. Every step prints what it called and what
came back. Run it as often as you like: each run has a user of its own (left in place, to look
at with ``make psql``).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localdb  # noqa: E402

DBNAME = "paycore"
step_number = 0


def step(who: str, what: str) -> None:
    global step_number
    step_number += 1
    print(f"\n{step_number:>2}. [{who}] {what}")


def show(text: str) -> None:
    print(f"      {text}")


@contextmanager
def request(conn: psycopg.Connection, role: str, claims: dict[str, str]) -> Iterator[psycopg.Connection]:
    """One PostgREST request: a transaction with the role and JWT claims set locally."""
    with conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn


def main() -> int:
    print("paycore demo: credits and generations, step by step\n")
    for line in localdb.prepare(DBNAME):
        print(line)
    cluster = localdb.project_cluster()

    with psycopg.connect(cluster.url(DBNAME), autocommit=True) as conn:
        user = uuid.uuid4()
        service = {"role": "service_role"}
        member = {"sub": str(user), "role": "authenticated"}

        def as_service() -> AbstractContextManager[psycopg.Connection]:
            return request(conn, "service_role", service)

        def as_user() -> AbstractContextManager[psycopg.Connection]:
            return request(conn, "authenticated", member)

        step("owner", "a new user: insert into auth.users (what Supabase Auth does on sign-up)")
        conn.execute(
            "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
            (user, f"demo-{str(user)[:8]}@example.test"),
        )
        show(f"user {user}")

        key = f"demo-grant-{uuid.uuid4()}"
        grant = "select * from public.adjust_credits(%s, 100, 'purchase', 'demo', '{}', %s)"
        step("service_role", "grant 100 credits: adjust_credits(user, 100, 'purchase', 'demo', '{}', "
             f"'{key}')")
        with as_service() as c:
            first = c.execute(grant, (user, key)).fetchone()
        show(f"balance {first[0]}, transaction {first[1]}")

        step("service_role", "retry with the same idempotency key (a webhook delivered twice)")
        with as_service() as c:
            again = c.execute(grant, (user, key)).fetchone()
        show(f"balance {again[0]}, transaction {again[1]}: "
             + ("the same result, nothing applied twice" if again == first else "DIFFERENT (unexpected)"))

        step("authenticated", "the user reads its balance: get_user_balance()")
        with as_user() as c:
            show(f"balance {c.execute('select public.get_user_balance()').fetchone()[0]}")

        start = ("select id, status, credits_used"
                 " from public.start_generation(%s, 'image', 'demo-model', %s, 30)")
        balance = "select public.get_user_balance(%s)"

        step("service_role", "start a generation costing 30: start_generation(user, 'image', 'demo-model', "
             "'a cat', 30)")
        with as_service() as c:
            gen_id, status, cost = c.execute(start, (user, "a cat")).fetchone()
            show(f"generation {gen_id}: {status}, {cost} credits debited; "
                 f"balance {c.execute(balance, (user,)).fetchone()[0]}")

        step("service_role", "it succeeds: complete_generation(id, '[\"https://example.test/a.png\"]')")
        with as_service() as c:
            status, urls = c.execute(
                "select status, result_urls from public.complete_generation(%s, %s::jsonb)",
                (gen_id, '["https://example.test/a.png"]'),
            ).fetchone()
            show(f"generation {gen_id}: {status}, results {json.dumps(urls)}; "
                 f"balance {c.execute(balance, (user,)).fetchone()[0]}")

        step("service_role", "start another generation costing 30, then fail it: "
             "fail_generation(id, 'model timeout')")
        with as_service() as c:
            gen_id, status, cost = c.execute(start, (user, "a dog")).fetchone()
            show(f"generation {gen_id}: {status}; balance {c.execute(balance, (user,)).fetchone()[0]}")
        with as_service() as c:
            status, reason = c.execute(
                "select status, failure_reason from public.fail_generation(%s, 'model timeout')", (gen_id,)
            ).fetchone()
            show(f"generation {gen_id}: {status} ({reason}), {cost} credits refunded; "
                 f"balance {c.execute(balance, (user,)).fetchone()[0]}")

        step("service_role", "a debit beyond the balance: adjust_credits(user, -1000, 'spend', 'too much')")
        try:
            with as_service() as c:
                c.execute("select * from public.adjust_credits(%s, -1000, 'spend', 'too much')", (user,))
            show("accepted (unexpected)")
        except psycopg.Error as e:
            show(f"refused: SQLSTATE {e.diag.sqlstate}, hint {e.diag.message_hint!r}")
            show(f"message {e.diag.message_primary!r}, detail {e.diag.message_detail}")
        with as_service() as c:
            show(f"nothing changed: balance {c.execute(balance, (user,)).fetchone()[0]}")

        step("authenticated", "the user reads its ledger: public.credit_transactions (RLS: its own rows)")
        with as_user() as c:
            rows = c.execute(
                "select created_at, amount, balance_after, type, description, generation_id is not null"
                " from public.credit_transactions order by created_at, balance_after"
            ).fetchall()
            now = c.execute("select public.get_user_balance()").fetchone()[0]
        show(f"{'amount':>7} {'balance_after':>13}  {'type':<11} description")
        for _, amount, after, type_, description, for_generation in rows:
            note = " (generation)" if for_generation else ""
            show(f"{amount:>+7} {after:>13}  {type_:<11} {description or ''}{note}")
        total = sum(r[1] for r in rows)
        show(f"sum(amount) = {total}, get_user_balance() = {now}: "
             + ("balance = sum(ledger)" if total == now else "MISMATCH (unexpected)"))
        ok = again == first and total == now

    print(f"\nthe user is left in place: make psql, then e.g. select * from public.generations "
          f"where user_id = '{user}';")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
