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

Stripe (``POST /stripe/webhook``); the app starts without them, the route then answers 503:

``STRIPE_WEBHOOK_SECRET``      the endpoint's signing secret ``whsec_...``, or several separated by
                               commas while a secret is rotated (any of them verifies).
``STRIPE_LIVEMODE``            ``true`` or ``false``: events of the other mode are acknowledged
                               (200, ignored) and not stored. Unset: both are applied.
``STRIPE_WEBHOOK_TOLERANCE``   seconds a signature's timestamp may be from now (default 300).
``STRIPE_STATEMENT_TIMEOUT``   seconds the SQL call of one event may run (default 10).
``WEBHOOK_MAX_BODY``           largest request body in bytes (default 262144): 413 beyond.

Checkout (``POST /checkout``, webhook/checkout.py); the app starts without them, the route
then answers 503 ``misconfigured``:

``SUPABASE_JWT_SECRET``        the Supabase project's HS256 JWT secret (never echoed).
``SUPABASE_JWT_AUDIENCE``      the ``aud`` a user's token must carry (default ``authenticated``).
``STRIPE_SECRET_KEY``          the Stripe API key ``sk_...`` or ``rk_...`` (never echoed).
``STRIPE_API_BASE``            base URL of the Stripe API (default Stripe's; tests use a stand-in).
``CHECKOUT_SUCCESS_URL``       where Stripe sends the buyer after paying (absolute http(s) URL).
``CHECKOUT_CANCEL_URL``        where Stripe sends the buyer who cancels (absolute http(s) URL).
``STRIPE_TIMEOUT``             seconds one Stripe API request may take (default 20).
``STRIPE_MAX_NETWORK_RETRIES`` retries of a failed Stripe API request, same idempotency key (default 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    stripe_livemode: bool | None = None
    stripe_webhook_tolerance: int = 300
    stripe_statement_timeout: float = 10.0
    webhook_max_body: int = 256 * 1024
    supabase_jwt_secret: str | None = field(default=None, repr=False)
    supabase_jwt_audience: str = "authenticated"
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None
    stripe_timeout: float = 20.0
    stripe_max_network_retries: int = 1

    @property
    def checkout_configured(self) -> bool:
        """Whether POST /checkout has everything it needs."""
        return bool(
            self.supabase_jwt_secret
            and self.stripe_secret_key
            and self.checkout_success_url
            and self.checkout_cancel_url
        )

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
            stripe_webhook_secrets=_secrets(source.get("STRIPE_WEBHOOK_SECRET")),
            stripe_livemode=_boolean(source, "STRIPE_LIVEMODE"),
            stripe_webhook_tolerance=_get(
                source, "STRIPE_WEBHOOK_TOLERANCE", int, cls.stripe_webhook_tolerance
            ),
            stripe_statement_timeout=_get(
                source, "STRIPE_STATEMENT_TIMEOUT", float, cls.stripe_statement_timeout
            ),
            webhook_max_body=_get(source, "WEBHOOK_MAX_BODY", int, cls.webhook_max_body),
            supabase_jwt_secret=_text(source, "SUPABASE_JWT_SECRET"),
            supabase_jwt_audience=_text(source, "SUPABASE_JWT_AUDIENCE") or cls.supabase_jwt_audience,
            stripe_secret_key=_text(source, "STRIPE_SECRET_KEY"),
            stripe_api_base=_url(source, "STRIPE_API_BASE"),
            checkout_success_url=_url(source, "CHECKOUT_SUCCESS_URL"),
            checkout_cancel_url=_url(source, "CHECKOUT_CANCEL_URL"),
            stripe_timeout=_get(source, "STRIPE_TIMEOUT", float, cls.stripe_timeout),
            stripe_max_network_retries=_get(
                source, "STRIPE_MAX_NETWORK_RETRIES", int, cls.stripe_max_network_retries
            ),
        )
        if settings.stripe_secret_key is not None and (
            not settings.stripe_secret_key.startswith(("sk_", "rk_"))
            or not settings.stripe_secret_key.isascii()
        ):
            # The value is a secret: never echoed.
            raise ConfigError("STRIPE_SECRET_KEY is not a Stripe secret or restricted key (sk_... or rk_...)")
        if settings.stripe_max_network_retries < 0:
            raise ConfigError("STRIPE_MAX_NETWORK_RETRIES must be >= 0")
        if settings.pool_min_size < 0:
            raise ConfigError("DB_POOL_MIN_SIZE must be >= 0")
        if settings.pool_max_size < max(1, settings.pool_min_size):
            raise ConfigError("DB_POOL_MAX_SIZE must be >= 1 and >= DB_POOL_MIN_SIZE")
        for key, value in (
            ("DB_POOL_TIMEOUT", settings.pool_timeout),
            ("DB_POOL_RECONNECT_TIMEOUT", settings.pool_reconnect_timeout),
            ("DB_CONNECT_TIMEOUT", settings.connect_timeout),
            ("HEALTHZ_TIMEOUT", settings.healthz_timeout),
            ("STRIPE_WEBHOOK_TOLERANCE", settings.stripe_webhook_tolerance),
            ("STRIPE_STATEMENT_TIMEOUT", settings.stripe_statement_timeout),
            ("WEBHOOK_MAX_BODY", settings.webhook_max_body),
            ("STRIPE_TIMEOUT", settings.stripe_timeout),
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


def _secrets(value: Any) -> tuple[str, ...]:
    """STRIPE_WEBHOOK_SECRET: one ``whsec_...`` or several, comma-separated; never echoed."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = str(value).split(",")
    secrets = tuple(item.strip() for item in items if item.strip())
    for index, secret in enumerate(secrets, 1):
        if not secret.startswith("whsec_") or not secret.isascii() or len(secret) <= len("whsec_"):
            # The value itself is a secret: name its position, never its text.
            raise ConfigError(
                f"STRIPE_WEBHOOK_SECRET: secret #{index} is not an endpoint signing secret (whsec_...)"
            )
    return secrets


def _boolean(source: Mapping[str, Any], key: str) -> bool | None:
    value = source.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _text(source: Mapping[str, Any], key: str) -> str | None:
    value = source.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _url(source: Mapping[str, Any], key: str) -> str | None:
    """An absolute http(s) URL, or None when unset."""
    text = _text(source, key)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{key} must be an absolute http(s) URL, got {text!r}")
    return text
