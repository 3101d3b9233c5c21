#!/usr/bin/env python3
"""Signed Stripe events per second through gunicorn, against the same gunicorn doing nothing.

End to end: an HTTP client posts signed ``checkout.session.completed`` events to ``POST
/stripe/webhook`` of a running gunicorn (``webhook.app:create_app()``, gthread, ``--workers``
2 x ``--threads`` 8, pool max 8 per worker), logged in as a member of paycore_webhook. Every
event is new: a fresh event id and a fresh paid Checkout Session of a random user of a pool
(``--users``, default 1000) for the package pkg_100_credits, so each one really applies: SQL
stores the event, records the session, inserts the purchase and grants 100 credits through
the ledger. No checkout was begun, so no capacity reservation is involved.

**The floor** is the same gunicorn, the same app object, answering ``POST /bench/noop``: a
route the benchmark registers itself by wrapping ``create_app()`` in a tiny module written
to a temp dir (webhook/app.py is not touched) that reads the body and answers a small JSON,
no signature check, no database. So both sides pay the client, the TCP keep-alive
connection, HTTP parsing, Flask routing and the same body bytes; what is left between them
is what the webhook adds: the signature check, the JSON parse, a pooled connection, the SQL
call (and its commit, with the server's ``synchronous_commit``), the log line.
``GET /healthz`` (one ``select 1`` round trip) is measured too, as an info side figure.

The load: ``--clients`` (1 and 8) Python threads, each with its own ``http.client``
keep-alive connection, each building and signing its bodies (a template with three
substitutions, HMAC-SHA256) in the loop, the floor's bodies identical; timed for
``--seconds`` each. Per client count: an untimed warm-up of each variant, then ``--rounds``
rounds, each variant alone, order alternated per round, a checkpoint before each run;
ratio = webhook events/s / floor requests/s of the round, median over the rounds; target
>= 0.5. Every response must be 200 (``applied`` for the webhook), else the run is reported
with its errors. At the end: purchases granted = events applied.

The client runs on the same machine as gunicorn and PostgreSQL: with few CPUs the client's
own CPU weighs on the floor more than on the webhook, so the ratio reads high rather than
low on a small machine; the absolute figures are this machine's.

    .venv/bin/python bench/stripe.py                    # throwaway cluster (~2 min)
    .venv/bin/python bench/stripe.py --seconds 3 --rounds 4 --clients 1,8,16
    PAYCORE_TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/stripe.py

A report, not a test: exits 0 whatever the figures (1 only if gunicorn does not start).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

# This file is bench/stripe.py: with bench/ on sys.path, "import stripe" (in webhook/) would
# import it. Take bench/ off, put the repository root on, load the harness by its path.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("harness", HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["harness"] = harness
_spec.loader.exec_module(harness)

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

localdb = harness.localdb
log = harness.log

TARGET_RATIO = 0.5
SECRET = "whsec_" + "be" * 16
LOGIN_ROLE = "paycore_bench_webhook_login"
LOGIN_PASSWORD = "paycore-bench-webhook"
FIXTURE = ROOT / "tests" / "fixtures" / "stripe" / "checkout.session.completed.json"
FIXTURE_USER = "6f1c7a52-3b0e-4d8e-9a51-2c4f0e9b7d13"
FIXTURE_EVENT = "evt_oLcWDpkHfyCr2B36UL6FGgJh"
FIXTURE_SESSION = "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY"
FIXTURE_PAYMENT_INTENT = "pi_1PgafyB7WZ01zgkWSjxsAJo3"
VARIANTS = ("noop", "webhook", "healthz")  # the floor, the route under test, an info side figure

APP_MODULE = '''\
"""The webhook app plus a no-op route, for bench/stripe.py only."""
from flask import jsonify, request

from webhook.app import create_app


def app():
    application = create_app()

    def noop():
        request.get_data(cache=False)
        return jsonify(status="ok"), 200

    application.add_url_rule("/bench/noop", "bench_noop", noop, methods=["POST"])
    return application
'''


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0, help="length of each timed run (default 4)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per client count (default 4)")
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--no-healthz", action="store_true", help="skip the /healthz side figure")
    p.add_argument("--database-url", default=os.environ.get(harness.URL_ENV))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the report on stderr")
    args = p.parse_args(argv)
    args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    return args


# --------------------------------------------------------------------------- setup


def setup(conninfo: str, users: int) -> str:
    """Users, the login role; returns the login member's conninfo."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("create schema if not exists bench")
        conn.execute("create table bench.users (n int primary key, id uuid not null)")
        conn.execute(
            "with u as (select g as n, gen_random_uuid() as id from generate_series(1, %s) as g), "
            "a as (insert into auth.users (id, email) select id, id::text || '@bench.example' from u) "
            "insert into bench.users select n, id from u",
            (users,),
        )
        role = sql.Identifier(LOGIN_ROLE)
        if not conn.execute("select 1 from pg_roles where rolname = %s", (LOGIN_ROLE,)).fetchone():
            conn.execute(sql.SQL("create role {} login in role paycore_webhook").format(role))
        conn.execute(sql.SQL("grant paycore_webhook to {}").format(role))
        conn.execute(sql.SQL("alter role {} login nosuperuser password {}").format(role, LOGIN_PASSWORD))
        conn.execute("vacuum analyze")
    return psycopg.conninfo.make_conninfo(conninfo, user=LOGIN_ROLE, password=LOGIN_PASSWORD)


def user_ids(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [str(r[0]) for r in conn.execute("select id from bench.users order by n")]


class Bodies:
    """Fresh checkout.session.completed bodies from the fixture: a template, three holes."""

    def __init__(self, users: list[str]) -> None:
        text = json.dumps(json.loads(FIXTURE.read_text()), separators=(",", ":"))
        text = text.replace(FIXTURE_EVENT, "\0E").replace(FIXTURE_SESSION, "\0S").replace(FIXTURE_USER, "\0U")
        text = text.replace(FIXTURE_PAYMENT_INTENT, "\0P")
        self.parts = text.split("\0")
        self.users = users
        self.run = uuid.uuid4().hex[:8]
        self.lock = threading.Lock()
        self.n = 0

    def next(self) -> str:
        with self.lock:
            self.n += 1
            n = self.n
        fill = {"E": f"evt_bench{self.run}{n:09d}", "S": f"cs_test_bench{self.run}{n:09d}",
                "P": f"pi_bench{self.run}{n:09d}",
                "U": random.choice(self.users)}
        return self.parts[0] + "".join(fill[part[0]] + part[1:] for part in self.parts[1:])


def sign(body: bytes) -> str:
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# --------------------------------------------------------------------------- gunicorn


def start_gunicorn(login: str, args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    (tmp / "paycore_bench_app.py").write_text(APP_MODULE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "DATABASE_URL": login,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_LIVEMODE": "false",
        "DB_POOL_MAX_SIZE": str(args.threads),
        "DB_POOL_MIN_SIZE": "2",
        "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)]),
    }
    command = [
        str(Path(sys.executable).with_name("gunicorn")), "paycore_bench_app:app()",
        "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--worker-class", "gthread",
        "--threads", str(args.threads), "--keep-alive", "30",
    ]
    if harness_gunicorn_version() >= (25, 1):
        command += ["--control-socket", str(tmp / "gunicorn.ctl")]
    log_file = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not start:\n" + (tmp / "gunicorn.log").read_text()[-3000:])


def harness_gunicorn_version() -> tuple[int, ...]:
    from gunicorn import version_info

    return tuple(version_info)


# --------------------------------------------------------------------------- load


def run(port: int, variant: str, clients: int, seconds: float, bodies: Bodies) -> dict[str, Any]:
    """Requests per second of ``clients`` keep-alive clients for ``seconds``; errors counted."""
    counts = [0] * clients
    errors: list[str] = []
    applied = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        while time.monotonic() < stop_at[0]:
            if variant == "healthz":
                conn.request("GET", "/healthz")
            else:
                body = bodies.next().encode()
                headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
                path = "/stripe/webhook" if variant == "webhook" else "/bench/noop"
                conn.request("POST", path, body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                errors.append(f"{response.status} {data[:100]!r}")
            elif variant == "webhook":
                if json.loads(data).get("status") == "applied":
                    applied[i] += 1
                else:
                    errors.append(data[:100].decode())
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {"rps": sum(counts) / elapsed, "requests": sum(counts), "errors": errors, "applied": sum(applied)}


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    variants = [v for v in VARIANTS if not (args.no_healthz and v == "healthz")]
    results: dict[int, dict[str, list[float]]] = {}
    errors: dict[str, list[str]] = {v: [] for v in variants}
    applied_total = 0
    loads: list[float] = []
    name = "paycore_bench_stripe"
    with (
        harness.server(args.database_url, args.keep) as (server_url, _),
        harness.databases(server_url, [name], args.keep) as conninfos,
        tempfile.TemporaryDirectory(prefix="paycore-bench-stripe-") as tmpdir,
    ):
        conninfo = conninfos[name]
        log("setting up ...")
        login = setup(conninfo, args.users)
        bodies = Bodies(user_ids(conninfo))
        facts = harness.server_facts(conninfo)
        sync = harness.synchronous_commit(login)
        proc, port = start_gunicorn(login, args, Path(tmpdir))
        try:
            for clients in args.client_counts:
                results[clients] = {v: [] for v in variants}
                for v in variants[::-1]:
                    w = run(port, v, clients, args.warmup_seconds, bodies)
                    applied_total += w["applied"]
                    log(f"c={clients} warm-up {v}: {w['rps']:.0f}/s")
                for round_no in range(1, args.rounds + 1):
                    order = variants if round_no % 2 else variants[::-1]
                    for v in order:
                        harness.checkpoint(conninfo)
                        r = run(port, v, clients, args.seconds, bodies)
                        results[clients][v].append(r["rps"])
                        errors[v] += r["errors"]
                        applied_total += r["applied"]
                        loads.append(os.getloadavg()[0])
                    ratio = results[clients]["webhook"][-1] / results[clients]["noop"][-1]
                    log(f"c={clients} round {round_no}: "
                        + ", ".join(f"{v} {results[clients][v][-1]:.0f}/s" for v in order)
                        + f", ratio {ratio:.3f}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(conninfo) as conn:
            row = conn.execute(
                "select count(*) from public.user_credit_purchases "
                "where stripe_session_id like 'cs_test_bench%%'"
            ).fetchone()
            granted = int(row[0]) if row else -1
    report = build_report(args, variants, results, errors, applied_total, granted, sync, facts, loads,
                          time.monotonic() - started)
    if args.json:
        log(report["text"])
        print(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=2))
    else:
        print(report["text"])
    return 0


def build_report(args: argparse.Namespace, variants: list[str], results: dict[int, dict[str, list[float]]],
                 errors: dict[str, list[str]], applied: int, granted: int, sync: str,
                 facts: dict[str, str], loads: list[float], elapsed: float) -> dict[str, Any]:
    lines = [
        "POST /stripe/webhook (signed checkout.session.completed, each a fresh paid session) vs "
        "POST /bench/noop on the same gunicorn",
        f"gunicorn gthread {args.workers} workers x {args.threads} threads; PostgreSQL "
        f"{facts.get('server_version')}, synchronous_commit = {sync}, fsync = {facts.get('fsync')}; "
        f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.seconds:g} s per variant, order alternated; "
        f"migrations {harness.migrations_digest()}",
        "",
        f"{'clients':>7}  {'noop/s':>8}  {'webhook/s':>9}  {'healthz/s':>9}  {'ratio':>6}  "
        f"{'min-max':>11}  verdict (target >= {TARGET_RATIO})",
    ]
    scenarios = []
    for clients, tps in results.items():
        ratios = [w / f if f else 0.0 for w, f in zip(tps["webhook"], tps["noop"], strict=True)]
        ratio = statistics.median(ratios)
        med = {v: statistics.median(tps[v]) for v in variants}
        verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
        hz = f"{med['healthz']:.0f}" if "healthz" in med else "-"
        lines.append(
            f"{clients:>7}  {med['noop']:>8.0f}  {med['webhook']:>9.0f}  "
            f"{hz:>9}  {ratio:>6.3f}  "
            f"{min(ratios):.3f}-{max(ratios):.3f}  {verdict}"
        )
        scenarios.append({"clients": clients, "ratio": round(ratio, 3),
                          "ratios": [round(r, 3) for r in ratios],
                          "median_rps": {v: round(x, 1) for v, x in med.items()},
                          "rps": {v: [round(x, 1) for x in tps[v]] for v in variants}, "verdict": verdict})
    lines.append("")
    lines.append(f"webhook events applied: {applied}; purchases granted: {granted}"
                 + ("" if applied == granted else "  MISMATCH"))
    for v, errs in errors.items():
        if errs:
            lines.append(f"{v}: {len(errs)} non-200/non-applied answers, e.g. {errs[0]}")
    if loads:
        lines.append(f"load average during the runs: {min(loads):.1f}-{max(loads):.1f}")
    lines.append(f"total runtime {elapsed:.0f} s")
    return {"text": "\n".join(lines), "synchronous_commit": sync, "scenarios": scenarios,
            "applied": applied, "granted": granted, "errors": {v: len(e) for v, e in errors.items()},
            "runtime_s": round(elapsed, 1)}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
