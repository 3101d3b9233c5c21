"""A loopback stand-in of the Stripe API for tests: never the internet.

``StripeStandin`` is a tiny threaded ``http.server`` on 127.0.0.1 (a free port) that records
every request and answers:

- ``POST /v1/checkout/sessions``: a Checkout Session ``{id: cs_test_..., object, url,
  expires_at, mode, metadata, client_reference_id, ...}`` built from the form it received
  (the same idempotency key again answers the same session, as Stripe does);
- ``GET /v1/events``: the events given with ``add_event``/``events``, newest first, paged
  as Stripe does (``limit``, ``starting_after``, ``ending_before``, ``created[gte|gt|lte|lt]``,
  ``type``) as ``{object: list, url, data, has_more}``;
- anything else 404 in Stripe's error shape; no ``Authorization: Bearer`` 401.

``fail(mode, times=None)`` makes the next requests (all, or ``times`` of them) fail:
``500`` (api_error), ``402`` (card_error), ``400`` (invalid_request_error) or ``close`` (the
connection is closed without an answer). ``reset()`` clears failures and records.

Usage::

    with StripeStandin() as standin:
        settings = {"STRIPE_API_BASE": standin.url, "STRIPE_SECRET_KEY": "sk_test_x"}
        ...
        standin.requests[-1].form["metadata[checkout_id]"]
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Recorded", "StripeStandin"]

ERRORS = {
    "500": (500, {"type": "api_error", "message": "stand-in: internal error"}),
    "402": (402, {"type": "card_error", "code": "card_declined", "message": "stand-in: declined"}),
    "400": (400, {"type": "invalid_request_error", "message": "stand-in: invalid request"}),
}


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


class StripeStandin:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.events: list[dict[str, Any]] = []  # any order; listed newest first
        self.sessions: dict[str, dict[str, Any]] = {}  # by idempotency key
        self._failures: list[tuple[str, int | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    base = url  # the name tests/test_stripe_replay.py's own stand-in uses

    def start(self) -> StripeStandin:
        self._thread = threading.Thread(target=self._server.serve_forever, name="stripe-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> StripeStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ---

    def fail(self, mode: str, times: int | None = None) -> None:
        """The next ``times`` requests (all while set, if None) fail with ``mode``."""
        if mode not in ERRORS and mode != "close":
            raise ValueError(f"unknown failure mode {mode!r}")
        with self._lock:
            self._failures = [(mode, times)]

    def reset(self) -> None:
        with self._lock:
            self._failures = []
            self.requests.clear()

    def add_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def received(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # --- internals ---

    def _next_failure(self) -> str | None:
        with self._lock:
            if not self._failures:
                return None
            mode, times = self._failures[0]
            if times is not None:
                if times <= 1:
                    self._failures = []
                else:
                    self._failures = [(mode, times - 1)]
            return mode

    def _create_session(self, recorded: Recorded) -> dict[str, Any]:
        key = recorded.idempotency_key
        with self._lock:
            if key and key in self.sessions:
                return self.sessions[key]
        form = recorded.form
        metadata = {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")}
        session_id = "cs_test_" + secrets.token_hex(16)
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "created": now,
            "expires_at": int(form.get("expires_at") or now + 86400),
            "mode": form.get("mode"),
            "status": "open",
            "payment_status": "unpaid",
            "client_reference_id": form.get("client_reference_id"),
            "metadata": metadata,
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "livemode": False,
        }
        with self._lock:
            if key:
                self.sessions[key] = session
        return session

    def _list_events(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            events = sorted(self.events, key=lambda e: (e.get("created", 0), e.get("id", "")), reverse=True)
        filters = {"gte": lambda c, v: c >= v, "gt": lambda c, v: c > v,
                   "lte": lambda c, v: c <= v, "lt": lambda c, v: c < v}
        for op, test in filters.items():
            bound = query.get(f"created[{op}]")
            if bound is not None:
                events = [e for e in events if test(int(e.get("created", 0)), int(bound))]
        if "created" in query:
            events = [e for e in events if int(e.get("created", 0)) == int(query["created"])]
        if "type" in query:
            events = [e for e in events if e.get("type") == query["type"]]
        ids = [e.get("id") for e in events]
        if query.get("starting_after") in ids:
            events = events[ids.index(query["starting_after"]) + 1:]
        elif query.get("ending_before") in ids:
            events = events[:ids.index(query["ending_before"])]
        limit = max(1, min(100, int(query.get("limit") or 10)))
        if query.get("ending_before") and not query.get("starting_after"):
            page = events[-limit:]
            has_more = len(events) > limit
        else:
            page = events[:limit]
            has_more = len(events) > limit
        return {"object": "list", "url": "/v1/events", "data": page, "has_more": has_more}


def _handler(standin: StripeStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _record(self) -> Recorded:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                form=dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)),
            )
            with standin._lock:
                standin.requests.append(recorded)
            return recorded

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_standin_" + secrets.token_hex(6))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            recorded = self._record()
            failure = standin._next_failure()
            if failure == "close":
                self.close_connection = True
                self.connection.close()
                return
            if failure is not None:
                status, error = ERRORS[failure]
                self._answer(status, {"error": error})
                return
            if not recorded.headers.get("authorization", "").startswith("Bearer "):
                self._answer(401, {"error": {"type": "invalid_request_error", "message": "no API key"}})
                return
            if recorded.method == "POST" and recorded.path == "/v1/checkout/sessions":
                self._answer(200, standin._create_session(recorded))
            elif recorded.method == "GET" and recorded.path == "/v1/events":
                try:
                    self._answer(200, standin._list_events(recorded.query))
                except ValueError:
                    self._answer(400, {"error": {"type": "invalid_request_error", "message": "bad query"}})
            else:
                self._answer(404, {"error": {"type": "invalid_request_error", "message": "unknown path"}})

        do_GET = _handle
        do_POST = _handle
        do_DELETE = _handle

    return Handler
