"""POST /checkout: the Supabase token, the body, paycore's refusals, the Stripe API (a stand-in).

The module builds a database of its own and runs gunicorn logged in as a member of
paycore_webhook (never the owner), with the Stripe API pointed at a loopback stand-in
(tests/stripe_standin.py): never the internet. Each test signs in a fresh auth user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from stripe_standin import StripeStandin
from stripe_testing import PRICE, gunicorn, request, stripe_database, webhook_login

from webhook.app import create_app, get_services

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
STRIPE_KEY = "sk_test_" + "x" * 24
PACKAGE = "pkg_100_credits"
SUCCESS_URL = "https://app.example.com/checkout/success?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://app.example.com/checkout/cancel"
LOGIN_ROLE = "paycore_checkout_test_login"
LOGIN_PASSWORD = "paycore-checkout-test"


# --- tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(
    claims: dict[str, Any], secret: str = JWT_SECRET, header: dict[str, Any] | None = None, sign: bool = True
) -> str:
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    if not sign:
        return f"{head}.{body}."
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def claims_of(user: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "aud": "authenticated",
        "role": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "https://project.supabase.co/auth/v1",
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


# --- database, stand-in, gunicorn ----------------------------------------------------


@pytest.fixture(scope="module")
def checkout_db(make_database: Callable[[str], str]) -> str:
    return stripe_database(make_database, "checkout")


@pytest.fixture(scope="module")
def login_db(checkout_db: str) -> str:
    """A login member of paycore_webhook."""
    return webhook_login(checkout_db, LOGIN_ROLE, LOGIN_PASSWORD)


@pytest.fixture(scope="module")
def standin() -> Iterator[StripeStandin]:
    with StripeStandin() as s:
        yield s


@pytest.fixture()
def stand(standin: StripeStandin) -> Iterator[StripeStandin]:
    standin.reset()
    yield standin
    standin.reset()


@pytest.fixture(scope="module")
def server(
    login_db: str, standin: StripeStandin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("checkout-gunicorn")
    env = {
        "DATABASE_URL": login_db,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": standin.url,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "STRIPE_TIMEOUT": "5",
        "CHECKOUT_SUCCESS_URL": SUCCESS_URL,
        "CHECKOUT_CANCEL_URL": CANCEL_URL,
    }
    with gunicorn(env, tmp, threads=4) as base:
        yield base + "/checkout", tmp / "gunicorn.log"


@pytest.fixture()
def owner(checkout_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(checkout_db, autocommit=True) as c:
        yield c


@pytest.fixture()
def user(owner: psycopg.Connection[Any]) -> str:
    uid = str(uuid.uuid4())
    owner.execute("insert into auth.users (id, email) values (%s, %s)", (uid, f"{uid}@example.com"))
    return uid


def post(url: str, body: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request("POST", url, data, headers)


def reserved(owner: psycopg.Connection[Any]) -> int:
    row = owner.execute("select public.get_platform_credit_status()").fetchone()
    assert row is not None
    return int(row[0]["reserved"])


def checkout_row(owner: psycopg.Connection[Any], checkout_id: str) -> dict[str, Any]:
    with owner.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("select * from public.checkout_sessions where id = %s", (checkout_id,)).fetchone()
    assert row is not None
    return row


# --- through gunicorn -------------------------------------------------------------------


def test_credit_checkout(
    server: tuple[str, Path], stand: StripeStandin, owner: psycopg.Connection[Any], user: str
) -> None:
    url, log_path = server
    before = reserved(owner)
    token = make_token(claims_of(user))
    status, answer = post(url, {"package_id": PACKAGE}, token)
    assert status == 200, answer
    assert set(answer) == {"checkout_id", "session_id", "url"}
    assert answer["session_id"].startswith("cs_test_") and answer["url"].startswith("https://")

    (sent,) = stand.received("POST", "/v1/checkout/sessions")
    form = sent.form
    assert sent.headers["authorization"] == f"Bearer {STRIPE_KEY}"
    assert sent.idempotency_key == f"paycore-checkout-{answer['checkout_id']}"
    assert form["mode"] == "payment"
    assert form["client_reference_id"] == user
    assert form["metadata[user_id]"] == user
    assert form["metadata[checkout_id]"] == answer["checkout_id"]
    assert form["metadata[package_id]"] == PACKAGE
    assert "metadata[app_id]" not in form
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][price_data][unit_amount]"] == "1000"
    assert form["line_items[0][price_data][product_data][name]"]
    assert form["line_items[0][quantity]"] == "1"
    assert form["success_url"] == SUCCESS_URL and form["cancel_url"] == CANCEL_URL

    row = checkout_row(owner, answer["checkout_id"])
    assert row["stripe_session_id"] == answer["session_id"]
    assert row["user_id"] == uuid.UUID(user)
    assert row["reservation"] == "reserved" and row["credits"] == 100 and row["status"] == "open"
    assert int(form["expires_at"]) == int(row["expires_at"].timestamp())
    assert reserved(owner) == before + 100

    # One JSON log line, without the token or a key.
    time.sleep(0.2)
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith('{"msg": "checkout"')]
    (line,) = [entry for entry in lines if entry.get("checkout") == answer["checkout_id"]]
    assert line["user"] == user and line["outcome"] == "created" and line["status"] == 200
    assert "duration_ms" in line
    assert token not in text and token.split(".")[2] not in text
    assert STRIPE_KEY not in text and JWT_SECRET not in text


def test_subscription_checkout(
    server: tuple[str, Path], stand: StripeStandin, owner: psycopg.Connection[Any], user: str
) -> None:
    url, _ = server
    before = reserved(owner)
    status, answer = post(url, {"price_id": PRICE}, make_token(claims_of(user)))
    assert status == 200, answer
    (sent,) = stand.received("POST", "/v1/checkout/sessions")
    form = sent.form
    assert form["mode"] == "subscription"
    assert form["line_items[0][price]"] == PRICE and form["line_items[0][quantity]"] == "1"
    assert form["metadata[user_id]"] == user and form["metadata[app_id]"] == "cv"
    assert form["metadata[checkout_id]"] == answer["checkout_id"]
    assert "metadata[package_id]" not in form
    assert form["subscription_data[metadata][user_id]"] == user
    assert form["subscription_data[metadata][app_id]"] == "cv"
    assert sent.idempotency_key == f"paycore-checkout-{answer['checkout_id']}"
    row = checkout_row(owner, answer["checkout_id"])
    assert row["mode"] == "subscription" and row["stripe_session_id"] == answer["session_id"]
    assert reserved(owner) == before


def _bad_tokens(user: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": make_token(claims_of(user, exp=now - 120)),
        "wrong_signature": make_token(claims_of(user), secret="another-secret-of-another-project-xxxxxx"),
        "alg_none": make_token(claims_of(user), header={"alg": "none", "typ": "JWT"}, sign=False),
        "alg_none_signed": make_token(claims_of(user), header={"alg": "none", "typ": "JWT"}),
        "alg_hs512": make_token(claims_of(user), header={"alg": "HS512", "typ": "JWT"}),
        "wrong_aud": make_token(claims_of(user, aud="anon")),
        "wrong_aud_list": make_token(claims_of(user, aud=["other", "anon"])),
        "missing_aud": make_token(claims_of(user, aud=None)),
        "missing_sub": make_token(claims_of(user, sub=None)),
        "sub_not_uuid": make_token(claims_of(user, sub="not-a-uuid")),
        "role_anon": make_token(claims_of(user, role="anon")),
        "role_service": make_token(claims_of(user, role="service_role")),
        "missing_exp": make_token(claims_of(user, exp=None)),
        "not_yet_valid": make_token(claims_of(user, nbf=now + 3600)),
        "tampered": make_token(claims_of(user)).replace(".", ".x", 1),
        "garbage": "not-a-jwt",
    }


def test_bad_tokens_are_401(
    server: tuple[str, Path], stand: StripeStandin, owner: psycopg.Connection[Any], user: str
) -> None:
    url, _ = server
    before = owner.execute("select count(*) from public.checkout_sessions").fetchone()
    for name, token in _bad_tokens(user).items():
        status, answer = post(url, {"package_id": PACKAGE}, token)
        assert status == 401, (name, answer)
        assert "error" in answer, name
    assert post(url, {"package_id": PACKAGE}, None)[0] == 401
    headers = {"Content-Type": "application/json", "Authorization": "Basic abc"}
    status, _ = request("POST", url, b'{"package_id": "x"}', headers)
    assert status == 401
    assert stand.requests == []
    assert owner.execute("select count(*) from public.checkout_sessions").fetchone() == before


def test_accepted_token_variants(server: tuple[str, Path], stand: StripeStandin, user: str) -> None:
    url, _ = server
    now = int(time.time())
    # aud as a list; exp a few seconds ago is within the leeway.
    for claims in (claims_of(user, aud=["other", "authenticated"]), claims_of(user, exp=now - 5)):
        status, answer = post(url, {"price_id": PRICE}, make_token(claims))
        assert status == 200, answer


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"package_id": PACKAGE, "price_id": PRICE},
        {"package_id": ""},
        {"package_id": 5},
        {"price_id": None},
        {"package_id": PACKAGE, "success_url": "https://evil.example.com"},
        [PACKAGE],
        b"not json",
    ],
)
def test_bad_bodies_are_400(server: tuple[str, Path], stand: StripeStandin, user: str, body: Any) -> None:
    url, _ = server
    status, answer = post(url, body, make_token(claims_of(user)))
    assert status == 400, answer
    assert stand.requests == []


def test_unknown_package_and_price_are_404(server: tuple[str, Path], stand: StripeStandin, user: str) -> None:
    url, _ = server
    token = make_token(claims_of(user))
    assert post(url, {"package_id": "pkg_does_not_exist"}, token) == (404, {"error": "not_found"})
    assert post(url, {"price_id": "price_unknown"}, token) == (404, {"error": "not_found"})
    # A valid token of a user paycore does not know.
    assert post(url, {"package_id": PACKAGE}, make_token(claims_of(str(uuid.uuid4()))))[0] == 404
    assert stand.requests == []


def test_capacity_exceeded_is_409(
    server: tuple[str, Path], stand: StripeStandin, owner: psycopg.Connection[Any], user: str
) -> None:
    url, _ = server
    row = owner.execute(
        "select value from paycore.settings where key = 'platform_credit_capacity'"
    ).fetchone()
    assert row is not None
    original = json.dumps(row[0])
    owner.execute("update paycore.settings set value = '0' where key = 'platform_credit_capacity'")
    try:
        before = reserved(owner)
        status, answer = post(url, {"package_id": PACKAGE}, make_token(claims_of(user)))
        assert status == 409, answer
        assert answer["error"] == "capacity_exceeded"
        assert answer["capacity"] == 0 and answer["requested"] == 100
        assert answer["reserved"] == before and "sold" in answer
        assert reserved(owner) == before
    finally:
        owner.execute(
            "update paycore.settings set value = %s::jsonb where key = 'platform_credit_capacity'",
            (original,),
        )
    assert stand.requests == []


@pytest.mark.parametrize("mode", ["500", "402", "close"])
def test_stripe_failure_is_502_and_releases(
    server: tuple[str, Path], stand: StripeStandin, owner: psycopg.Connection[Any], user: str, mode: str
) -> None:
    url, _ = server
    before = reserved(owner)
    stand.fail(mode)
    status, answer = post(url, {"package_id": PACKAGE}, make_token(claims_of(user)))
    assert status == 502, answer
    assert answer == {"error": "stripe_unavailable"}
    assert len(stand.received("POST", "/v1/checkout/sessions")) == 1
    assert reserved(owner) == before
    row = owner.execute(
        "select status, reservation, stripe_session_id from public.checkout_sessions "
        "where user_id = %s",
        (user,),
    ).fetchone()
    assert row == ("expired", "released", None)

    # Stripe back: the same user checks out.
    stand.reset()
    status, answer = post(url, {"package_id": PACKAGE}, make_token(claims_of(user)))
    assert status == 200, answer
    assert reserved(owner) == before + 100


# --- Flask test client: configuration ---------------------------------------------------


def test_misconfigured_is_503(checkout_db: str) -> None:
    app = create_app({"TESTING": True, "DATABASE_URL": checkout_db, "SUPABASE_JWT_SECRET": JWT_SECRET})
    try:
        response = app.test_client().post("/checkout", json={"package_id": PACKAGE})
        assert response.status_code == 503
        assert response.get_json() == {"error": "misconfigured"}
    finally:
        get_services(app).pool.close()


def test_settings_refuse_bad_values(checkout_db: str) -> None:
    from webhook.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="CHECKOUT_SUCCESS_URL"):
        Settings.load({"DATABASE_URL": checkout_db, "CHECKOUT_SUCCESS_URL": "/relative"}, environ={})
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY") as info:
        Settings.load({"DATABASE_URL": checkout_db, "STRIPE_SECRET_KEY": "pk_test_123"}, environ={})
    assert "pk_test_123" not in str(info.value)
    settings = Settings.load({"DATABASE_URL": checkout_db, "SUPABASE_JWT_SECRET": JWT_SECRET}, environ={})
    assert settings.supabase_jwt_audience == "authenticated" and not settings.checkout_configured
    assert JWT_SECRET not in repr(settings)


def test_standin_lists_events_in_pages(stand: StripeStandin) -> None:
    import stripe

    for index in range(5):
        stand.add_event({"id": f"evt_{index}", "object": "event", "created": 1000 + index, "type": "x"})
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stand.url}, max_network_retries=0)
    page = client.v1.events.list(params={"limit": 2, "created": {"gte": 1001}})
    assert [e.id for e in page.data] == ["evt_4", "evt_3"] and page.has_more
    page = client.v1.events.list(params={"limit": 2, "created": {"gte": 1001}, "starting_after": "evt_3"})
    assert [e.id for e in page.data] == ["evt_2", "evt_1"] and not page.has_more
    everything = client.v1.events.list(params={"limit": 2})
    assert [e.id for e in everything.auto_paging_iter()] == [f"evt_{i}" for i in range(4, -1, -1)]
    stand.events.clear()
