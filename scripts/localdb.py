"""Local PostgreSQL clusters and paycore databases, for the main job, tests and benchmarks.

A cluster lives in a directory of its own, listens only on a private Unix socket inside
that directory, and runs as the ``postgres`` OS user when this process is root (``initdb``
and ``postgres`` refuse root). Databases are built the way a DBA builds them: ``yoyo
apply`` of ``migrations/``; or, for the drift test, from ``schema/``, ``functions/`` and
``policies/`` in module order.

The project cluster lives in the repo's ``.pgdata/`` when the ``postgres`` OS user can reach
it and its socket path fits a Unix socket (at most 107 bytes). Otherwise (e.g. a clone under
``/root``, mode 700) it lives in ``/var/lib/paycore/<hash of the repo path>/`` (as root; else
``$TMPDIR/paycore-<uid>/<hash>/``). Whichever holds a cluster is found again by every command,
and ``clean`` removes both.

Command line (used by the Makefile)::

    python scripts/localdb.py start            # project cluster started; says where it is
    python scripts/localdb.py migrate [DB]      # start, create DB if missing, yoyo apply; says what it did
    python scripts/localdb.py testdb DB         # fresh DB: migrations + test helpers
    python scripts/localdb.py url [DB]          # print the libpq URL
    python scripts/localdb.py env [DB]          # PGHOST=... PGPORT=... for psql: eval "export $(...)"
    python scripts/localdb.py webhook-url [DB]  # URL of the webhook's login (member of paycore_webhook)
    python scripts/localdb.py psql [DB]         # migrate quietly, then psql on DB as postgres
    python scripts/localdb.py where             # the project cluster's directory
    python scripts/localdb.py stop
    python scripts/localdb.py clean             # stop and remove the project cluster (.pgdata/ and fallback)

``stop``, ``where`` and ``clean`` work with the system python3 too (no psycopg needed).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

try:
    import psycopg
    from psycopg import sql
except ImportError:  # stop / where / clean run before the venv exists (make clean)
    psycopg = sql = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
TEST_HELPERS = ROOT / "tests" / "helpers.sql"
PROJECT_PORT = 54329
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# sizeof(sockaddr_un.sun_path) on Linux is 108, with the terminating NUL.
MAX_SOCKET_PATH = 107


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run_as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    # From /: the caller's directory (e.g. a clone under /root) may be out of the server user's reach.
    return subprocess.run(_as_postgres(cmd), cwd="/", **kwargs)


def _nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def server_can_reach(directory: Path) -> bool:
    """Whether the OS user that runs the server can search ``directory`` and every directory above.

    Asked of the kernel (access(2) as that user), so groups and ACLs count.
    """
    if os.geteuid() != 0:
        return os.access(directory, os.X_OK)
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ).returncode == 0


def _not_searchable_by_others(directory: Path) -> list[Path]:
    """The directories from / to ``directory`` without the others' search bit (for the fix)."""
    return [p for p in [*reversed(directory.parents), directory] if p.stat().st_mode & 0o001 == 0]


class Cluster:
    """A PostgreSQL cluster in ``datadir``, reachable through a socket in ``datadir/run``."""

    def __init__(self, datadir: Path, port: int = PROJECT_PORT, settings: dict[str, str] | None = None):
        self.datadir = Path(datadir)
        self.sockdir = self.datadir / "run"
        self.port = port
        self.settings = settings or {}
        self._made_above: list[Path] = []  # directories above datadir that init created

    @property
    def pgdata(self) -> Path:
        return self.datadir / "data"

    @property
    def socket(self) -> Path:
        return self.sockdir / f".s.PGSQL.{self.port}"

    def exists(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def location_problem(self) -> str | None:
        """Why a cluster cannot live in ``datadir`` (None if it can); checks without creating anything."""
        length = len(os.fsencode(str(self.socket)))
        if length > MAX_SOCKET_PATH:
            return (f"its socket path {self.socket} is {length} bytes, more than a Unix socket takes "
                    f"({MAX_SOCKET_PATH})")
        # datadir itself is created (or chowned) for the server; everything above must be searchable.
        above = _nearest_existing(self.datadir if self.exists() else self.datadir.parent)
        if not server_can_reach(above):
            who = "the postgres OS user" if os.geteuid() == 0 else "this user"
            blockers = _not_searchable_by_others(above)
            fix = f"chmod o+x {' '.join(map(str, blockers))}" if blockers else f"an ACL for {who}"
            return f"{who} cannot reach {above}; `{fix}` would let it"
        return None

    def init(self) -> bool:
        """Creates the cluster unless it exists; True if created. On failure nothing is left behind."""
        if self.exists():
            return False
        problem = self.location_problem()
        if problem:
            raise SystemExit(f"cannot create a PostgreSQL cluster in {self.datadir}: {problem} "
                             "(or use a directory it can reach); nothing was created")
        # What this call creates, removed again on failure: the cluster's own directories (whole),
        # and directories above it (only while empty: another cluster may have moved in).
        self._made_above = [p for p in self.datadir.parents if not p.exists()]
        made = [p for p in (self.datadir, self.sockdir, self.pgdata) if not p.exists()]
        try:
            for path in reversed(self._made_above):
                path.mkdir(mode=0o755, exist_ok=True)
                path.chmod(0o755)  # whatever the umask: the server must pass through
            self.datadir.mkdir(mode=0o755, exist_ok=True)
            self.sockdir.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                for path in (self.datadir, self.sockdir):
                    os.chown(path, pw.pw_uid, pw.pw_gid)
            _run_as_postgres(
                [
                    str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                    "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                ],
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
        except BaseException:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            self._remove_made_above()
            raise
        return True

    def _remove_made_above(self) -> None:
        for path in self._made_above:  # deepest first
            try:
                path.rmdir()
            except OSError:
                pass

    def is_running(self) -> bool:
        if not self.exists():
            return False
        result = _run_as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "status"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def start(self) -> str:
        """Starts the cluster, creating it if needed: 'created', 'started' or 'running'.

        A cluster created here and failing to start is removed again (its log is printed first).
        """
        if self.exists():
            problem = self.location_problem()
            if problem:
                raise SystemExit(f"the PostgreSQL cluster in {self.datadir} cannot be started: {problem} "
                                 "(or remove it, e.g. make clean, and start afresh)")
        created = self.init()
        if self.is_running():
            return "running"
        log = self.datadir / "postgres.log"
        result = _run_as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(log), "start"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            if created:
                self.destroy()
                self._remove_made_above()
            raise SystemExit(
                f"PostgreSQL in {self.datadir} did not start{' (removed again)' if created else ''}:\n"
                f"{result.stderr}{tail}"
            )
        return "created" if created else "started"

    def stop(self) -> bool:
        """Stops the cluster if it runs; True if it was running."""
        if self.is_running():
            _run_as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
                check=True, stdout=subprocess.DEVNULL,
            )
            return True
        return False

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={quote(str(self.sockdir), safe='')}&port={self.port}"


# The project cluster: .pgdata/ in the repo, or a fallback directory the server can reach.

def fallback_base() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/paycore")
    return Path(tempfile.gettempdir()) / f"paycore-{os.getuid()}"


def fallback_datadir(root: Path = ROOT, base: Path | None = None) -> Path:
    """Where the project cluster of the repo at ``root`` lives when ``root/.pgdata`` cannot serve."""
    digest = hashlib.sha256(os.fsencode(str(Path(root).resolve()))).hexdigest()[:12]
    return (base or fallback_base()) / digest


def project_datadir(root: Path = ROOT, base: Path | None = None) -> tuple[Path, str | None]:
    """The project cluster's directory, and why it is not ``root/.pgdata`` (None when it is).

    An existing cluster wins (in-repo first); otherwise ``.pgdata`` unless it cannot serve.
    """
    in_repo = Cluster(Path(root) / ".pgdata")
    fallback = Cluster(fallback_datadir(root, base))
    if in_repo.exists():
        return in_repo.datadir, None
    if fallback.exists():
        return fallback.datadir, in_repo.location_problem() or "a cluster is already there"
    problem = in_repo.location_problem()
    return (fallback.datadir, problem) if problem else (in_repo.datadir, None)


def project_cluster(root: Path = ROOT, base: Path | None = None) -> Cluster:
    return Cluster(project_datadir(root, base)[0])


def _remove_empty_tree(path: Path) -> None:
    """Removes ``path`` if it holds nothing but empty directories (e.g. a stale .pgdata/run)."""
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        _remove_empty_tree(child)
    try:
        path.rmdir()
    except OSError:
        pass


def start_project(root: Path = ROOT, base: Path | None = None) -> tuple[Cluster, str, str | None]:
    """Starts the project cluster: (cluster, 'created' | 'started' | 'running', why not .pgdata)."""
    datadir, why = project_datadir(root, base)
    cluster = Cluster(datadir)
    if why:
        _remove_empty_tree(Path(root) / ".pgdata")  # left behind by an older failed run
    state = cluster.start()
    if why and state == "created":
        (datadir / "repo").write_text(f"{Path(root).resolve()}\n")  # whose cluster this is
    return cluster, state, why


def clean_project(root: Path = ROOT, base: Path | None = None) -> list[Path]:
    """Stops and removes every project cluster of ``root`` (.pgdata and fallback); returns what went."""
    removed = []
    for datadir in (Path(root) / ".pgdata", fallback_datadir(root, base)):
        if datadir.exists():
            Cluster(datadir).destroy()
            removed.append(datadir)
    try:
        (base or fallback_base()).rmdir()  # only if no other clone's cluster is in it
    except OSError:
        pass
    return removed


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
    proc = subprocess.run(
        [str(exe), command, "--batch", "--no-config-file", "--database",
         yoyo_url(to_url(db_conninfo)), *extra, str(MIGRATIONS)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        # The last lines of yoyo's traceback name the failing statement and PostgreSQL's error.
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"yoyo {command} failed (exit {proc.returncode}):\n{tail}")
    return proc


def source_files() -> Iterator[Path]:
    """schema/, functions/, policies/ files in the order a migration concatenates them."""
    modules = sorted({p.name for d in ("schema", "functions", "policies") for p in (ROOT / d).glob("*.sql")})
    for module in modules:
        for d in ("schema", "functions", "policies"):
            path = ROOT / d / module
            if path.exists():
                yield path


def psql_file(db_conninfo: str, path: Path, *, single_transaction: bool = False) -> None:
    subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *(["-1"] if single_transaction else []),
         "-d", db_conninfo, "-f", str(path)],
        check=True, capture_output=True, text=True,
    )


def build_from_source(db_conninfo: str) -> None:
    # One transaction per file, as a migration is one: deferred constraints (an app and its
    # free tier) are checked at the end of the file.
    for path in source_files():
        psql_file(db_conninfo, path, single_transaction=True)


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


def applied_migrations(db_conninfo: str) -> list[str]:
    """Ids of the migrations yoyo has applied to the database (none if it never ran there)."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        if conn.execute("select to_regclass('public._yoyo_migration')").fetchone()[0] is None:
            return []
        rows = conn.execute("select migration_id from public._yoyo_migration order by migration_id")
        return [r[0] for r in rows]


def prepare(dbname: str = "paycore", root: Path = ROOT) -> list[str]:
    """The project database, ready: cluster started, database created, migrations applied.

    Returns the lines that say what was done, for the user.
    """
    cluster, state, why = start_project(root)
    where = str(cluster.datadir)
    if why:
        where += f"  (outside the repo: {why})"
    lines = [
        f"cluster:    {where}",
        f"            {state}; socket {cluster.socket}; log {cluster.datadir / 'postgres.log'}",
    ]
    server = cluster.url()
    with psycopg.connect(server, autocommit=True) as conn:
        existed = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
    conninfo = create_database(server, dbname, replace=False)
    before = applied_migrations(conninfo)
    yoyo("apply", conninfo)
    new = [m for m in applied_migrations(conninfo) if m not in before]
    lines.append(f"database:   {dbname} ({'exists' if existed else 'created'}), "
                 f"owner postgres: {cluster.url(dbname)}")
    lines.append(f"migrations: {'applied ' + ', '.join(new) if new else 'none new'}"
                 f" ({len(before) + len(new)} applied in all)")
    return lines


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "url"
    dbname = argv[1] if len(argv) > 1 else "paycore"
    if command == "clean":
        removed = clean_project()
        print("removed: " + (", ".join(map(str, removed)) if removed else "nothing (no project cluster)"))
        return 0
    cluster = project_cluster()
    if command == "start":
        cluster, state, why = start_project()
        print(f"cluster {state}: {cluster.datadir}" + (f" (outside the repo: {why})" if why else ""))
        print(f"socket: {cluster.socket}")
    elif command == "stop":
        if cluster.stop():
            print(f"stopped the cluster in {cluster.datadir}")
    elif command == "where":
        print(cluster.datadir)
    elif command == "migrate":
        print("\n".join(prepare(dbname)))
    elif command == "psql":
        for line in prepare(dbname):
            print(line, file=sys.stderr)
        psql = str(PG_BIN / "psql")
        os.execv(psql, [psql, "-X", "-d", cluster.url(dbname), *argv[2:]])
    elif command == "testdb":
        cluster = start_project()[0]
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
