"""Stripe events and credit checkouts under real concurrency.

Threads, one autocommit connection each, start their calls together (parallel.run_parallel's
barrier): one event delivered ten times at once, the two events that report one paid Checkout
Session (completed, async_payment_succeeded), 32 checkouts against a capacity with room for
ten, the two events of one paid invoice (invoice.paid, invoice.payment_succeeded), a partial
and a full refund of one purchase, and the four lifecycle events of one subscription.

The events are the real ones of tests/fixtures/stripe (NOTICE.md), rewritten for a fresh user
and fresh Stripe ids (session, payment intent, subscription, invoice, charge, customer, event)
so that no test meets another's rows, nor the fixtures' user. paycore.apply_stripe_event runs
as the webhook does (a login role that is a member of paycore_webhook, created once) and as
the database owner (a job, a DBA): the event tests run once for each. begin_credit_checkout
and get_platform_credit_status run as service_role, the way PostgREST runs an RPC.

test_subscription_lifecycle_in_every_order_ends_canceled applies the four lifecycle events
one after the other in each of the 24 orders: it tells an ordering rule from a race when the
parallel test fails.

The capacity test sets the global setting platform_credit_capacity to what is sold and
reserved now plus ten packages, and restores null at the end.

The random seed is printed and included in every failure message; rerun a failing case with
PAYCORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import parallel
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb

SEED = parallel.SEED
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"

WEBHOOK_LOGIN = "paycore_test_webhook"
CALLERS = ("webhook", "owner")

SUBSCRIPTION_PRICE = "price_1PgafmB7WZ01zgkW6dKueIc5"  # ('cv', 'premium'): 100 monthly credits
PACKAGE = "pkg_100_credits"
PACKAGE_CREDITS = 100
MONTHLY_CREDITS = 100

APPLY_SQL = "select paycore.apply_stripe_event(%s::jsonb), clock_timestamp()"
BEGIN_SQL = (
    "select c.id, c.user_id, c.credits, c.reservation, c.status, c.expires_at"
    " from public.begin_credit_checkout(%s::uuid, %s::text) as c"
)
STATUS_SQL = "select public.get_platform_credit_status()"
SPEND_SQL = "select * from public.adjust_credits(%s::uuid, %s::bigint, 'spend', 'spent before a refund')"

# The ids of the fixtures' story, each replaced (in every JSON string) by the test's own:
# Story.event.
FIXTURE_IDS = {
    "user": ("6f1c7a52-3b0e-4d8e-9a51-2c4f0e9b7d13",),
    "session": (
        "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "cs_test_b1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "cs_test_c1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "cs_test_d1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
    ),
    "payment_intent": ("pi_1PgafyB7WZ01zgkWSjxsAJo3", "pi_1PgafyB7WZ01zgkWSjxsAJo4"),
    "subscription": ("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",),
    "invoice": ("in_1Pgc6tB7WZ01zgkWu9fdqL6I", "in_1Pgc6tB7WZ01zgkWu9fdqL6J"),
    "charge": ("ch_1PgafuB7WZ01zgkWXYmPNZs8",),
    "customer": ("cus_QXg1o8vcGmoR32",),
}
_FIXTURE_CACHE: dict[str, dict] = {}


# -- plumbing ---------------------------------------------------------------------------------


def fixture(name: str) -> dict:
    if name not in _FIXTURE_CACHE:
        _FIXTURE_CACHE[name] = json.loads((FIXTURES / f"{name}.json").read_text())
    return json.loads(json.dumps(_FIXTURE_CACHE[name]))


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def stripe_time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass
class Story:
    """A fresh user and fresh Stripe ids: the fixtures' story, told again for this test."""

    user: uuid.UUID
    session: str = field(default_factory=lambda: fresh("cs_test_"))
    payment_intent: str = field(default_factory=lambda: fresh("pi_"))
    subscription: str = field(default_factory=lambda: fresh("sub_"))
    invoice: str = field(default_factory=lambda: fresh("in_"))
    charge: str = field(default_factory=lambda: fresh("ch_"))
    customer: str = field(default_factory=lambda: fresh("cus_"))

    def event(self, name: str, edit: Callable[[dict], None] | None = None) -> dict:
        """The fixture `name` with this story's ids (in any string: ids, URLs) and a fresh event
        id; edit(event) then."""
        mapping = {old: str(getattr(self, kind)) for kind, olds in FIXTURE_IDS.items() for old in olds}

        def rewrite(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: rewrite(v) for k, v in value.items()}
            if isinstance(value, list):
                return [rewrite(v) for v in value]
            if isinstance(value, str):
                for old, new in mapping.items():
                    value = value.replace(old, new)
            return value

        event = rewrite(fixture(name))
        event["id"] = fresh("evt_")
        if edit is not None:
            edit(event)
        text = json.dumps(event)
        assert not [old for old in mapping if old in text], f"{name}: a fixture id is left in {text[:200]}"
        return event


def new_story(conn: psycopg.Connection) -> Story:
    return Story(parallel.create_user(conn, "stripe"))


def apply(conn: psycopg.Connection, event: dict) -> tuple[str, datetime]:
    """apply_stripe_event in a transaction of its own (autocommit): its result, and when it ended."""
    return conn.execute(APPLY_SQL, (Jsonb(event),)).fetchone()


def apply_parallel(db: str, events: list[dict], name: str) -> list[tuple[str, datetime]]:
    """Each event by a thread of its own, all released together."""
    return parallel.run_parallel(db, len(events), lambda i, conn: apply(conn, events[i]), name=name)


def order_of(results: list[tuple[str, datetime]], labels: list[str]) -> list[str]:
    """The labels of the events in the order their calls ended."""
    return [label for _, label in sorted(zip([r[1] for r in results], labels, strict=True))]


@dataclass(frozen=True)
class Outcome:
    row: tuple | None = None
    sqlstate: str | None = None
    hint: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.sqlstate is None

    def __str__(self) -> str:
        return f"ok {self.row}" if self.ok else f"{self.sqlstate} {self.hint}: {self.message.strip()}"


def attempt(conn: psycopg.Connection, mode: str, sql: str, params: tuple) -> Outcome:
    try:
        return Outcome(row=parallel.call(conn, mode, None, sql, params))
    except psycopg.Error as exc:
        return Outcome(sqlstate=exc.diag.sqlstate or "?????", hint=exc.diag.message_hint, message=str(exc))


def credit_status(conn: psycopg.Connection) -> dict:
    return parallel.call(conn, "service_role", None, STATUS_SQL, ())[0]


def ledger(conn: psycopg.Connection, user: uuid.UUID) -> list[Any]:
    with conn.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(
            "select amount, balance_after, type, idempotency_key from public.credit_transactions"
            " where user_id = %s order by created_at, balance_after desc", (user,),
        ).fetchall()


def balance(conn: psycopg.Connection, user: uuid.UUID) -> int | None:
    row = conn.execute("select balance from public.credits where user_id = %s", (user,)).fetchone()
    return None if row is None else row[0]


def purchases(conn: psycopg.Connection, session: str) -> list[Any]:
    with conn.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(
            "select id, user_id, checkout_session_id, package_id, credits, amount, currency,"
            " stripe_payment_intent_id, transaction_id, amount_refunded, credits_clawed_back,"
            " credits_unrecovered, status from public.user_credit_purchases where stripe_session_id = %s",
            (session,),
        ).fetchall()


def checkout_rows(conn: psycopg.Connection, *, session: str | None = None,
                  ids: list[uuid.UUID] | None = None) -> list[Any]:
    with conn.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(
            "select id, user_id, stripe_session_id, status, payment_status, reservation, credits,"
            " stripe_event_created_at from public.checkout_sessions"
            " where stripe_session_id = %s or id = any(%s) order by created_at",
            (session, ids or []),
        ).fetchall()


def stored_events(conn: psycopg.Connection, ids: list[str]) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in conn.execute(
        "select id, status, error, attempts from paycore.stripe_events where id = any(%s)", (ids,),
    ).fetchall()}


def assert_no_problems(problems: list[str]) -> None:
    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="module")
def webhook_db(db: str) -> str:
    """Conninfo of a login that is a member of paycore_webhook (not a superuser), as the webhook
    connects. Roles are cluster-wide: created once, if absent."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            f"""do $$
            begin
                if not exists (select from pg_catalog.pg_roles where rolname = '{WEBHOOK_LOGIN}') then
                    create role {WEBHOOK_LOGIN} login in role paycore_webhook;
                end if;
            exception when duplicate_object then
                null;
            end
            $$""",
        )
        conn.execute(f"grant paycore_webhook to {WEBHOOK_LOGIN}")
    conninfo = make_conninfo(db, user=WEBHOOK_LOGIN)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        who = conn.execute(
            "select session_user::text, r.rolsuper, pg_has_role(session_user, 'paycore_webhook', 'member')"
            " from pg_catalog.pg_roles as r where r.rolname = session_user",
        ).fetchone()
    assert who == (WEBHOOK_LOGIN, False, True), who
    return conninfo


@pytest.fixture(params=CALLERS)
def caller_db(request: pytest.FixtureRequest, db: str, webhook_db: str) -> str:
    """The conninfo the threads apply events with: the webhook's login, or the owner."""
    return webhook_db if request.param == "webhook" else db


@pytest.fixture(scope="module", autouse=True)
def subscription_price(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(
            "insert into public.prices (stripe_price_id, app_id, tier_id) values (%s, 'cv', 'premium')"
            " on conflict do nothing", (SUBSCRIPTION_PRICE,),
        )
        row = c.execute("select app_id, tier_id from public.prices where stripe_price_id = %s",
                        (SUBSCRIPTION_PRICE,)).fetchone()
    assert row == ("cv", "premium"), row


def grant_problems(conn: psycopg.Connection, story: Story, *, begun: uuid.UUID | None = None) -> list[str]:
    """One paid session of pkg_100_credits: one session row, one purchase, one ledger row of
    100 credits under the grant's key, a balance of 100; a session paycore began is sold."""
    problems = []
    rows = purchases(conn, story.session)
    if len(rows) != 1:
        problems.append(f"session {story.session}: {len(rows)} purchases, expected 1: {rows}")
    else:
        p = rows[0]
        if (p.user_id, p.package_id, p.credits, p.amount, p.currency, p.stripe_payment_intent_id) != (
                story.user, PACKAGE, PACKAGE_CREDITS, 1000, "usd", story.payment_intent):
            problems.append(f"session {story.session}: purchase {p}")
        if p.transaction_id is None:
            problems.append(f"session {story.session}: the purchase has no ledger row: {p}")
    entries = ledger(conn, story.user)
    key = f"paycore:checkout:{story.session}:grant"
    if [(e.amount, e.balance_after, e.type, e.idempotency_key) for e in entries] != [
            (PACKAGE_CREDITS, PACKAGE_CREDITS, "purchase", key)]:
        problems.append(f"user {story.user}: ledger {entries}, expected one purchase of 100 under {key}")
    if (b := balance(conn, story.user)) != PACKAGE_CREDITS:
        problems.append(f"user {story.user}: balance {b}, expected {PACKAGE_CREDITS}")
    sessions = checkout_rows(conn, session=story.session, ids=[begun] if begun else None)
    if len(sessions) != 1:
        problems.append(f"session {story.session}: {len(sessions)} checkout_sessions rows: {sessions}")
    else:
        s = sessions[0]
        if begun is not None and (s.id, s.reservation) != (begun, "sold"):
            problems.append(f"session {story.session} begun as {begun}: {s}, expected that row, sold")
        if begun is None and s.reservation is not None:
            problems.append(f"session {story.session} (not begun by paycore) has a reservation: {s}")
        if (s.status, s.payment_status, s.user_id) != ("complete", "paid", story.user):
            problems.append(f"session {story.session}: {s}")
    return problems


def begin_checkout(conn: psycopg.Connection, user: uuid.UUID) -> uuid.UUID:
    out = attempt(conn, "service_role", BEGIN_SQL, (user, PACKAGE))
    assert out.ok, f"seed {SEED}: begin_credit_checkout: {out}"
    return out.row[0]


def with_checkout_id(checkout_id: uuid.UUID | None) -> Callable[[dict], None] | None:
    """An edit that puts the id begin_credit_checkout returned into the session's metadata."""
    if checkout_id is None:
        return None

    def edit(event: dict) -> None:
        event["data"]["object"]["metadata"]["checkout_id"] = str(checkout_id)

    return edit


# -- 1. one event, delivered ten times at once ------------------------------------------------


def test_one_event_delivered_ten_times_applies_once(db: str, caller_db: str,
                                                    conn: psycopg.Connection) -> None:
    """The same checkout.session.completed (paid) of a fresh session, ten deliveries at once:
    one applied, nine duplicates; one purchase, one ledger row, a balance of 100."""
    story = new_story(conn)
    event = story.event("checkout.session.completed")
    results = apply_parallel(caller_db, [event] * 10, "stripe-dup")

    problems = []
    outcomes = Counter(r[0] for r in results)
    if outcomes != Counter({"applied": 1, "duplicate": 9}):
        problems.append(f"outcomes {dict(outcomes)}, expected 1 applied and 9 duplicate")
    stored = stored_events(conn, [event["id"]])
    if stored != {event["id"]: ("applied", None, 1)}:
        problems.append(f"stored event: {stored}")
    problems += grant_problems(conn, story)
    print(f"one event ten times (seed {SEED}): {dict(outcomes)}")
    assert_no_problems(problems)


# -- 2. completed and async_payment_succeeded of one session ----------------------------------


def test_completed_and_async_payment_succeeded_grant_once(db: str, caller_db: str,
                                                           conn: psycopg.Connection) -> None:
    """checkout.session.completed (paid) and checkout.session.async_payment_succeeded (paid) of
    one session, different event ids, at once; ten rounds, a fresh session each, every other one
    begun by begin_credit_checkout (its id in metadata.checkout_id). Both applied, one grant;
    the session's state is the newer event's (async_payment_succeeded), and a begun session's
    reservation is sold."""
    rng = random.Random(SEED * 10 + 2)
    problems: list[str] = []
    orders: Counter = Counter()
    for k in range(10):
        story = new_story(conn)
        begun = begin_checkout(conn, story.user) if k % 2 else None
        edit = with_checkout_id(begun)
        completed = story.event("checkout.session.completed", edit)
        succeeded = story.event("checkout.session.async_payment_succeeded", edit)
        labels = ["completed", "async_payment_succeeded"]
        events = [completed, succeeded]
        if rng.random() < 0.5:
            labels.reverse()
            events.reverse()
        results = apply_parallel(caller_db, events, "stripe-paid")
        orders[" then ".join(order_of(results, labels))] += 1
        if [r[0] for r in results] != ["applied", "applied"]:
            problems.append(f"round {k}: {list(zip(labels, [r[0] for r in results], strict=True))},"
                            " expected both applied")
        stored = stored_events(conn, [e["id"] for e in events])
        if sorted(stored.values()) != [("applied", None, 1)] * 2:
            problems.append(f"round {k}: stored events {stored}")
        round_problems = grant_problems(conn, story, begun=begun)
        sessions = checkout_rows(conn, session=story.session)
        if sessions and sessions[0].stripe_event_created_at != stripe_time(succeeded["created"]):
            round_problems.append(f"session {story.session}: state from the event of"
                                  f" {sessions[0].stripe_event_created_at}, expected the newer one"
                                  f" ({stripe_time(succeeded['created'])})")
        problems += [f"round {k} ({'begun' if begun else 'not begun'}): {p}" for p in round_problems]
    print(f"completed and async_payment_succeeded (seed {SEED}): {dict(orders)}")
    assert_no_problems(problems)


# -- 3. checkouts against the platform's capacity ---------------------------------------------


def test_checkouts_beyond_capacity_are_refused(db: str, webhook_db: str, conn: psycopg.Connection) -> None:
    """32 begin_credit_checkout of pkg_100_credits at once (service_role, 8 fresh users) against
    a capacity with room for exactly ten packages beyond what is sold and reserved now: ten
    reserved, 22 PT409 capacity_exceeded; reserved grows by exactly 1000, available is 0. The
    ten are then released by checkout.session.async_payment_failed events and reserved is back."""
    n, room = 32, 10
    users = [parallel.create_user(conn, "stripe-cap") for _ in range(8)]
    problems: list[str] = []
    before = credit_status(conn)
    capacity = before["sold"] + before["reserved"] + room * PACKAGE_CREDITS
    conn.execute("update paycore.settings set value = %s::jsonb where key = 'platform_credit_capacity'",
                 (json.dumps(capacity),))
    try:
        results: list[Outcome] = parallel.run_parallel(
            db, n, lambda i, c: attempt(c, "service_role", BEGIN_SQL, (users[i % len(users)], PACKAGE)),
            name="stripe-cap",
        )
        after = credit_status(conn)
    finally:
        conn.execute("update paycore.settings set value = 'null'::jsonb"
                     " where key = 'platform_credit_capacity'")

    reserved = [r for r in results if r.ok]
    refused = [r for r in results if (r.sqlstate, r.hint) == ("PT409", "capacity_exceeded")]
    others = [r for r in results if not r.ok and r not in refused]
    if (len(reserved), len(refused)) != (room, n - room) or others:
        problems.append(f"{len(reserved)} reserved, {len(refused)} PT409 capacity_exceeded,"
                        f" expected {room} and {n - room}; other outcomes: {[str(o) for o in others[:3]]}")
    for r in reserved:
        _, user, credits, reservation, status, _ = r.row
        if (credits, reservation, status) != (PACKAGE_CREDITS, "reserved", "open") or user not in users:
            problems.append(f"reserved checkout {r.row}")
    ids = [r.row[0] for r in reserved]
    rows = checkout_rows(conn, ids=ids)
    if sorted(r.id for r in rows if r.reservation == "reserved") != sorted(ids):
        problems.append(f"checkout_sessions of the reserved checkouts: {rows}")
    mine = conn.execute("select count(*) from public.checkout_sessions where user_id = any(%s)",
                        (users,)).fetchone()[0]
    if mine != len(reserved):
        problems.append(f"{mine} checkout_sessions rows of the test's users,"
                        f" {len(reserved)} checkouts reserved")
    expected = {"capacity": capacity, "sold": before["sold"],
                "reserved": before["reserved"] + room * PACKAGE_CREDITS, "available": 0}
    if after != expected:
        problems.append(f"platform credits before {before}, after {after}, expected {expected}")

    # The reservations held until the payments failed: each released once by its event.
    with psycopg.connect(webhook_db, autocommit=True) as hook:
        for r in reserved:
            story = Story(r.row[1])
            event = story.event("checkout.session.async_payment_failed", with_checkout_id(r.row[0]))
            if (out := apply(hook, event)[0]) != "applied":
                problems.append(f"async_payment_failed of checkout {r.row[0]}: {out}")
    released = credit_status(conn)
    if (released["sold"], released["reserved"]) != (before["sold"], before["reserved"]):
        problems.append(f"after the releases {released}, expected sold and reserved as before: {before}")
    left = [r for r in checkout_rows(conn, ids=ids) if r.reservation != "released"]
    if left:
        problems.append(f"checkouts not released after async_payment_failed: {left}")
    print(f"capacity (seed {SEED}): before {before}, after {after}, {len(reserved)} reserved,"
          f" {len(refused)} refused")
    assert_no_problems(problems)


# -- 4. invoice.paid and invoice.payment_succeeded of one invoice -----------------------------


def test_paid_invoice_grants_monthly_credits_once(db: str, caller_db: str, conn: psycopg.Connection) -> None:
    """invoice.paid and invoice.payment_succeeded of one fresh invoice of a fresh subscription
    (customer.subscription.created applied first), at once; ten rounds, every other one without
    the invoice's subscription metadata (the user then comes from user_subscriptions). Both
    applied, one grant of the tier's 100 monthly credits under paycore:invoice:<id>:grant."""
    rng = random.Random(SEED * 10 + 4)
    problems: list[str] = []
    orders: Counter = Counter()
    with psycopg.connect(caller_db, autocommit=True) as hook:
        for k in range(10):
            story = new_story(conn)
            created = story.event("customer.subscription.created")
            if (out := apply(hook, created)[0]) != "applied":
                problems.append(f"round {k}: customer.subscription.created {out}")
                continue

            def edit(event: dict, strip: bool = bool(k % 2)) -> None:
                if strip:
                    del event["data"]["object"]["parent"]["subscription_details"]["metadata"]

            labels = ["invoice.paid", "invoice.payment_succeeded"]
            if rng.random() < 0.5:
                labels.reverse()
            events = [story.event(label, edit) for label in labels]
            results = apply_parallel(caller_db, events, "stripe-invoice")
            orders[" then ".join(order_of(results, labels))] += 1
            where = f"round {k} ({'user from the subscription' if k % 2 else 'user in metadata'})"
            if [r[0] for r in results] != ["applied", "applied"]:
                stored = stored_events(conn, [e["id"] for e in events])
                problems.append(f"{where}: {list(zip(labels, [r[0] for r in results], strict=True))},"
                                f" expected both applied; stored {stored}")
            key = f"paycore:invoice:{story.invoice}:grant"
            entries = ledger(conn, story.user)
            if [(e.amount, e.balance_after, e.type, e.idempotency_key) for e in entries] != [
                    (MONTHLY_CREDITS, MONTHLY_CREDITS, "subscription", key)]:
                problems.append(f"{where}: ledger {entries}, expected one grant of {MONTHLY_CREDITS}"
                                f" under {key}")
            if (b := balance(conn, story.user)) != MONTHLY_CREDITS:
                problems.append(f"{where}: balance {b}, expected {MONTHLY_CREDITS}")
            logs = conn.execute(
                "select event_type, user_id, stripe_subscription_id, credits_granted from public.invoice_logs"
                " where stripe_invoice_id = %s order by event_type", (story.invoice,),
            ).fetchall()
            if (sorted(r[0] for r in logs) != sorted(labels) or sum(r[3] for r in logs) != MONTHLY_CREDITS
                    or {(r[1], r[2]) for r in logs} != {(story.user, story.subscription)}):
                problems.append(f"{where}: invoice_logs {logs}")
            history = conn.execute(
                "select user_id, status, amount from public.payment_history where stripe_invoice_id = %s",
                (story.invoice,),
            ).fetchall()
            if history != [(story.user, "succeeded", 2000)]:
                problems.append(f"{where}: payment_history {history}")
    print(f"invoice.paid and payment_succeeded (seed {SEED}): {dict(orders)}")
    assert_no_problems(problems)


# -- 5. a partial and a full refund of one purchase -------------------------------------------


def test_parallel_refunds_claw_back_the_purchase_once(db: str, caller_db: str,
                                                      conn: psycopg.Connection) -> None:
    """charge.refunded partial (400 of 1000: 40 credits) and full (1000: 100 credits) of one
    purchase of 100 credits, different event ids, at once; every other round a third event too,
    the full refund again in the legacy shape (API 2022-08-01). Ten rounds; before the refunds
    the user has spent 0, 30 or 70 credits. Whatever the order, the refunds take back 100
    credits in all, never more: min(100, balance) from the balance, the rest unrecovered."""
    rng = random.Random(SEED * 10 + 5)
    problems: list[str] = []
    orders: Counter = Counter()
    with psycopg.connect(caller_db, autocommit=True) as hook:
        for k in range(10):
            story = new_story(conn)
            if (out := apply(hook, story.event("checkout.session.completed"))[0]) != "applied":
                problems.append(f"round {k}: checkout.session.completed {out}")
                continue
            spent = rng.choice([0, 30, 70])
            if spent:
                parallel.call(conn, "service_role", None, SPEND_SQL, (story.user, -spent))
            labels = ["charge.refunded.partial", "charge.refunded"]
            if k % 2:
                labels.append("charge.refunded.legacy_2022-08-01")
            rng.shuffle(labels)
            events = [story.event(label) for label in labels]
            results = apply_parallel(caller_db, events, "stripe-refund")
            order = order_of(results, labels)
            orders[" then ".join(o.removeprefix("charge.refunded") or "full" for o in order)] += 1
            where = f"round {k} (spent {spent}, order {order})"
            if [r[0] for r in results] != ["applied"] * len(events):
                stored = stored_events(conn, [e["id"] for e in events])
                problems.append(f"{where}: {list(zip(labels, [r[0] for r in results], strict=True))},"
                                f" expected all applied; stored {stored}")
            held = PACKAGE_CREDITS - spent
            clawed = min(PACKAGE_CREDITS, held)
            rows = purchases(conn, story.session)
            if len(rows) != 1:
                problems.append(f"{where}: purchases {rows}")
                continue
            p = rows[0]
            if (p.credits_clawed_back, p.credits_unrecovered, p.amount_refunded, p.status) != (
                    clawed, PACKAGE_CREDITS - clawed, 1000, "refunded"):
                problems.append(f"{where}: purchase clawed back {p.credits_clawed_back}, unrecovered"
                                f" {p.credits_unrecovered}, refunded {p.amount_refunded}, {p.status};"
                                f" expected {clawed}, {PACKAGE_CREDITS - clawed}, 1000, refunded")
            entries = ledger(conn, story.user)
            refunds = [e for e in entries if e.type == "refund"]
            if -sum(e.amount for e in refunds) != clawed:
                problems.append(f"{where}: refund rows {refunds} take back {-sum(e.amount for e in refunds)},"
                                f" expected {clawed}")
            if len({e.idempotency_key for e in refunds}) != len(refunds):
                problems.append(f"{where}: refund rows repeat a key: {refunds}")
            if (b := balance(conn, story.user)) != held - clawed or b != sum(e.amount for e in entries):
                problems.append(f"{where}: balance {b}, expected {held - clawed}; ledger {entries}")
            logged = conn.execute(
                "select count(*), count(*) filter (where user_id = %s) from public.payment_logs"
                " where stripe_event_id = any(%s)", (story.user, [e["id"] for e in events]),
            ).fetchone()
            if logged != (len(events), len(events)):
                problems.append(f"{where}: payment_logs {logged}, expected {len(events)} of the user")
    print(f"parallel refunds (seed {SEED}): {dict(orders)}")
    assert_no_problems(problems)


# -- 6. the lifecycle events of one subscription ----------------------------------------------


LIFECYCLE = ("customer.subscription.created", "customer.subscription.updated",
             "customer.subscription.updated.past_due", "customer.subscription.deleted")


def lifecycle_problem(conn: psycopg.Connection, story: Story, deleted: dict) -> str | None:
    """None when the one row of the story's subscription is canceled with the fields of the
    deleted event; else what is wrong."""
    with conn.cursor(row_factory=namedtuple_row) as cur:
        rows = cur.execute(
            "select user_id, app_id, tier_id, stripe_customer_id, stripe_price_id, status,"
            " cancel_at_period_end, canceled_at, current_period_start, current_period_end,"
            " stripe_event_created_at from public.user_subscriptions where stripe_subscription_id = %s",
            (story.subscription,),
        ).fetchall()
    sub = deleted["data"]["object"]
    item = sub["items"]["data"][0]
    expected = (story.user, "cv", "premium", story.customer, SUBSCRIPTION_PRICE, "canceled",
                sub["cancel_at_period_end"], stripe_time(sub["canceled_at"]),
                stripe_time(item["current_period_start"]), stripe_time(item["current_period_end"]),
                stripe_time(deleted["created"]))
    if len(rows) == 1 and tuple(rows[0]) == expected:
        return None
    if len(rows) == 1:
        got = rows[0]._asdict()
        diff = {k: tuple(v.isoformat() if isinstance(v, datetime) else v for v in (got[k], want))
                for k, want in zip(got, expected, strict=True) if got[k] != want}
        return f"the row differs from the deleted event's (row, expected): {diff}"
    return f"{len(rows)} rows: {rows}"


def short(label: str) -> str:
    return label.removeprefix("customer.subscription.")


def test_subscription_lifecycle_in_parallel_ends_canceled(db: str, caller_db: str,
                                                          conn: psycopg.Connection) -> None:
    """created, updated, updated.past_due and deleted of a fresh subscription, one thread each,
    at once; ten rounds. All applied, and the one row of the subscription is canceled with the
    deleted event's fields, whatever order they came in."""
    rng = random.Random(SEED * 10 + 6)
    problems: list[str] = []
    orders: Counter = Counter()
    for k in range(10):
        story = new_story(conn)
        labels = list(LIFECYCLE)
        rng.shuffle(labels)
        events = [story.event(label) for label in labels]
        results = apply_parallel(caller_db, events, "stripe-sub")
        order = [short(o) for o in order_of(results, labels)]
        where = f"round {k} (order {order})"
        if [r[0] for r in results] != ["applied"] * 4:
            stored = stored_events(conn, [e["id"] for e in events])
            problems.append(f"{where}: {list(zip(labels, [r[0] for r in results], strict=True))},"
                            f" expected all applied; stored {stored}")
        problem = lifecycle_problem(conn, story, events[labels.index("customer.subscription.deleted")])
        orders[(" then ".join(order), "ok" if problem is None else "WRONG")] += 1
        if problem is not None:
            problems.append(f"{where}: {problem}")
    print(f"subscription lifecycle (seed {SEED}): {dict(orders)}")
    assert_no_problems(problems)


def test_subscription_lifecycle_in_every_order_ends_canceled(webhook_db: str,
                                                             conn: psycopg.Connection) -> None:
    """The same four events one after the other, in each of the 24 orders (a fresh subscription
    each): what the parallel test sees, without threads. The row ends canceled with the deleted
    event's fields in every order."""
    problems: list[str] = []
    with psycopg.connect(webhook_db, autocommit=True) as hook:
        for order in itertools.permutations(LIFECYCLE):
            story = new_story(conn)
            events = [story.event(label) for label in order]
            outcomes = [apply(hook, e)[0] for e in events]
            where = f"order {[short(o) for o in order]}"
            if outcomes != ["applied"] * 4:
                problems.append(f"{where}: outcomes {outcomes}")
            problem = lifecycle_problem(conn, story, events[order.index("customer.subscription.deleted")])
            if problem is not None:
                problems.append(f"{where}: {problem}")
    assert_no_problems(problems)
