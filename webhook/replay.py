"""Replay Stripe events from the Stripe API through paycore.apply_stripe_event.

For when the webhook endpoint was down, misconfigured or behind a broken deploy longer than
Stripe retries, or to check nothing was missed: lists the account's events since a time
(``GET /v1/events?created[gte]=...``, every page), oldest first, and applies each one through
the same SQL function as ``POST /stripe/webhook``, each in its own transaction. Events already
applied come back as ``duplicate`` and change nothing, so it is safe to run at any time, as
often as wanted, while the webhook is also receiving.

    paycore-stripe-replay                     # the last 72 hours
    paycore-stripe-replay --hours 6 --dry-run
    paycore-stripe-replay --since 2026-11-30T08:00:00Z --types 'checkout.session.*,invoice.paid'

Environment:

``STRIPE_SECRET_KEY``   a secret or restricted key that may read events (required).
``STRIPE_API_BASE``     the API's base URL (default https://api.stripe.com; a stand-in in tests).
``DATABASE_URL``        the database, as for the webhook (a member of paycore_webhook suffices);
                        not needed with ``--dry-run``.
``STRIPE_LIVEMODE``     ``true`` or ``false``: events of the other mode are skipped. Unset: the
                        mode of the key (``sk_live_``/``rk_live_`` or ``sk_test_``/``rk_test_``),
                        or both modes for a key of neither form.
``STRIPE_STATEMENT_TIMEOUT``  seconds the SQL call of one event may run (default 10).

Stripe keeps events for 30 days: a ``--since`` older than that is clamped to 30 days ago, with
a message. Each event is passed to SQL as the JSON Stripe sent (the raw page of the list call).

Prints a summary: events listed, skipped (other mode, not in ``--types``), counts per outcome
(applied, duplicate, ignored, failed; ``rejected`` for an event SQL refuses as malformed),
then each failed or rejected event with its id, type and reason. Exits 0 whatever the
outcomes, 1 when Stripe or the database cannot be reached (with a message; the events
applied before that stay applied), 2 on bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import stripe

from webhook.config import ConfigError, Settings

DEFAULT_HOURS = 72.0
RETENTION = timedelta(days=30)
PAGE_LIMIT = 100
OUTCOMES = ("applied", "duplicate", "ignored", "failed")
APPLICATION_NAME = "paycore-stripe-replay"


class Unreachable(Exception):
    """Stripe or the database cannot be reached: exit 1 with this message."""


@dataclass
class Summary:
    listed: int = 0
    skipped_livemode: int = 0
    skipped_type: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)  # outcome, id, type, reason

    def render(self, dry_run: bool) -> str:
        lines = [f"events listed: {self.listed}"]
        if self.skipped_livemode:
            lines.append(f"skipped, other livemode: {self.skipped_livemode}")
        if self.skipped_type:
            lines.append(f"skipped, not in --types: {self.skipped_type}")
        if dry_run:
            lines.append(f"would apply (dry run): {self.outcomes['would_apply']}")
        else:
            for outcome in (*OUTCOMES, "rejected"):
                if outcome in OUTCOMES or self.outcomes[outcome]:
                    lines.append(f"{outcome}: {self.outcomes[outcome]}")
        for outcome, event_id, event_type, reason in self.problems:
            lines.append(f"  {outcome} {event_id} {event_type}: {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="paycore-stripe-replay",
        description="Apply the Stripe events of the last hours (from the Stripe API) through "
        "paycore.apply_stripe_event; already applied ones come back as duplicate.",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", help="ISO time (e.g. 2026-11-30T08:00:00Z; without an offset: UTC)")
    when.add_argument("--hours", type=float, help=f"the last N hours (default {DEFAULT_HOURS:g})")
    parser.add_argument(
        "--types",
        help="comma-separated event types to apply, * wildcards allowed (checkout.session.*); "
        "default: all",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be applied; no database")
    parser.add_argument("--retries", type=int, default=2, help="Stripe network retries (default 2)")
    args = parser.parse_args(argv)
    if args.hours is not None and args.hours <= 0:
        parser.error("--hours must be > 0")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    if args.since is not None:
        try:
            args.since_time = parse_time(args.since)
        except ValueError:
            parser.error(f"--since: not an ISO time: {args.since!r}")
    args.type_patterns = [t.strip() for t in (args.types or "").split(",") if t.strip()]
    return args


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def since_time(args: argparse.Namespace, now: datetime) -> tuple[datetime, str | None]:
    """The start of the window, clamped to Stripe's retention, and a note when clamped."""
    if args.since is not None:
        since: datetime = args.since_time
    else:
        since = now - timedelta(hours=args.hours if args.hours is not None else DEFAULT_HOURS)
    oldest = now - RETENTION
    if since < oldest:
        return oldest, (
            f"note: Stripe keeps events for 30 days; {since.isoformat(timespec='seconds')} is older, "
            f"replaying from {oldest.isoformat(timespec='seconds')} instead"
        )
    if since > now:
        raise ValueError(f"--since {since.isoformat(timespec='seconds')} is in the future")
    return since, None


def key_livemode(key: str) -> bool | None:
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    if key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


# --------------------------------------------------------------------------- Stripe


def list_events(client: stripe.StripeClient, created_gte: int) -> list[dict[str, Any]]:
    """Every event created at or after ``created_gte``, oldest first, as the JSON Stripe sent."""
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": PAGE_LIMIT}
    while True:
        try:
            page = client.v1.events.list(params)
        except stripe.APIConnectionError as exc:
            raise Unreachable(f"Stripe API unreachable: {exc.user_message or exc}") from None
        except stripe.AuthenticationError:
            raise Unreachable("Stripe refused the key (STRIPE_SECRET_KEY): authentication failed") from None
        except stripe.StripeError as exc:
            raise Unreachable(f"Stripe API error listing events: {exc.user_message or exc}") from None
        data = _raw_page(page)
        for event in data:
            if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"] not in seen:
                seen.add(event["id"])
                events.append(event)
        if not page.has_more or not data:
            break
        params = {**params, "starting_after": data[-1]["id"]}
    # Stripe lists newest first; replay in the order things happened (stable for equal times).
    events.reverse()
    events.sort(key=lambda e: e.get("created") if isinstance(e.get("created"), int | float) else 0)
    return events


def _raw_page(page: Any) -> list[Any]:
    """The page's events as Stripe sent them: the raw body, else the objects' to_dict()."""
    response = getattr(page, "last_response", None)
    if response is not None and isinstance(getattr(response, "body", None), str):
        try:
            body = json.loads(response.body)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            return list(body["data"])
    return [event.to_dict() for event in page.data]


# --------------------------------------------------------------------------- database


def conninfo(settings: Settings) -> str:
    given = psycopg.conninfo.conninfo_to_dict(settings.database_url)
    extra: dict[str, Any] = {}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = settings.connect_timeout
    if "application_name" not in given:
        extra["application_name"] = APPLICATION_NAME
    return psycopg.conninfo.make_conninfo(settings.database_url, **extra)


def apply_events(
    events: Iterator[dict[str, Any]], settings: Settings, summary: Summary
) -> None:
    timeout_ms = f"{max(1, int(settings.stripe_statement_timeout * 1000))}ms"
    try:
        conn = psycopg.connect(conninfo(settings), autocommit=True)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"database unreachable (DATABASE_URL): {_first_line(exc)}") from None
    with conn:
        for event in events:
            event_id, event_type = str(event.get("id")), str(event.get("type"))
            try:
                with conn.transaction():
                    conn.execute("select set_config('statement_timeout', %s, true)", (timeout_ms,))
                    row = conn.execute(
                        "select paycore.apply_stripe_event(%s::jsonb)", (json.dumps(event),)
                    ).fetchone()
            except psycopg.OperationalError as exc:
                raise Unreachable(
                    f"database unavailable at event {event_id} ({event_type}): {_first_line(exc)}"
                ) from None
            except psycopg.Error as exc:
                sqlstate = getattr(exc, "sqlstate", None) or ""
                if sqlstate == "PT400" or sqlstate[:2] in ("22", "23"):
                    summary.outcomes["rejected"] += 1
                    summary.problems.append(("rejected", event_id, event_type, _first_line(exc)))
                    continue
                raise Unreachable(
                    f"database error at event {event_id} ({event_type}), sqlstate {sqlstate}: "
                    f"{_first_line(exc)}"
                ) from None
            outcome = str(row[0]) if row else "?"
            summary.outcomes[outcome] += 1
            if outcome == "failed":
                summary.problems.append(("failed", event_id, event_type, _stored_error(conn, event_id)))
            elif outcome not in OUTCOMES:
                summary.problems.append((outcome, event_id, event_type, "unexpected result of SQL"))


def _stored_error(conn: psycopg.Connection[Any], event_id: str) -> str:
    """The reason SQL stored for a failed event, when this role may read it."""
    try:
        with conn.transaction():
            query = "select error from paycore.stripe_events where id = %s"
            row = conn.execute(query, (event_id,)).fetchone()
    except psycopg.Error:
        return "stored as failed (see paycore.stripe_events.error)"
    return str(row[0]) if row and row[0] else "stored as failed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    env = os.environ if environ is None else environ
    key = (env.get("STRIPE_SECRET_KEY") or "").strip()
    if not key:
        print("paycore-stripe-replay: STRIPE_SECRET_KEY is not set", file=sys.stderr)
        return 2
    api_base = (env.get("STRIPE_API_BASE") or "").strip().rstrip("/") or stripe.DEFAULT_API_BASE
    settings: Settings | None = None
    try:
        # The webhook's own settings (DATABASE_URL, STRIPE_LIVEMODE, the statement timeout);
        # its signing secret plays no part here.
        overrides: dict[str, Any] = {"STRIPE_WEBHOOK_SECRET": None}
        if args.dry_run and not env.get("DATABASE_URL"):
            overrides["DATABASE_URL"] = "dbname=unused"
        settings = Settings.load(overrides, environ=env)
    except ConfigError as exc:
        print(f"paycore-stripe-replay: {exc}", file=sys.stderr)
        return 2
    livemode = settings.stripe_livemode if settings.stripe_livemode is not None else key_livemode(key)

    now = datetime.now(UTC)
    try:
        since, note = since_time(args, now)
    except ValueError as exc:
        print(f"paycore-stripe-replay: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    mode = "both modes" if livemode is None else ("live mode" if livemode else "test mode")
    print(f"replaying Stripe events created since {since.isoformat(timespec='seconds')} ({mode}"
          + (", dry run" if args.dry_run else "") + f") from {api_base}", file=sys.stderr)

    summary = Summary()
    started = time.monotonic()
    client = stripe.StripeClient(key, base_addresses={"api": api_base}, max_network_retries=args.retries)
    try:
        events = list_events(client, int(since.timestamp()))
        summary.listed = len(events)
        chosen: list[dict[str, Any]] = []
        for event in events:
            if livemode is not None and (event.get("livemode") is True) != livemode:
                summary.skipped_livemode += 1
            elif args.type_patterns and not any(
                fnmatch.fnmatchcase(str(event.get("type")), p) for p in args.type_patterns
            ):
                summary.skipped_type += 1
            else:
                chosen.append(event)
        if args.dry_run:
            summary.outcomes["would_apply"] = len(chosen)
            for event_type, count in sorted(Counter(str(e.get("type")) for e in chosen).items()):
                print(f"  {count:5d} {event_type}")
        else:
            apply_events(iter(chosen), settings, summary)
    except Unreachable as exc:
        print(summary.render(args.dry_run))
        print(f"paycore-stripe-replay: {exc}", file=sys.stderr)
        return 1
    print(summary.render(args.dry_run))
    print(f"done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
