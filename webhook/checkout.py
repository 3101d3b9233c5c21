"""POST /checkout: a signed-in user begins a Stripe Checkout for a credit package or a price.

The handler decides nothing about what may be bought. It:

1. verifies the caller's Supabase access token (``Authorization: Bearer <jwt>``, HS256 with
   SUPABASE_JWT_SECRET, unexpired, ``aud`` SUPABASE_JWT_AUDIENCE, ``role`` authenticated,
   ``sub`` a uuid: the user); any failure is 401;
2. reads the body ``{"package_id": ...}`` (credits) or ``{"price_id": ...}`` (a
   subscription), exactly one of them (else 400), and calls
   ``public.begin_credit_checkout`` / ``public.begin_subscription_checkout`` for the user;
   paycore answers PT409 capacity_exceeded (409, with its figures), PT404 (404), PT400 (400);
3. creates the Checkout Session with the Stripe API (metadata user_id, checkout_id and
   package_id or app_id; client_reference_id the user; idempotency key
   ``paycore-checkout-<checkout id>``; the success and cancel URLs of the configuration,
   never of the body), then ``public.attach_checkout_session``; 200
   ``{"checkout_id", "session_id", "url"}``. When Stripe fails, the reservation is released
   (``public.release_credit_checkout``) and the answer is 502.

503 when the route is not configured (``misconfigured``) or the database is unavailable.
One JSON log line per request (logger ``paycore.webhook``, ``"msg": "checkout"``): user,
checkout, outcome, status, duration. Never the token, a secret or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from datetime import datetime
from typing import Any

import psycopg
import stripe
from flask import Flask, Response, jsonify, request
from psycopg.rows import dict_row

from webhook.config import Settings

request_logger = logging.getLogger("paycore.webhook")

ROUTE = "/checkout"
# Seconds a token's exp (and nbf) may be off, for clocks that differ a little.
JWT_LEEWAY = 30
MAX_TOKEN_LENGTH = 8192
MAX_ID_LENGTH = 255
SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")
UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FIELDS = frozenset({"package_id", "price_id"})


class Rejected(Exception):
    """A request answered with an error status; ``error`` is the JSON error code."""

    def __init__(
        self, status: int, error: str, detail: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra or {}


def register(app: Flask, settings: Settings) -> None:
    app.add_url_rule(ROUTE, "checkout", checkout, methods=["POST"])


def checkout() -> tuple[Response, int]:
    from webhook.app import database, get_services

    started = time.monotonic()
    settings = get_services().settings
    record: dict[str, Any] = {"user": None, "checkout": None, "mode": None, "outcome": None}
    try:
        if not settings.checkout_configured:
            raise Rejected(503, "misconfigured", "checkout settings are missing")
        user = verify_token(_bearer(), settings)
        record["user"] = user
        package_id, price_id = _body()
        row = _begin(database, settings, user, package_id, price_id)
        record["checkout"], record["mode"] = str(row["id"]), row["mode"]
        session = _create_session(database, settings, row, user, price_id)
        record["session"] = session["id"]
        _attach(database, settings, row, session)
        status, record["outcome"] = 200, "created"
        response = jsonify(checkout_id=str(row["id"]), session_id=session["id"], url=session.get("url"))
    except Rejected as exc:
        status, record["outcome"] = exc.status, exc.error
        if exc.detail:
            record["detail"] = exc.detail
        response = jsonify(error=exc.error, **exc.extra)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    record["status"] = status
    record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    request_logger.info(json.dumps({"msg": "checkout", **record}, default=str))
    return response, status


# --- the token ------------------------------------------------------------------------


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "missing_token")
    return token.strip()


def _b64decode(segment: str) -> bytes:
    if not SEGMENT.match(segment):
        raise Rejected(401, "invalid_token", "not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Rejected(401, "invalid_token", "not base64url") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected(401, "invalid_token", f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(401, "invalid_token", f"the {what} is not a JSON object")
    return value


def _number(value: Any) -> bool:
    # Finite only: json.loads reads NaN and Infinity, and an exp of NaN would never expire.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verify_token(token: str, settings: Settings, now: float | None = None) -> str:
    """The user id (``sub``) of a valid Supabase access token; Rejected(401) otherwise."""
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise Rejected(401, "invalid_token", "malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise Rejected(401, "invalid_token", "malformed")
    header = _json_object(_b64decode(parts[0]), "header")
    # Only HS256: never none, never an algorithm the token chooses.
    if header.get("alg") != "HS256":
        raise Rejected(401, "invalid_token", "algorithm not HS256")
    if "crit" in header:
        raise Rejected(401, "invalid_token", "critical header parameters")
    secret = (settings.supabase_jwt_secret or "").encode("utf-8")
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64decode(parts[2])):
        raise Rejected(401, "invalid_token", "bad signature")
    claims = _json_object(_b64decode(parts[1]), "payload")

    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not _number(exp):
        raise Rejected(401, "invalid_token", "no exp")
    if exp + JWT_LEEWAY <= now:
        raise Rejected(401, "invalid_token", "expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _number(nbf) or nbf - JWT_LEEWAY > now):
        raise Rejected(401, "invalid_token", "not yet valid")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if settings.supabase_jwt_audience not in [a for a in audiences if isinstance(a, str)]:
        raise Rejected(401, "invalid_token", "wrong audience")
    if claims.get("role") != "authenticated":
        raise Rejected(401, "invalid_token", "role is not authenticated")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not UUID_TEXT.match(sub):
        raise Rejected(401, "invalid_token", "sub is not a uuid")
    return str(uuid.UUID(sub))


# --- the body -------------------------------------------------------------------------


def _body() -> tuple[str | None, str | None]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Rejected(400, "invalid_body", "the body is not a JSON object")
    unexpected = set(body) - FIELDS
    if unexpected:
        # success and cancel URLs come from the configuration only (no open redirect).
        raise Rejected(400, "unexpected_field", ", ".join(sorted(unexpected))[:200])
    given = {key: body[key] for key in FIELDS if body.get(key) is not None}
    if len(given) != 1:
        raise Rejected(400, "invalid_body", "exactly one of package_id and price_id")
    for key, value in given.items():
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
            raise Rejected(400, "invalid_body", f"{key} must be a non-empty string")
    return given.get("package_id"), given.get("price_id")


# --- SQL ------------------------------------------------------------------------------


def _call(database: Any, settings: Settings, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
    """One SQL function call in its own transaction, paycore's refusals mapped to statuses."""
    timeout_ms = f"{max(1, int(settings.stripe_statement_timeout * 1000))}ms"
    try:
        with database() as conn, conn.transaction():
            conn.execute("select set_config('statement_timeout', %s, true)", (timeout_ms,))
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(query, params).fetchone()
    except psycopg.OperationalError as exc:  # down, lost, pool or statement timeout
        request_logger.warning("checkout: database unavailable: %s: %s", type(exc).__name__, exc)
        raise Rejected(503, "unavailable") from None
    except psycopg.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        diag = exc.diag
        hint = diag.message_hint or ""
        if sqlstate == "PT409" and hint == "capacity_exceeded":
            figures: dict[str, Any] = {}
            try:
                detail = json.loads(diag.message_detail or "{}")
                if isinstance(detail, dict):
                    figures = {k: detail.get(k) for k in ("capacity", "sold", "reserved", "requested")}
            except ValueError:
                pass
            raise Rejected(409, "capacity_exceeded", sqlstate, figures) from None
        if sqlstate == "PT409":
            raise Rejected(409, hint or "conflict", sqlstate) from None
        if sqlstate == "PT404":
            raise Rejected(404, "not_found", (diag.message_primary or "")[:200]) from None
        if sqlstate == "PT400" or sqlstate.startswith("22"):
            raise Rejected(400, "invalid_argument", (diag.message_primary or "")[:200]) from None
        # PT403 (the login is not a member of paycore_webhook), a privilege, a bug: not the
        # caller's fault.
        request_logger.error("checkout: database error %s (%s): %.200s", type(exc).__name__, sqlstate, exc)
        raise Rejected(503, "database_error", sqlstate) from None
    if row is None:
        raise Rejected(503, "database_error", "no row")
    return row


def _begin(
    database: Any, settings: Settings, user: str, package_id: str | None, price_id: str | None
) -> dict[str, Any]:
    if package_id is not None:
        return _call(
            database, settings, "select * from public.begin_credit_checkout(%s, %s)", (user, package_id)
        )
    return _call(
        database, settings, "select * from public.begin_subscription_checkout(%s, %s)", (user, price_id)
    )


def _attach(database: Any, settings: Settings, row: dict[str, Any], session: dict[str, Any]) -> None:
    expires_at = session.get("expires_at")
    expires = None
    if _number(expires_at):
        try:
            expires = datetime.fromtimestamp(expires_at, tz=row["expires_at"].tzinfo)
        except (OverflowError, OSError, ValueError):
            expires = None
    _call(
        database,
        settings,
        "select * from public.attach_checkout_session(%s, %s, %s)",
        (row["id"], session["id"], expires),
    )


def _release(database: Any, settings: Settings, row: dict[str, Any]) -> None:
    try:
        _call(database, settings, "select * from public.release_credit_checkout(%s)", (row["id"],))
    except Rejected as exc:
        # The reservation lapses at expires_at anyway; the caller still gets the 502.
        request_logger.error("checkout: could not release %s: %s (%s)", row["id"], exc.error, exc.detail)


# --- Stripe ---------------------------------------------------------------------------


def _client(settings: Settings) -> stripe.StripeClient:
    kwargs: dict[str, Any] = {}
    if settings.stripe_api_base:
        kwargs["base_addresses"] = {"api": settings.stripe_api_base.rstrip("/")}
    return stripe.StripeClient(
        settings.stripe_secret_key or "",
        max_network_retries=settings.stripe_max_network_retries,
        http_client=stripe.new_default_http_client(timeout=settings.stripe_timeout),
        **kwargs,
    )


def session_params(
    row: dict[str, Any], user: str, price_id: str | None, settings: Settings
) -> dict[str, Any]:
    """The Checkout Session parameters of a checkout paycore began (the README's metadata contract)."""
    checkout_id = str(row["id"])
    params: dict[str, Any] = {
        "mode": row["mode"],
        "client_reference_id": user,
        "success_url": settings.checkout_success_url,
        "cancel_url": settings.checkout_cancel_url,
        # Stripe refuses an expires_at more than 24 hours ahead of its clock: 5 minutes of
        # margin for a database clock that runs ahead (the reservation ends at the earlier).
        "expires_at": min(int(row["expires_at"].timestamp()), int(time.time()) + 24 * 3600 - 300),
    }
    if row["mode"] == "payment":
        credits = row["credits"]
        params["line_items"] = [
            {
                "price_data": {
                    "currency": row["currency"],
                    "unit_amount": row["amount_total"],
                    "product_data": {"name": f"{credits} credits ({row['package_id']})"},
                },
                "quantity": 1,
            }
        ]
        params["metadata"] = {"user_id": user, "checkout_id": checkout_id, "package_id": row["package_id"]}
    else:
        params["line_items"] = [{"price": price_id, "quantity": 1}]
        params["metadata"] = {"user_id": user, "checkout_id": checkout_id, "app_id": row["app_id"]}
        params["subscription_data"] = {"metadata": {"user_id": user, "app_id": row["app_id"]}}
    return params


def _create_session(
    database: Any, settings: Settings, row: dict[str, Any], user: str, price_id: str | None
) -> dict[str, Any]:
    params = session_params(row, user, price_id, settings)
    try:
        session = _client(settings).v1.checkout.sessions.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"paycore-checkout-{row['id']}"},
        )
        session_id = getattr(session, "id", None)
        url = getattr(session, "url", None)
        expires_at = getattr(session, "expires_at", None)
        if not isinstance(session_id, str) or not session_id.startswith("cs_"):
            raise ValueError("the answer has no Checkout Session id")
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, nothing can be paid
        if isinstance(exc, stripe.StripeError):
            detail = f"{type(exc).__name__} http_status={exc.http_status} code={exc.code}"
        else:
            detail = type(exc).__name__
        request_logger.warning("checkout: Stripe API failed for %s: %s", row["id"], detail)
        _release(database, settings, row)
        raise Rejected(502, "stripe_unavailable", detail) from None
    return {"id": session_id, "url": url, "expires_at": expires_at}
