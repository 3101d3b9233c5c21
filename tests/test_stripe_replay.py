"""paycore-stripe-replay (webhook/replay.py) against a loopback stand-in of GET /v1/events.

The stand-in (below, not tests/stripe_standin.py: it caps a page at PAGE_SIZE whatever limit
replay asks for, so that one replay reads several pages) serves the fixture events,
rewritten per test (fresh event and object ids, a fresh auth user, recent ``created`` times
in delivery order), newest first, honouring ``created[gte]``, ``limit`` and
``starting_after`` as Stripe does. The database is this module's own (migrations/ with
yoyo); replay connects as a login member of paycore_webhook.
Never the internet.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from stripe_testing import FIXTURES, FLOW, fixture_text, stripe_database, webhook_login

from webhook import replay

ROOT = Path(__file__).resolve().parent.parent
LOGIN_ROLE = "paycore_replay_test_login"
LOGIN_PASSWORD = "paycore-replay-test"
KEY = "sk_test_" + "r" * 24
PAGE_SIZE = 10

# --- the stand-in -----------------------------------------------------------------------


class StandIn:
    """GET /v1/events over loopback; ``events`` may be changed between calls."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, list[str]]] = []
        self.keys: list[str | None] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = parse_qs(url.query)
                standin.requests.append(query)
                standin.keys.append(self.headers.get("Authorization"))
                if url.path != "/v1/events":
                    self._send(404, {"error": {"type": "invalid_request_error", "message": "no route"}})
                    return
                gte = int(query.get("created[gte]", ["0"])[0])
                limit = min(int(query.get("limit", ["10"])[0]), PAGE_SIZE)
                listed = sorted(
                    (e for e in standin.events if e["created"] >= gte), key=lambda e: -e["created"]
                )
                after = query.get("starting_after", [None])[0]
                if after is not None:
                    index = next(i for i, e in enumerate(listed) if e["id"] == after)
                    listed = listed[index + 1:]
                page = listed[:limit]
                self._send(200, {
                    "object": "list", "url": "/v1/events", "has_more": len(listed) > limit, "data": page,
                })

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    s = StandIn()
    yield s
    s.close()


# --- database ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_db(make_database: Any) -> str:
    conninfo = stripe_database(make_database, "stripe_replay")
    webhook_login(conninfo, LOGIN_ROLE, LOGIN_PASSWORD)
    return conninfo


@pytest.fixture()
def owner(replay_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(replay_db, autocommit=True) as c:
        yield c


@pytest.fixture()
def env(replay_db: str, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    login = psycopg.conninfo.make_conninfo(replay_db, user=LOGIN_ROLE, password=LOGIN_PASSWORD)
    monkeypatch.setenv("DATABASE_URL", login)
    monkeypatch.setenv("STRIPE_SECRET_KEY", KEY)
    monkeypatch.setenv("STRIPE_API_BASE", standin.base)
    monkeypatch.setenv("STRIPE_LIVEMODE", "false")
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)


class Story:
    """The fixture events of one test: its own ids, its own user, recent created times."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.user = str(uuid.uuid4())
        self.suffix = uuid.uuid4().hex[:12]
        conn.execute("insert into auth.users (id, email) values (%s, %s)", (self.user, f"{self.user}@e.com"))

    def event(self, name: str, created: int) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(fixture_text(name, self.user, self.suffix))
        event["created"] = created
        return event

    def flow(self, start: int) -> list[dict[str, Any]]:
        return [self.event(name, start + 10 * i) for i, (name, _) in enumerate(FLOW)]

    def stored(self, event_id: str) -> str | None:
        query = "select status from paycore.stripe_events where id = %s"
        row = self.conn.execute(query, (event_id,)).fetchone()
        return str(row[0]) if row else None


@pytest.fixture()
def story(owner: psycopg.Connection[Any]) -> Story:
    return Story(owner)


def outcome_counts(out: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(applied|duplicate|ignored|failed|rejected|events listed): (\d+)$", out, re.M)
    }


NOW = int(time.time())


# --- tests ------------------------------------------------------------------------------


def test_replay_applies_every_page_then_all_duplicate(
    env: None, standin: StandIn, story: Story, capsys: pytest.CaptureFixture[str]
) -> None:
    events = story.flow(NOW - 3600)
    # An event of live mode: skipped, never stored.
    live = story.event("customer.updated", NOW - 60)
    live["id"] = "evt_live" + story.suffix
    live["livemode"] = True
    standin.events = [*events, live]

    assert replay.main(["--hours", "2"]) == 0
    out = capsys.readouterr()
    counts = outcome_counts(out.out)
    assert counts == {"events listed": 24, "applied": 21, "duplicate": 0, "ignored": 1, "failed": 1}, out
    assert "skipped, other livemode: 1" in out.out
    failed_id = events[4]["id"]
    assert f"failed {failed_id} checkout.session.completed:" in out.out
    for event, (name, outcome) in zip(events, FLOW, strict=True):
        assert story.stored(event["id"]) == outcome, name
    assert story.stored(live["id"]) is None
    # Paginated: 24 events in pages of 10, each page after the last id of the one before.
    assert len(standin.requests) == 3
    assert "starting_after" not in standin.requests[0]
    assert standin.requests[1]["starting_after"] == [events[14]["id"]]  # newest first: live, 22..14
    assert standin.requests[2]["starting_after"] == [events[4]["id"]]
    assert all(q["created[gte]"] == [str(int(q["created[gte]"][0]))] for q in standin.requests)
    assert standin.keys[0] == f"Bearer {KEY}"
    # The paid checkout granted its 100 credits once.
    cs = events[0]["data"]["object"]["id"]
    assert story.conn.execute(
        "select amount from public.credit_transactions where idempotency_key = %s",
        (f"paycore:checkout:{cs}:grant",),
    ).fetchone() == (100,)

    assert replay.main([]) == 0
    counts = outcome_counts(capsys.readouterr().out)
    assert counts == {"events listed": 24, "applied": 0, "duplicate": 23, "ignored": 0, "failed": 0}


def test_since_filters_and_older_than_30_days_is_clamped(
    env: None, standin: StandIn, story: Story, capsys: pytest.CaptureFixture[str]
) -> None:
    old = story.event("checkout.session.completed", NOW - 2 * 86400)
    new = story.event("customer.updated", NOW - 600)
    standin.events = [old, new]

    since = datetime.fromtimestamp(NOW - 3600, UTC).isoformat()
    assert replay.main(["--since", since]) == 0
    assert outcome_counts(capsys.readouterr().out) == {
        "events listed": 1, "applied": 0, "duplicate": 0, "ignored": 1, "failed": 0,
    }
    assert standin.requests[-1]["created[gte]"] == [str(NOW - 3600)]
    assert story.stored(old["id"]) is None and story.stored(new["id"]) == "ignored"

    # 40 days back: clamped to Stripe's 30, said so; the older event is now applied.
    naive = (datetime.now(UTC) - timedelta(days=40)).replace(tzinfo=None).isoformat()
    assert replay.main(["--since", naive]) == 0
    out = capsys.readouterr()
    assert "Stripe keeps events for 30 days" in out.err
    gte = int(standin.requests[-1]["created[gte]"][0])
    assert abs(gte - (time.time() - 30 * 86400)) < 120
    assert outcome_counts(out.out) == {
        "events listed": 2, "applied": 1, "duplicate": 1, "ignored": 0, "failed": 0,
    }
    assert story.stored(old["id"]) == "applied"


def test_types_filter_and_dry_run(
    env: None, standin: StandIn, story: Story, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.events = story.flow(NOW - 1800)
    assert replay.main(["--dry-run", "--types", "checkout.session.*"]) == 0
    out = capsys.readouterr().out
    assert "would apply (dry run): 6" in out and "skipped, not in --types: 17" in out
    assert all(story.stored(e["id"]) is None for e in standin.events)

    assert replay.main(["--types", "customer.updated, invoice.paid"]) == 0
    out = capsys.readouterr().out
    # invoice.paid before its subscription exists: whatever SQL says, it is reported; here
    # only the two chosen types reach SQL.
    counts = outcome_counts(out)
    assert counts["events listed"] == 23 and sum(
        counts[k] for k in ("applied", "duplicate", "ignored", "failed")
    ) == 2
    assert story.stored(standin.events[-1]["id"]) == "ignored"
    assert story.stored(standin.events[0]["id"]) is None


def test_stripe_unreachable_exits_1(env: None, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{port}")
    assert replay.main(["--retries", "0"]) == 1
    assert "Stripe API unreachable" in capsys.readouterr().err


def test_database_unreachable_exits_1(
    env: None, standin: StandIn, story: Story, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin.events = [story.event("customer.updated", NOW - 60)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/paycore?connect_timeout=2")
    assert replay.main([]) == 1
    assert "database unreachable" in capsys.readouterr().err


def test_bad_arguments(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exc:
        replay.main(["--since", "yesterday"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        replay.main(["--hours", "0"])
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert replay.main(["--since", future]) == 2
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    assert replay.main([]) == 2


def test_raw_json_keeps_data_object(standin: StandIn) -> None:
    """What the stripe library gives back is the JSON Stripe sent, data.object included."""
    import stripe

    event = json.loads((FIXTURES / "invoice.paid.json").read_text())
    event["created"] = NOW
    standin.events = [event]
    client = stripe.StripeClient(KEY, base_addresses={"api": standin.base}, max_network_retries=0)
    (listed,) = replay.list_events(client, NOW - 10)
    assert listed == event and isinstance(listed["data"]["object"], dict)
