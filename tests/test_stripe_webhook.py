"""POST /stripe/webhook: signatures, body checks, the four outcomes, 413, 503, logs, the login role.

The module builds a database of its own (migrations/ with yoyo), so that stopping it (the
503 test) disturbs no other test. Each test rewrites the fixture events into a story of its
own: fresh event ids, Stripe object ids with a suffix and a fresh auth user, so tests and
repeated runs never collide. The main flow goes through a running gunicorn, as a member of
paycore_webhook (never the owner), to prove its grants suffice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from flask import Flask
from psycopg import sql
from stripe_testing import FLOW, fixture_text, gunicorn, request, stripe_database, webhook_login
from test_webhook import _free_port

SECRET = "whsec_" + "a1" * 16
ROTATED = "whsec_" + "b2" * 16
UNKNOWN_SECRET = "whsec_" + "c3" * 16
LOGIN_ROLE = "paycore_webhook_test_login"
LOGIN_PASSWORD = "paycore-webhook-test"
# --- database -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stripe_db(make_database: Callable[[str], str]) -> str:
    """Owner conninfo of this module's database, with the fixture price mapped."""
    return stripe_database(make_database, "stripe_webhook")


@pytest.fixture(scope="module")
def login_db(stripe_db: str) -> str:
    """Conninfo of a login member of paycore_webhook."""
    return webhook_login(stripe_db, LOGIN_ROLE, LOGIN_PASSWORD)


@pytest.fixture()
def owner(stripe_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stripe_db, autocommit=True) as c:
        yield c


class Story:
    """The fixture events rewritten for one test: its own ids and its own auth user."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.user = str(uuid.uuid4())
        self.suffix = uuid.uuid4().hex[:12]
        conn.execute(
            "insert into auth.users (id, email) values (%s, %s)", (self.user, f"{self.user}@example.com")
        )

    def body(self, name: str, **changes: Any) -> str:
        text = fixture_text(name, self.user, self.suffix)
        if changes:
            event = json.loads(text)
            event.update(changes)
            text = json.dumps(event, indent=2)
        return text

    def id(self, name: str) -> str:
        return str(json.loads(self.body(name))["id"])

    def stored(self, event_id: str) -> tuple[str, str | None] | None:
        row = self.conn.execute(
            "select status, error from paycore.stripe_events where id = %s", (event_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def scalar(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params or (self.user,)).fetchone()
        return row[0] if row else None


@pytest.fixture()
def story(owner: psycopg.Connection[Any]) -> Story:
    return Story(owner)


def sign(body: str | bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    return stripe.WebhookSignature.generate_signature_header(text, secret, timestamp=timestamp)


def sign_bytes(body: bytes, secret: str = SECRET) -> str:
    """A signature over raw bytes (for a body that is not UTF-8)."""
    import hashlib
    import hmac

    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# --- gunicorn -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(login_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running gunicorn logged in as the webhook role; two secrets (a rotation), test mode."""
    tmp = tmp_path_factory.mktemp("stripe-gunicorn")
    env = {
        "DATABASE_URL": login_db,
        "STRIPE_WEBHOOK_SECRET": f"{SECRET}, {ROTATED}",
        "STRIPE_LIVEMODE": "false",
        "DB_POOL_MAX_SIZE": "8",
    }
    with gunicorn(env, tmp) as base:
        yield base + "/stripe/webhook", tmp / "gunicorn.log"


def post(url: str, body: str | bytes, signature: str | None = "sign") -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        signature = sign(body)
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return request("POST", url, data, headers)


# --- through gunicorn -------------------------------------------------------------------


def test_every_fixture_event_through_gunicorn(server: tuple[str, Path], story: Story) -> None:
    url, log_path = server
    for name, outcome in FLOW:
        body = story.body(name)
        event = json.loads(body)
        status, answer = post(url, body)
        assert (status, answer) == (200, {"status": outcome, "event": event["id"], "type": event["type"]}), (
            name,
            story.stored(event["id"]),
        )
        stored = story.stored(event["id"])
        assert stored is not None and stored[0] == outcome, (name, stored)

    # The paid credit checkout granted the package's 100 credits, once.
    cs = json.loads(story.body("checkout.session.completed"))["data"]["object"]["id"]
    assert (
        story.scalar(
            "select amount from public.credit_transactions where idempotency_key = %s",
            f"paycore:checkout:{cs}:grant",
        )
        == 100
    )
    assert (
        story.scalar("select credits from public.user_credit_purchases where stripe_session_id = %s", cs)
        == 100
    )
    sub = json.loads(story.body("customer.subscription.created"))["data"]["object"]["id"]
    assert (
        story.scalar(
            "select status from public.user_subscriptions where stripe_subscription_id = %s and user_id = %s",
            sub,
            story.user,
        )
        == "canceled"
    )
    assert story.scalar("select count(*) from public.payment_history where user_id = %s") >= 1
    assert (
        story.scalar(
            "select count(*) from public.payment_history where user_id = %s and status = 'succeeded'"
        )
        >= 1
    )
    failed = story.stored(story.id("checkout.session.completed.missing_metadata"))
    assert failed is not None and failed[1]

    # The same events again: duplicates, nothing changes.
    balance = story.scalar("select balance from public.credits where user_id = %s")
    for name in (
        "checkout.session.completed",
        "customer.updated",
        "checkout.session.completed.missing_metadata",
    ):
        body = story.body(name)
        status, answer = post(url, body)
        assert status == 200 and answer["status"] == "duplicate", (name, answer)
    assert story.scalar("select balance from public.credits where user_id = %s") == balance

    # The log has one JSON line per request, without the payload or a secret.
    lines = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith('{"msg": "stripe_webhook"')
    ]
    ours = [line for line in lines if line["event"] and line["event"].endswith(story.suffix)]
    assert len(ours) == len(FLOW) + 3
    assert {"event", "type", "outcome", "status", "duration_ms"} <= set(ours[0])
    text = log_path.read_text()
    assert SECRET not in text and ROTATED not in text and story.user not in text


def test_parallel_deliveries_apply_once(server: tuple[str, Path], story: Story) -> None:
    url, _ = server
    body = story.body("checkout.session.completed")
    barrier = threading.Barrier(10)

    def deliver(_: int) -> tuple[int, Any]:
        signature = sign(body)
        barrier.wait()
        return post(url, body, signature)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(deliver, range(10)))
    assert all(status == 200 for status, _ in results), results
    outcomes = sorted(answer["status"] for _, answer in results)
    assert outcomes == ["applied"] + ["duplicate"] * 9
    assert (
        story.scalar(
            "select count(*) from public.credit_transactions where user_id = %s and type = 'purchase'"
        )
        == 1
    )
    assert story.scalar("select balance from public.credits where user_id = %s") == 100


@pytest.mark.parametrize(
    "case",
    [
        "no_signature",
        "bad_signature",
        "wrong_secret",
        "stale",
        "future",
        "non_ascii_header",
        "garbage_header",
        "not_utf8",
        "bad_json",
        "array",
        "not_an_event",
        "nan",
        "nul_escape",
    ],
)
def test_bad_requests_are_400_and_store_nothing(server: tuple[str, Path], story: Story, case: str) -> None:
    url, _ = server
    body = story.body("checkout.session.completed")
    event_id = story.id("checkout.session.completed")
    data: bytes = body.encode()
    headers: dict[str, str] = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
    if case == "no_signature":
        del headers["Stripe-Signature"]
    elif case == "bad_signature":
        headers["Stripe-Signature"] = sign(body + " ")
    elif case == "wrong_secret":
        headers["Stripe-Signature"] = sign(body, UNKNOWN_SECRET)
    elif case == "stale":
        headers["Stripe-Signature"] = sign(body, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers["Stripe-Signature"] = sign(body, timestamp=int(time.time()) + 3600)
    elif case == "non_ascii_header":
        headers["Stripe-Signature"] = sign(body) + ",v1=é"
    elif case == "garbage_header":
        headers["Stripe-Signature"] = "t=now,v1"
    elif case == "not_utf8":
        data = body.encode().replace(b'"checkout.session.completed"', b'"checkout.session.completed\xff"')
        headers["Stripe-Signature"] = sign_bytes(data)
    elif case == "bad_json":
        data = body.encode()[:-3]
        headers["Stripe-Signature"] = sign(data.decode())
    elif case == "array":
        data = f"[{body}]".encode()
        headers["Stripe-Signature"] = sign(data.decode())
    elif case == "not_an_event":
        data = json.dumps({"id": event_id, "type": "checkout.session.completed"}).encode()
        headers["Stripe-Signature"] = sign(data.decode())
    elif case == "nan":
        data = body.replace('"created": 1785000000', '"created": NaN', 1).encode()
        headers["Stripe-Signature"] = sign(data.decode())
    elif case == "nul_escape":
        data = body.replace('"usd"', '"us\\u0000d"', 1).encode()
        headers["Stripe-Signature"] = sign(data.decode())
    req = urllib.request.Request(url, data=data, method="POST")
    for key, value in headers.items():
        req.add_header(key, value)
    if case == "non_ascii_header":  # urllib encodes headers as latin-1, as a client may
        req.headers["Stripe-signature"] = headers["Stripe-Signature"]
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    assert status == 400, (case, raw)
    assert "error" in json.loads(raw)
    assert story.stored(event_id) is None


def test_oversized_body_is_413(server: tuple[str, Path], story: Story) -> None:
    url, _ = server
    event = json.loads(story.body("customer.updated"))
    event["data"]["object"]["metadata"] = {"padding": "x" * (256 * 1024)}
    body = json.dumps(event)
    status, answer = post(url, body)
    assert status == 413 and "error" in answer
    assert story.stored(event["id"]) is None


def test_livemode_mismatch_is_acknowledged_not_stored(server: tuple[str, Path], story: Story) -> None:
    url, _ = server
    body = story.body("checkout.session.completed", livemode=True)
    event = json.loads(body)
    status, answer = post(url, body)
    assert (status, answer) == (200, {"status": "ignored", "event": event["id"], "type": event["type"]})
    assert story.stored(event["id"]) is None
    assert story.scalar("select count(*) from public.credit_transactions where user_id = %s") == 0


def test_secret_rotation_accepts_either_secret(server: tuple[str, Path], story: Story) -> None:
    url, _ = server
    old = story.body("customer.updated")
    assert post(url, old, sign(old, SECRET))[1]["status"] == "ignored"
    new = story.body("checkout.session.completed")
    assert post(url, new, sign(new, ROTATED)) == (
        200,
        {
            "status": "applied",
            "event": story.id("checkout.session.completed"),
            "type": "checkout.session.completed",
        },
    )
    # A header with both signatures (Stripe sends one v1 per active secret) also verifies.
    third = story.body("payment_intent.succeeded")
    t = int(time.time())
    both = sign(third, UNKNOWN_SECRET, t) + "," + sign(third, ROTATED, t).split(",")[1]
    assert post(url, third, both)[0] == 200


# --- in-process (Flask test client) -----------------------------------------------------


@pytest.fixture()
def make_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    """As in test_webhook: apps whose pools are closed at the end of the test."""
    from webhook.app import create_app, get_services

    monkeypatch.delenv("DATABASE_URL", raising=False)
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None) -> Flask:
        app = create_app({"TESTING": True, **(config or {})})
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_services(app).pool.close()


def _app(make_app: Callable[..., Flask], db: str, **extra: str) -> Flask:
    return make_app({"DATABASE_URL": db, "STRIPE_WEBHOOK_SECRET": SECRET, **extra})


def test_missing_secret_is_503_misconfigured(
    make_app: Callable[..., Flask], story: Story, login_db: str
) -> None:
    client = make_app({"DATABASE_URL": login_db}).test_client()
    body = story.body("customer.updated")
    response = client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 503
    assert response.get_json() == {"error": "misconfigured"}
    assert client.get("/healthz").status_code == 200


def test_stripe_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.app import create_app
    from webhook.config import ConfigError

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@/paycore")
    for key, value in [
        ("STRIPE_WEBHOOK_SECRET", "sk_test_123"),
        ("STRIPE_LIVEMODE", "maybe"),
        ("STRIPE_WEBHOOK_TOLERANCE", "0"),
        ("WEBHOOK_MAX_BODY", "big"),
        ("STRIPE_STATEMENT_TIMEOUT", "-1"),
    ]:
        with monkeypatch.context() as m:
            m.setenv(key, value)
            with pytest.raises(ConfigError, match=key) as info:
                create_app()
            assert value not in str(info.value) or key != "STRIPE_WEBHOOK_SECRET"
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f" {SECRET} ,, {ROTATED} ")
    monkeypatch.setenv("STRIPE_LIVEMODE", "TRUE")
    app = create_app()
    settings = app.extensions["paycore"].settings
    assert settings.stripe_webhook_secrets == (SECRET, ROTATED) and settings.stripe_livemode is True
    assert SECRET not in repr(settings)
    assert app.config["MAX_CONTENT_LENGTH"] == 256 * 1024
    app.extensions["paycore"].pool.close()


def test_no_client_input_is_a_500(make_app: Callable[..., Flask], story: Story, login_db: str) -> None:
    client = _app(make_app, login_db, WEBHOOK_MAX_BODY="4096").test_client()
    good = story.body("customer.updated")
    t = int(time.time())
    bodies: list[bytes] = [
        b"",
        b"null",
        b"1",
        b'"x"',
        b"{}",
        b"[]",
        b"{",
        b"\xff\xfe",
        b'{"id": 1}',
        b'{"id": "evt_x", "type": "t", "created": "now", "data": {"object": {}}}',
        b'{"id": "evt_x", "type": "t", "created": 1e400, "data": {"object": {}}}',
        b'{"id": "evt_x", "type": "' + b"t" * 200 + b'", "created": 1, "data": {"object": {}}}',
        b'{"id": "evt_x", "type": "t\\ud800", "created": 1, "data": {"object": {}}}',
        b"[" * 100000,
        b"x" * 5000,
    ]
    headers: list[str | None] = [
        None,
        "",
        "t=",
        "v1=",
        f"t={t}",
        f"t={t},v1=",
        "t=1,v1=00",
        ",,,=,=",
        "t=" + "9" * 400 + ",v1=ab",
        "t=-5,v1=ab",
        "\u00e9\u00e8",
    ]
    statuses: set[int] = set()
    for body in bodies + [good.encode()]:
        for header in headers + ["sign"]:
            h = {}
            if header == "sign":
                h["Stripe-Signature"] = sign_bytes(body)
            elif header is not None:
                h["Stripe-Signature"] = header
            for content_type in ("application/json", "application/x-www-form-urlencoded"):
                response = client.post(
                    "/stripe/webhook", data=body, headers={**h, "Content-Type": content_type}
                )
                statuses.add(response.status_code)
                assert response.status_code in (200, 400, 413), (body[:80], header, response.status_code)
                assert response.is_json
    assert {200, 400, 413} <= statuses
    assert client.get("/stripe/webhook").status_code == 405


def test_log_line_perrequest(
    make_app: Callable[..., Flask], story: Story, login_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _app(make_app, login_db).test_client()
    body = story.body("checkout.session.completed")
    with caplog.at_level(logging.INFO, logger="paycore.webhook"):
        assert (
            client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)}).status_code
            == 200
        )
        assert (
            client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": "t=1,v1=00"}).status_code
            == 400
        )
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "paycore.webhook" and r.getMessage().startswith("{")
    ]
    assert len(lines) == 2
    assert lines[0]["event"] == story.id("checkout.session.completed")
    assert lines[0]["type"] == "checkout.session.completed"
    assert (lines[0]["outcome"], lines[0]["status"]) == ("applied", 200)
    assert isinstance(lines[0]["duration_ms"], float)
    assert (lines[1]["outcome"], lines[1]["status"]) == ("invalid_signature", 400)
    assert SECRET not in caplog.text and "jenny.rosen" not in caplog.text and story.user not in caplog.text


def test_statement_timeout_is_503_then_retry_applies(
    make_app: Callable[..., Flask], story: Story, login_db: str, stripe_db: str
) -> None:
    client = _app(make_app, login_db, STRIPE_STATEMENT_TIMEOUT="0.3").test_client()
    body = story.body("checkout.session.completed")
    headers = {"Stripe-Signature": sign(body)}
    # Another delivery of the same event holds its row uncommitted: this one waits, then times out.
    with psycopg.connect(stripe_db) as blocker:
        blocker.execute("select paycore.apply_stripe_event(%s::jsonb)", (body,))
        response = client.post("/stripe/webhook", data=body, headers=headers)
        assert response.status_code == 503 and response.get_json() == {"error": "unavailable"}
        blocker.rollback()
    response = client.post("/stripe/webhook", data=body, headers=headers)
    assert response.get_json()["status"] == "applied"


def test_database_down_is_503_then_retry_applies(
    make_app: Callable[..., Flask],
    story: Story,
    login_db: str,
    owner: psycopg.Connection[Any],
    pg_server: str,
) -> None:
    client = _app(make_app, login_db, DB_POOL_TIMEOUT="1", DB_CONNECT_TIMEOUT="2").test_client()
    warm = story.body("customer.updated")
    assert (
        client.post("/stripe/webhook", data=warm, headers={"Stripe-Signature": sign(warm)}).status_code == 200
    )
    body = story.body("checkout.session.completed")
    dbname = owner.info.dbname
    ident = sql.Identifier(dbname)
    # The database goes away for the webhook: no new connection, the open ones closed (the
    # owner's test connection excepted).
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("alter database {} with allow_connections false").format(ident))
        try:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> %s",
                (dbname, owner.info.backend_pid),
            )
            for _ in range(2):
                response = client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)})
                assert response.status_code == 503, response.get_data()
                assert response.get_json() == {"error": "unavailable"}
        finally:
            admin.execute(sql.SQL("alter database {} with allow_connections true").format(ident))
    assert story.stored(story.id("checkout.session.completed")) is None
    # Stripe retries the same event until it is acknowledged.
    deadline = time.monotonic() + 60
    while True:
        response = client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)})
        if response.status_code == 200:
            break
        assert response.status_code == 503
        assert time.monotonic() < deadline, "the webhook did not recover"
        time.sleep(0.5)
    assert response.get_json()["status"] == "applied"
    assert story.stored(story.id("checkout.session.completed")) == ("applied", None)
    assert story.scalar("select balance from public.credits where user_id = %s") == 100


def test_closed_port_is_503(make_app: Callable[..., Flask], story: Story) -> None:
    url = f"postgresql://{LOGIN_ROLE}@127.0.0.1:{_free_port()}/paycore?connect_timeout=2"
    client = _app(make_app, url, DB_POOL_TIMEOUT="1").test_client()
    body = story.body("customer.updated")
    response = client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 503 and response.get_json() == {"error": "unavailable"}


def test_database_error_is_503_with_a_log_line(
    make_app: Callable[..., Flask], story: Story, stripe_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not execute apply_stripe_event: a database-side problem, 503, logged."""
    outsider = "paycore_webhook_test_outsider"
    with psycopg.connect(stripe_db, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", (outsider,)).fetchone():
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(outsider)))
        conn.execute(
            sql.SQL("alter role {} login password {}").format(sql.Identifier(outsider), LOGIN_PASSWORD)
        )
    url = psycopg.conninfo.make_conninfo(stripe_db, user=outsider, password=LOGIN_PASSWORD)
    client = _app(make_app, url).test_client()
    body = story.body("customer.updated")
    with caplog.at_level(logging.INFO, logger="paycore.webhook"):
        response = client.post("/stripe/webhook", data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 503 and response.get_json() == {"error": "database_error"}
    assert any("database error" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert story.stored(story.id("customer.updated")) is None
