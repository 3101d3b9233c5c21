"""What the Stripe service's tests share: the fixture events (tests/fixtures/stripe) rewritten
for one test, a migrated database with the fixtures' price mapped, a login member of
paycore_webhook, plain HTTP, and a running gunicorn.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from gunicorn import version_info as gunicorn_version
from psycopg import sql
from test_webhook import ROOT, _free_port

import localdb

FIXTURES = ROOT / "tests" / "fixtures" / "stripe"
FIXTURE_USER = "6f1c7a52-3b0e-4d8e-9a51-2c4f0e9b7d13"
PRICE = "price_1PgafmB7WZ01zgkW6dKueIc5"
# Stripe object ids a story rewrites (prices stay: public.prices maps them).
OBJECT_ID = re.compile(r'"((?:evt|cs_test|sub|in|pi|ch|re|dp|cus|si|pm)_[A-Za-z0-9]{6,})')

# Every fixture in an order a real delivery could have, with the outcome it must have.
FLOW = [
    ("checkout.session.completed", "applied"),
    ("checkout.session.completed.async_pending", "applied"),
    ("checkout.session.async_payment_succeeded", "applied"),
    ("checkout.session.async_payment_failed", "applied"),
    ("checkout.session.completed.missing_metadata", "failed"),
    ("checkout.session.completed.subscription", "applied"),
    ("customer.subscription.created", "applied"),
    ("invoice.paid", "applied"),
    ("invoice.payment_succeeded", "applied"),
    ("invoice.payment_failed", "applied"),
    ("customer.subscription.updated", "applied"),
    ("customer.subscription.deleted", "applied"),
    # Stripe's past_due notice arriving after the deletion (it is newer) does not revive it.
    ("customer.subscription.updated.past_due", "applied"),
    ("payment_intent.succeeded", "applied"),
    ("payment_intent.payment_failed", "applied"),
    ("charge.refunded.partial", "applied"),
    ("charge.refunded", "applied"),
    ("charge.refunded.legacy_2022-08-01", "applied"),
    ("refund.created", "applied"),
    ("refund.updated", "applied"),
    ("charge.dispute.created", "applied"),
    ("charge.dispute.closed", "applied"),
    ("customer.updated", "ignored"),
]


def fixture_text(name: str, user: str, suffix: str) -> str:
    """A fixture event as text, for another auth user and with every object id suffixed."""
    text = (FIXTURES / f"{name}.json").read_text().replace(FIXTURE_USER, user)
    return OBJECT_ID.sub(lambda m: f'"{m.group(1)}{suffix}', text)


def stripe_database(make_database: Callable[[str], str], name: str) -> str:
    """Owner conninfo of a database of its own, built by yoyo, with the fixtures' price mapped."""
    conninfo = make_database(name)
    localdb.yoyo("apply", conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "insert into public.prices (stripe_price_id, app_id, tier_id) values (%s, 'cv', 'premium') "
            "on conflict do nothing",
            (PRICE,),
        )
    return conninfo


def webhook_login(conninfo: str, role: str, password: str) -> str:
    """Conninfo of ``role``, a login member of paycore_webhook (roles are cluster-wide:
    created if absent)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ident = sql.Identifier(role)
        if not conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("create role {} login in role paycore_webhook").format(ident))
        conn.execute(sql.SQL("grant paycore_webhook to {}").format(ident))
        conn.execute(sql.SQL("alter role {} login nosuperuser password {}").format(ident, password))
    return psycopg.conninfo.make_conninfo(conninfo, user=role, password=password)


def request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One HTTP request; the status and the JSON answer (or the raw bytes)."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@contextmanager
def gunicorn(env_extra: dict[str, str], tmp: Path, threads: int = 8) -> Iterator[str]:
    """The service under gunicorn (2 gthread workers) on a free loopback port, once /healthz
    answers 200; its log in ``tmp / 'gunicorn.log'``. Yields the base URL."""
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "webhook.app:create_app()",
        "--bind", f"127.0.0.1:{port}",
        "--workers", "2",
        "--worker-class", "gthread",
        "--threads", str(threads),
    ]
    if gunicorn_version >= (25, 1):
        command += ["--control-socket", str(tmp / "gunicorn.ctl")]
    log_path = tmp / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env_extra}, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()}"
            try:
                if request("GET", base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
