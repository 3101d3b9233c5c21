"""POST /stripe/webhook: verify Stripe's signature, hand the event to paycore.apply_stripe_event.

The handler decides nothing about an event's meaning. It answers:

- 200 ``{"status": applied|duplicate|ignored|failed, "event", "type"}``: what SQL returned
  (``failed`` is stored with its reason and acknowledged: a retry cannot help), or
  ``ignored`` without calling SQL for an event of the other mode (STRIPE_LIVEMODE);
- 400 ``{"error": ...}``: no or a bad signature, a timestamp outside the tolerance, a body
  that is not UTF-8 JSON object text, or one SQL refuses as not a Stripe event (PT400);
- 413 beyond WEBHOOK_MAX_BODY; 503 when no secret is configured (``misconfigured``) or the
  database is unavailable or failed (Stripe retries; nothing was stored).

One JSON log line per request (logger ``paycore.webhook``): event id, type, outcome, status,
duration. Never the payload, the signature or a secret.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import psycopg
import stripe
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from webhook.config import Settings

request_logger = logging.getLogger("paycore.webhook")

ROUTE = "/stripe/webhook"
SIGNATURE_HEADER = "Stripe-Signature"
# SQLSTATE of paycore's "invalid argument" refusal: not a Stripe event at all.
NOT_AN_EVENT = "PT400"
OUTCOMES = frozenset({"applied", "duplicate", "ignored", "failed"})


class Rejected(Exception):
    """A request answered with an error status; ``error`` is the JSON error code."""

    def __init__(self, status: int, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def register(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_body
    app.add_url_rule(ROUTE, "stripe_webhook", stripe_webhook, methods=["POST"])
    _ensure_log_handler()


def _ensure_log_handler() -> None:
    """Request lines go to stderr (gunicorn's error log) unless logging is configured."""
    request_logger.setLevel(logging.INFO)
    if not request_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_logger.addHandler(handler)


def stripe_webhook() -> Response | tuple[Response, int]:
    from webhook.app import database, get_services

    started = time.monotonic()
    settings = get_services().settings
    record: dict[str, Any] = {"event": None, "type": None, "outcome": None}
    try:
        if not settings.stripe_webhook_secrets:
            raise Rejected(503, "misconfigured", "STRIPE_WEBHOOK_SECRET is not set")
        text = _read_body(settings)
        _verify(text, settings)
        event = _parse(text)
        record["event"] = event.get("id") if isinstance(event.get("id"), str) else None
        record["type"] = event.get("type") if isinstance(event.get("type"), str) else None
        # A livemode that is not true is test mode, as the event store records it.
        livemode = event.get("livemode") is True
        if settings.stripe_livemode is not None and livemode != settings.stripe_livemode:
            outcome = "ignored"
            record["reason"] = "livemode_mismatch"
        else:
            outcome = _apply(text, settings, database)
        record["outcome"] = outcome
        status = 200
        response = jsonify(status=outcome, event=record["event"], type=record["type"])
    except Rejected as exc:
        status, record["outcome"] = exc.status, exc.error
        if exc.detail:
            record["detail"] = exc.detail
        response = jsonify(error=exc.error)
    record["status"] = status
    record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    request_logger.info(json.dumps({"msg": "stripe_webhook", **record}, default=str))
    return response, status


def _read_body(settings: Settings) -> str:
    length = request.content_length
    if length is not None and length > settings.webhook_max_body:
        raise Rejected(413, "request_entity_too_large")
    try:
        payload = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise Rejected(413, "request_entity_too_large") from None
    if len(payload) > settings.webhook_max_body:
        raise Rejected(413, "request_entity_too_large")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "invalid_body", "the body is not UTF-8") from None


def _verify(text: str, settings: Settings) -> None:
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise Rejected(400, "missing_signature")
    # Werkzeug gives header bytes as latin-1; a real signature is ASCII (and hmac's
    # compare_digest refuses non-ASCII text).
    if not header.isascii() or len(header) > 4096:
        raise Rejected(400, "invalid_signature", "the signature header is not ASCII")
    tolerance = settings.stripe_webhook_tolerance
    for secret in settings.stripe_webhook_secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            if "tolerance" in str(exc):
                raise Rejected(400, "timestamp_outside_tolerance") from None
            continue
        except (TypeError, ValueError):  # a header the library cannot even read
            continue
        # The library checks only a timestamp too old; one far in the future is refused too.
        timestamp = _timestamp(header)
        if timestamp is None or timestamp > time.time() + tolerance:
            raise Rejected(400, "timestamp_outside_tolerance")
        return
    raise Rejected(400, "invalid_signature")


def _timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(text: str) -> dict[str, Any]:
    try:
        # NaN and Infinity are not JSON (jsonb refuses them).
        event = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Rejected(400, "invalid_json") from None
    if not isinstance(event, dict):
        raise Rejected(400, "not_an_event", "the body is not a JSON object")
    return event


def _apply(text: str, settings: Settings, database: Any) -> str:
    timeout_ms = f"{max(1, int(settings.stripe_statement_timeout * 1000))}ms"
    try:
        with database() as conn, conn.transaction():
            conn.execute("select set_config('statement_timeout', %s, true)", (timeout_ms,))
            row = conn.execute("select paycore.apply_stripe_event(%s::jsonb)", (text,)).fetchone()
    except psycopg.OperationalError as exc:  # down, lost, pool or statement timeout
        request_logger.warning("stripe webhook: database unavailable: %s: %s", type(exc).__name__, exc)
        raise Rejected(503, "unavailable") from None
    except psycopg.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate == NOT_AN_EVENT:
            raise Rejected(400, "not_an_event", f"sqlstate {sqlstate}") from None
        if sqlstate.startswith("22"):
            # The text is JSON to Python but not to jsonb (\u0000, a lone surrogate): the
            # same body will never be accepted.
            raise Rejected(400, "invalid_json", f"sqlstate {sqlstate}") from None
        if sqlstate.startswith("23"):
            # An envelope the event store's constraints refuse (a type over 100 characters):
            # permanent, as PT400 is.
            raise Rejected(400, "not_an_event", f"sqlstate {sqlstate}") from None
        # A problem on the database's side (a privilege, a bug): Stripe retries meanwhile.
        request_logger.error(
            "stripe webhook: database error %s (%s): %.200s", type(exc).__name__, sqlstate, exc
        )
        raise Rejected(503, "database_error") from None
    outcome = row[0] if row else None
    if outcome not in OUTCOMES:
        request_logger.error("stripe webhook: apply_stripe_event returned %r", outcome)
        raise Rejected(503, "database_error")
    return str(outcome)
