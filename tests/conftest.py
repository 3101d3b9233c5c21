"""Session fixtures: one PostgreSQL server, one database built from migrations/.

Without PAYCORE_TEST_DATABASE_URL a throwaway cluster is started in a temp dir (as the
postgres OS user when run as root, private socket, fsync off) and removed at the end. With
PAYCORE_TEST_DATABASE_URL (a server URL whose user may create databases) the test databases
are created there, named paycore_test_*, and dropped at the end.

DATABASE_URL is never read by the tests: it names production for DBAs (yoyo.ini) and is the
webhook's own setting. This module removes it from os.environ when it is imported, before
any test or fixture runs, so nothing in the test process (nor a subprocess it starts) can
reach that database; a test that starts the webhook passes it the test database explicitly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import localdb

DB_PREFIX = "paycore_test_"
SERVER_URL_VARIABLE = "PAYCORE_TEST_DATABASE_URL"

os.environ.pop("DATABASE_URL", None)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Conninfo of the maintenance database of a server the tests may create databases on."""
    url = os.environ.get(SERVER_URL_VARIABLE)
    if url:
        yield url.replace("postgresql+psycopg://", "postgresql://")
        return
    tmp = Path(tempfile.mkdtemp(prefix="paycore-test-"))
    tmp.chmod(0o755)
    cluster = localdb.Cluster(
        tmp / "pg",
        port=5432,
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                  "max_connections": "200"},
    )
    cluster.start()
    try:
        yield cluster.url()
    finally:
        cluster.destroy()
        tmp.rmdir()


@pytest.fixture(scope="session")
def make_database(pg_server: str) -> Iterator:
    """Factory: an empty database on the test server, dropped at the end of the session."""
    created: list[str] = []

    def make(name: str) -> str:
        dbname = DB_PREFIX + name
        created.append(dbname)
        return localdb.create_database(pg_server, dbname)

    yield make
    for dbname in created:
        localdb.drop_database(pg_server, dbname)


@pytest.fixture(scope="session")
def db(make_database) -> str:
    """Conninfo of the database built from migrations/ with yoyo, plus the tests schema."""
    conninfo = make_database("main")
    localdb.yoyo("apply", conninfo)
    localdb.install_test_helpers(conninfo)
    return conninfo


@pytest.fixture()
def conn(db: str) -> Iterator[psycopg.Connection]:
    """A connection to the test database as its owner, autocommit."""
    with psycopg.connect(db, autocommit=True) as c:
        yield c
