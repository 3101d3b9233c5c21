"""Local PostgreSQL clusters and paycore databases, for the main job, tests and benchmarks.

A cluster lives in a directory of its own, listens only on a private Unix socket inside
that directory, and runs as the ``postgres`` OS user when this process is root (``initdb``
and ``postgres`` refuse root). Databases are built the way a DBA builds them: ``yoyo
apply`` of ``migrations/``; or, for the drift test, from ``schema/``, ``functions/`` and
``policies/`` in module order.

Command line (used by the Makefile)::

    python scripts/localdb.py start            # project cluster in .pgdata/, started
    python scripts/localdb.py migrate [DB]      # create DB if missing, yoyo apply
    python scripts/localdb.py testdb DB         # fresh DB: migrations + test helpers
    python scripts/localdb.py url [DB]          # print the libpq URL
    python scripts/localdb.py env [DB]          # PGHOST=... PGPORT=... for psql: eval "export $(...)"
    python scripts/localdb.py webhook-url [DB]  # URL of the webhook's login (member of paycore_webhook)
    python scripts/localdb.py stop
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
TEST_HELPERS = ROOT / "tests" / "helpers.sql"
PROJECT_DATADIR = ROOT / ".pgdata"
PROJECT_PORT = 54329
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class Cluster:
    """A PostgreSQL cluster in ``datadir``, reachable through a socket in ``datadir/run``."""

    def __init__(self, datadir: Path, port: int = PROJECT_PORT, settings: dict[str, str] | None = None):
        self.datadir = Path(datadir)
        self.sockdir = self.datadir / "run"
        self.port = port
        self.settings = settings or {}

    @property
    def pgdata(self) -> Path:
        return self.datadir / "data"

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.datadir, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            # postgres must be able to reach the directory from /.
            for parent in self.datadir.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    raise SystemExit(f"{parent} is not searchable by the postgres user")
        subprocess.run(
            _as_postgres([
                str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
            ]),
            check=True, stdout=subprocess.DEVNULL,
        )
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.sockdir}'",
            "port": str(self.port),
            "max_connections": "100",
            "shared_buffers": "'256MB'",
            **self.settings,
        }
        with open(self.pgdata / "postgresql.auto.conf", "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def is_running(self) -> bool:
        result = subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "status"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def start(self) -> None:
        self.init()
        if self.is_running():
            return
        subprocess.run(
            _as_postgres([
                str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                "-l", str(self.datadir / "postgres.log"), "start",
            ]),
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if (self.pgdata / "PG_VERSION").exists() and self.is_running():
            subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"]),
                check=True, stdout=subprocess.DEVNULL,
            )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={quote(str(self.sockdir), safe='')}&port={self.port}"


def yoyo_url(url: str) -> str:
    """yoyo picks its driver from the scheme: psycopg 3 is postgresql+psycopg."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database, as a libpq key=value string."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def to_url(conninfo: str) -> str:
    """A libpq key=value string as a postgresql:// URL (yoyo takes URLs only)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(info.pop("user", "postgres")), safe="")
    password = info.pop("password", None)
    host = info.pop("host", "")
    port = info.pop("port", None)
    dbname = quote(str(info.pop("dbname", "postgres")), safe="")
    auth = user + (":" + quote(str(password), safe="") if password else "")
    query = {k: str(v) for k, v in info.items()}
    if host.startswith("/"):
        query["host"] = host
        netloc = auth + "@"
    else:
        netloc = auth + "@" + host + (f":{port}" if port else "")
        port = None
    if port:
        query["port"] = str(port)
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return f"postgresql://{netloc}/{dbname}" + (f"?{qs}" if qs else "")


def create_database(server_url: str, dbname: str, *, replace: bool = True) -> str:
    """Creates ``dbname`` on the server of ``server_url``; returns its conninfo."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        if replace:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    return with_dbname(server_url, dbname)


def drop_database(server_url: str, dbname: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def yoyo(command: str, db_conninfo: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Runs the yoyo command line on ``migrations/``, as a DBA would."""
    exe = Path(sys.executable).with_name("yoyo")
    return subprocess.run(
        [str(exe), command, "--batch", "--no-config-file", "--database",
         yoyo_url(to_url(db_conninfo)), *extra, str(MIGRATIONS)],
        check=True, capture_output=True, text=True,
    )


def source_files() -> Iterator[Path]:
    """schema/, functions/, policies/ files in the order a migration concatenates them."""
    modules = sorted({p.name for d in ("schema", "functions", "policies") for p in (ROOT / d).glob("*.sql")})
    for module in modules:
        for d in ("schema", "functions", "policies"):
            path = ROOT / d / module
            if path.exists():
                yield path


def psql_file(db_conninfo: str, path: Path) -> None:
    subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db_conninfo, "-f", str(path)],
        check=True, capture_output=True, text=True,
    )


def build_from_source(db_conninfo: str) -> None:
    for path in source_files():
        psql_file(db_conninfo, path)


def install_test_helpers(db_conninfo: str) -> None:
    """pgTAP, plpgsql_check and the tests schema: test databases only, never migrations."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute("create schema if not exists tests")
        conn.execute("create extension if not exists pgtap schema tests")
        conn.execute("create extension if not exists plpgsql_check schema tests")
        dbname = conn.info.dbname
        alter = sql.SQL("alter database {} set search_path = \"$user\", public, tests")
        conn.execute(alter.format(sql.Identifier(dbname)))
    psql_file(db_conninfo, TEST_HELPERS)


def build_test_database(server_url: str, dbname: str) -> str:
    conninfo = create_database(server_url, dbname)
    yoyo("apply", conninfo)
    install_test_helpers(conninfo)
    return conninfo


WEBHOOK_LOGIN = "paycore_webhook_app"


def ensure_webhook_login(cluster: Cluster, dbname: str) -> str:
    """The local webhook logs in as a member of paycore_webhook, never as a superuser."""
    with psycopg.connect(cluster.url(dbname), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", (WEBHOOK_LOGIN,)).fetchone():
            create = sql.SQL("create role {} login in role paycore_webhook")
            conn.execute(create.format(sql.Identifier(WEBHOOK_LOGIN)))
    return cluster.url(dbname).replace("postgresql://postgres@", f"postgresql://{WEBHOOK_LOGIN}@", 1)


def main(argv: list[str]) -> int:
    cluster = Cluster(PROJECT_DATADIR)
    command = argv[0] if argv else "url"
    dbname = argv[1] if len(argv) > 1 else "paycore"
    if command == "start":
        cluster.start()
        print(cluster.url(dbname))
    elif command == "stop":
        cluster.stop()
    elif command == "migrate":
        cluster.start()
        conninfo = create_database(cluster.url(), dbname, replace=False)
        print(yoyo("apply", conninfo).stderr, end="")
    elif command == "testdb":
        cluster.start()
        build_test_database(cluster.url(), dbname)
        print(cluster.url(dbname))
    elif command == "url":
        print(cluster.url(dbname))
    elif command == "env":
        print(f"PGHOST={cluster.sockdir} PGPORT={cluster.port} PGUSER=postgres PGDATABASE={dbname}")
    elif command == "webhook-url":
        print(ensure_webhook_login(cluster, dbname))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
