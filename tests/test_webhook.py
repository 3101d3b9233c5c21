"""The webhook service: app factory, configuration, GET /healthz, and the gunicorn command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from gunicorn import version_info as gunicorn_version

ROOT = Path(__file__).resolve().parent.parent
# The repository root, for the webhook package (the project is not installed in the venv).
sys.path.insert(0, str(ROOT))

from webhook.app import create_app, get_services  # noqa: E402
from webhook.config import ConfigError  # noqa: E402


@pytest.fixture()
def make_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    """Factory of apps whose pools are closed at the end of the test.

    conftest has removed DATABASE_URL from the environment (it may name production); each
    test gives its app a database in the config, or sets DATABASE_URL itself (monkeypatch).
    """
    monkeypatch.delenv("DATABASE_URL", raising=False)
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None) -> Flask:
        app = create_app({"TESTING": True, **(config or {})})
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_services(app).pool.close()


def test_healthz_ok(make_app: Callable[..., Flask], db: str) -> None:
    client = make_app({"DATABASE_URL": db}).test_client()
    for _ in range(2):  # the second request reuses the pooled connection
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok"}


def test_healthz_ok_with_url_from_environment(
    make_app: Callable[..., Flask], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db)
    url = f"postgresql://{info['user']}@/{info['dbname']}?host={info['host']}&port={info['port']}"
    monkeypatch.setenv("DATABASE_URL", url)
    response = make_app().test_client().get("/healthz")
    assert response.status_code == 200


@pytest.fixture(params=["missing_database", "no_server"])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "missing_database":
        db = request.getfixturevalue("db")
        return psycopg.conninfo.make_conninfo(db, dbname="paycore_test_does_not_exist")
    # A socket directory where no server listens.
    return f"postgresql://postgres@/paycore?host={tmp_path}&port=5432"


def test_healthz_unavailable(make_app: Callable[..., Flask], unreachable_url: str) -> None:
    # The app is created although the database cannot be reached.
    app = make_app({"DATABASE_URL": unreachable_url, "HEALTHZ_TIMEOUT": "1"})
    client = app.test_client()
    started = time.monotonic()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable"}
    # Bounded by HEALTHZ_TIMEOUT; the bound here is generous on purpose.
    assert time.monotonic() - started < 20
    # Still 503 on a second call, not a 500 from a pool in a bad state.
    assert client.get("/healthz").status_code == 503


def test_create_app_requires_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app()
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app({"DATABASE_URL": "  "})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DB_POOL_MAX_SIZE", "lots"),
        ("DB_POOL_MAX_SIZE", "0"),
        ("DB_POOL_MIN_SIZE", "-1"),
        ("HEALTHZ_TIMEOUT", "0"),
    ],
)
def test_create_app_rejects_bad_pool_settings(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@/paycore")
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        create_app()


def test_unknown_route_is_json_404(make_app: Callable[..., Flask]) -> None:
    response = make_app({"DATABASE_URL": "postgresql://postgres@/paycore"}).test_client().get("/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_gunicorn_serves_healthz(db: str, tmp_path: Path) -> None:
    """The main-job command: gunicorn 'webhook.app:create_app()' --bind 127.0.0.1:PORT."""
    port = _free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    # The service's own setting: the test database, never a DATABASE_URL of the caller's shell.
    env = {**os.environ, "DATABASE_URL": db}
    command = [str(gunicorn), "webhook.app:create_app()", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    if gunicorn_version >= (25, 1):
        # Not ~/.gunicorn/gunicorn.ctl, which a running service may own.
        command += ["--control-socket", str(tmp_path / "gunicorn.ctl")]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        status, body = 0, b""
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()}"
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
            except OSError:  # not listening yet
                status, body = 0, b""
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"last status {status} {body!r}\n{log_path.read_text()}"
        assert body.strip() == b'{"status":"ok"}'
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
