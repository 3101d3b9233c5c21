"""The webhook service: a thin HTTP shell around paycore's SQL functions.

Run with ``gunicorn 'webhook.app:create_app()' --bind 127.0.0.1:8000``. Each request
handler is a few lines: verify the input, call one SQL function, map the outcome to a
status. Business rules live in the database, never here.

Database unavailability (no connection in time, connection lost, statement timeout) is a
503 on every route, so callers such as Stripe retry; it is never a 500.

Routes: ``GET /healthz``; ``POST /stripe/webhook`` (webhook/stripe_webhook.py);
``POST /checkout`` (webhook/checkout.py).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from webhook import checkout, stripe_webhook
from webhook.config import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "create_app", "database", "get_services"]

logger = logging.getLogger(__name__)

EXTENSION_KEY = "paycore"


@dataclass(frozen=True)
class Services:
    """What one app instance owns: its settings and its connection pool."""

    settings: Settings
    pool: ConnectionPool[psycopg.Connection[Any]]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Builds the app. ``config`` overrides the environment (same keys) and Flask settings.

    The pool is created closed and opened on first use, without waiting: the app starts
    while the database is down, and no pool thread is started before gunicorn forks.
    """
    settings = Settings.load(config)
    app = Flask(__name__)
    if config:
        app.config.from_mapping(config)

    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        settings.conninfo(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        reconnect_timeout=settings.pool_reconnect_timeout,
        check=ConnectionPool.check_connection,
        name="paycore-webhook",
        open=False,
    )
    atexit.register(pool.close)
    app.extensions[EXTENSION_KEY] = Services(settings=settings, pool=pool)

    app.register_error_handler(psycopg.OperationalError, _database_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    stripe_webhook.register(app, settings)
    checkout.register(app, settings)
    return app


def get_services(app: Flask | None = None) -> Services:
    services: Services = (app or current_app).extensions[EXTENSION_KEY]
    return services


@contextmanager
def database(timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection in a transaction, committed on success, rolled back on error.

    Waits up to ``timeout`` seconds (default DB_POOL_TIMEOUT) for a connection, then
    raises ``psycopg_pool.PoolTimeout``, an OperationalError, hence a 503.
    """
    pool = get_services().pool
    pool.open(wait=False)  # no-op once open
    with pool.connection(timeout=timeout) as conn:
        yield conn


def healthz() -> ResponseReturnValue:
    """200 when ``select 1`` answers within HEALTHZ_TIMEOUT, otherwise 503."""
    timeout = get_services().settings.healthz_timeout
    try:
        with database(timeout=timeout) as conn:
            conn.execute("select set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
            conn.execute("select 1").fetchone()
    except psycopg.Error as exc:
        logger.warning("healthz: database unavailable: %s: %s", type(exc).__name__, exc)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok"), 200


def _database_unavailable(exc: psycopg.OperationalError) -> ResponseReturnValue:
    logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return jsonify(status="unavailable"), 503


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    """HTTP errors (404, 405, 400, 413, ...) as JSON rather than HTML."""
    name = (exc.name or "error").lower().replace(" ", "_")
    return jsonify(error=name), exc.code or 500
