"""Settings of the webhook service, read from the environment (or a mapping that overrides it).

Keys, all optional except DATABASE_URL:

``DATABASE_URL``               libpq URL (``postgresql://...``) or ``key=value`` conninfo.
``DB_POOL_MIN_SIZE``           connections kept open (default 1).
``DB_POOL_MAX_SIZE``           upper bound of the pool (default 4).
``DB_POOL_TIMEOUT``            seconds a request waits for a connection (default 5).
``DB_POOL_RECONNECT_TIMEOUT``  seconds the pool retries a failing connection before it
                               gives up and tries afresh on the next request (default 30).
``DB_CONNECT_TIMEOUT``         libpq connect_timeout in seconds, unless the URL sets one (default 5).
``HEALTHZ_TIMEOUT``            seconds /healthz waits for a connection and for ``select 1`` (default 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg


class ConfigError(ValueError):
    """The configuration is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    pool_min_size: int = 1
    pool_max_size: int = 4
    pool_timeout: float = 5.0
    pool_reconnect_timeout: float = 30.0
    connect_timeout: int = 5
    healthz_timeout: float = 2.0

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), ``overrides`` taking precedence."""
        source: dict[str, Any] = dict(os.environ if environ is None else environ)
        source.update(overrides or {})

        url = str(source.get("DATABASE_URL") or "").strip()
        if not url:
            raise ConfigError("DATABASE_URL is not set: give the libpq URL or conninfo of the database")
        # The same variable may hold a SQLAlchemy/yoyo style URL.
        if url.startswith("postgresql+psycopg://"):
            url = "postgresql://" + url[len("postgresql+psycopg://"):]
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"DATABASE_URL is not a valid libpq URL or conninfo: {exc}") from None

        settings = cls(
            database_url=url,
            pool_min_size=_get(source, "DB_POOL_MIN_SIZE", int, cls.pool_min_size),
            pool_max_size=_get(source, "DB_POOL_MAX_SIZE", int, cls.pool_max_size),
            pool_timeout=_get(source, "DB_POOL_TIMEOUT", float, cls.pool_timeout),
            pool_reconnect_timeout=_get(
                source, "DB_POOL_RECONNECT_TIMEOUT", float, cls.pool_reconnect_timeout
            ),
            connect_timeout=_get(source, "DB_CONNECT_TIMEOUT", int, cls.connect_timeout),
            healthz_timeout=_get(source, "HEALTHZ_TIMEOUT", float, cls.healthz_timeout),
        )
        if settings.pool_min_size < 0:
            raise ConfigError("DB_POOL_MIN_SIZE must be >= 0")
        if settings.pool_max_size < max(1, settings.pool_min_size):
            raise ConfigError("DB_POOL_MAX_SIZE must be >= 1 and >= DB_POOL_MIN_SIZE")
        for key, value in (
            ("DB_POOL_TIMEOUT", settings.pool_timeout),
            ("DB_POOL_RECONNECT_TIMEOUT", settings.pool_reconnect_timeout),
            ("DB_CONNECT_TIMEOUT", settings.connect_timeout),
            ("HEALTHZ_TIMEOUT", settings.healthz_timeout),
        ):
            if value <= 0:
                raise ConfigError(f"{key} must be > 0")
        return settings

    def conninfo(self) -> str:
        """DATABASE_URL with a connect_timeout and an application_name unless it sets them."""
        given = psycopg.conninfo.conninfo_to_dict(self.database_url)
        extra: dict[str, Any] = {}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = self.connect_timeout
        if "application_name" not in given:
            extra["application_name"] = "paycore-webhook"
        return psycopg.conninfo.make_conninfo(self.database_url, **extra)


def _get(source: Mapping[str, Any], key: str, kind: Callable[[Any], Any], default: Any) -> Any:
    value = source.get(key)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
