#!/usr/bin/env python3
"""Throughput of public.adjust_credits against a bare-SQL floor, measured in one run.

The floor, ``bench.floor_adjust``, is the least any credit change must do: one UPDATE of
the balance and one INSERT of a ledger row (into ``bench.ledger``, a copy of
``public.credit_transactions`` with its defaults, checks and indexes but without its
foreign keys and triggers). Both are driven by pgbench with the same scripts, the same user
lookup and the same settings; floor and adjust_credits runs are interleaved so that drift
on a noisy machine hits both alike. The ratio adjust_credits tps / floor tps (medians) is
reported per scenario; the target is >= 0.7.

This is a report, not a test: it exits 0 whatever the ratio.

    .venv/bin/python bench/credits.py                      # throwaway cluster, 10 s runs
    .venv/bin/python bench/credits.py --seconds 8 --json   # JSON on stdout
    .venv/bin/python bench/credits.py --candidate /tmp/lean.sql   # also time bench.lean(...)
    DATABASE_URL=postgresql://... .venv/bin/python bench/credits.py   # existing server
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import localdb  # noqa: E402

TARGET_RATIO = 0.7
BENCH_DB = "paycore_bench"
BENCH_PORT = 55432
PGBENCH = localdb.PG_BIN / "pgbench"
START_BALANCE = 1_000_000
FLOOR = "floor"
REAL = "adjust_credits"

SETUP_SQL = """
create schema bench;

-- Users by number, so that pgbench scripts can pick one with \\set u random(1, N).
create table bench.users (n integer primary key, id uuid not null unique);
insert into auth.users (id, email)
select gen_random_uuid(), 'bench-' || n || '@example.invalid'
from generate_series(1, %(users)s) as n;
insert into bench.users (n, id)
select row_number() over (order by u.email), u.id
from auth.users as u
where u.email like 'bench-%%@example.invalid';

-- The floor: the same ledger shape (defaults, checks, indexes), no foreign keys, no triggers.
create table bench.ledger (like public.credit_transactions including all);

create function bench.floor_adjust(p_user_id uuid, p_amount bigint)
returns bigint
language plpgsql volatile
as $$
declare
    v bigint;
begin
    update public.credits set balance = balance + p_amount where user_id = p_user_id
    returning balance into v;
    insert into bench.ledger (user_id, amount, balance_after, type)
    values (p_user_id, p_amount, v, 'bench');
    return v;
end;
$$;
"""

# Every script looks the user up the same way, so the floor pays for the lookup too.
LOOKUP = "(select id from bench.users where n = :u)"
PICK_SPREAD = "\\set u random(1, {users})\n"
PICK_HOT = "\\set u 1\n"
PICK_KEY = "\\set k random(1, 4611686018427387903)\n"
KEY_ARGS = ", null, '{}', :client_id::text || '-' || :k::text"


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    hot: bool = False  # every client on user 1
    keyed: bool = False  # a unique idempotency key per adjust_credits call
    info: bool = False  # reported, not held to the target
    description: str = ""

    def script(self, function: str, users: int) -> str:
        """The pgbench script that calls ``function`` (the floor or an adjust_credits)."""
        text = PICK_HOT if self.hot else PICK_SPREAD.format(users=users)
        if function == "bench.floor_adjust":
            return text + f"select * from bench.floor_adjust({LOOKUP}, 1);\n"
        if self.keyed:
            text += PICK_KEY
        return text + f"select * from {function}({LOOKUP}, 1, 'bench'{KEY_ARGS if self.keyed else ''});\n"


def scenarios(client_counts: list[int]) -> list[Scenario]:
    result = [Scenario("spread", c, description="random user of N, +1") for c in client_counts]
    result += [
        Scenario("hot", c, hot=True, description="every client on one user, +1") for c in client_counts
    ]
    result.append(
        Scenario(
            "spread+key", max(client_counts), keyed=True, info=True,
            description="random user of N, +1, a unique idempotency key per call",
        )
    )
    return result


@dataclass(frozen=True)
class Variant:
    name: str
    function: str


@dataclass
class Result:
    scenario: Scenario
    threads: int
    synchronous_commit: str
    tps: dict[str, list[float]] = field(default_factory=dict)

    def median(self, variant: str) -> float:
        return statistics.median(self.tps[variant])

    def ratio(self, variant: str = REAL) -> float:
        floor = self.median(FLOOR)
        return self.median(variant) / floor if floor else 0.0

    def verdict(self) -> str:
        if self.scenario.info:
            return "info"
        return "ok" if self.ratio() >= TARGET_RATIO else "BELOW TARGET"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "clients": self.scenario.clients,
            "threads": self.threads,
            "synchronous_commit": self.synchronous_commit,
            "description": self.scenario.description,
            "info": self.scenario.info,
            "floor_tps": round(self.median(FLOOR), 1),
            "adjust_credits_tps": round(self.median(REAL), 1),
            "ratio": round(self.ratio(), 3),
            "meets_target": None if self.scenario.info else self.ratio() >= TARGET_RATIO,
            "runs": {name: [round(t, 1) for t in runs] for name, runs in self.tps.items()},
            "candidates": {
                name: {"tps": round(self.median(name), 1), "ratio": round(self.ratio(name), 3)}
                for name in self.tps
                if name not in (FLOOR, REAL)
            },
        }


@dataclass(frozen=True)
class Target:
    """How pgbench reaches the bench database: flags plus libpq environment variables."""

    conninfo: str

    def pgbench_args(self) -> tuple[list[str], dict[str, str]]:
        info = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        args: list[str] = []
        for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
            if info.get(key):
                args += [flag, str(info[key])]
        env = dict(os.environ)
        env_names = {"password": "PGPASSWORD", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT"}
        for key, name in env_names.items():
            if info.get(key):
                env[name] = str(info[key])
        args.append(str(info.get("dbname", BENCH_DB)))
        return args, env


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def bench_database(database_url: str | None, keep: bool) -> Iterator[str]:
    """The conninfo of a fresh paycore_bench database, built with yoyo apply."""
    if database_url:
        conninfo = localdb.create_database(database_url, BENCH_DB)
        try:
            localdb.yoyo("apply", conninfo)
            yield conninfo
        finally:
            if keep:
                log(f"kept database: {conninfo}")
            else:
                localdb.drop_database(database_url, BENCH_DB)
        return
    datadir = Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    cluster = localdb.Cluster(datadir, port=BENCH_PORT, settings={"synchronous_commit": "on", "fsync": "on"})
    try:
        cluster.start()
        conninfo = localdb.create_database(cluster.url(), BENCH_DB)
        localdb.yoyo("apply", conninfo)
        yield conninfo
    finally:
        if keep:
            log(f"kept cluster in {datadir} (stop it with pg_ctl -D {cluster.pgdata} stop): "
                f"{cluster.url(BENCH_DB)}")
        else:
            cluster.destroy()


def setup(conninfo: str, users: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute((SETUP_SQL % {"users": int(users)}).encode())
            conn.execute(
                "select public.adjust_credits(u.id, %s, 'bench_seed') from bench.users as u order by u.n",
                (START_BALANCE,),
            )
        conn.execute("vacuum analyze")


def install_candidates(conninfo: str, paths: list[Path]) -> list[Variant]:
    """Each file creates bench.<file stem> with the signature of public.adjust_credits."""
    variants: list[Variant] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for path in paths:
            name = path.stem
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name in (FLOOR, REAL, "floor_adjust"):
                raise SystemExit(f"{path}: the file stem must be a lowercase SQL name, not {name!r}")
            conn.execute(path.read_text().encode())
            signature = f"bench.{name}(uuid, bigint, text, text, jsonb, text)"
            row = conn.execute("select to_regprocedure(%s) is not null", (signature,)).fetchone()
            if not row or not row[0]:
                raise SystemExit(f"{path} must create {signature}")
            variants.append(Variant(name, f"bench.{name}"))
    return variants


def server_facts(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo) as conn:
        facts: dict[str, str] = {}
        for setting in ("server_version", "synchronous_commit", "fsync", "wal_level", "shared_buffers"):
            row = conn.execute(f"show {setting}").fetchone()
            facts[setting] = str(row[0]) if row else "?"
        return facts


def migrations_digest() -> str:
    """Which SQL was measured: the files under migrations/ change while people work."""
    digest = hashlib.sha256()
    for path in sorted(localdb.MIGRATIONS.glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def checkpoint(conninfo: str) -> None:
    """Each run starts right after a checkpoint, so all pay the same full-page writes."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("checkpoint")
    except psycopg.errors.InsufficientPrivilege:
        pass


TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def run_pgbench(target: Target, script: Path, clients: int, threads: int, seconds: int) -> float:
    args, env = target.pgbench_args()
    cmd = [
        str(PGBENCH), "-n", "-M", "prepared", "-T", str(seconds), "-c", str(clients), "-j", str(threads),
        "-f", str(script), *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    match = TPS_RE.search(proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(
            f"pgbench failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return float(match.group(1))


def check_invariant(conninfo: str) -> int:
    """Users whose balance is not the sum of their ledger rows (must be 0).

    The floor (and any candidate floor) writes its rows to a ledger table in schema bench:
    every bench table with a user_id and an amount counts as a ledger.
    """
    with psycopg.connect(conninfo) as conn:
        ledgers = [
            sql.SQL("select user_id, amount from {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            for schema, table in conn.execute(
                """
                select n.nspname, c.relname
                from pg_catalog.pg_class as c
                join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
                where c.relkind = 'r'
                    and (n.nspname = 'bench' or (n.nspname, c.relname) = ('public', 'credit_transactions'))
                    and (
                        select count(*) from pg_catalog.pg_attribute as a
                        where a.attrelid = c.oid and a.attname in ('user_id', 'amount') and not a.attisdropped
                    ) = 2
                order by 1, 2
                """
            ).fetchall()
        ]
        query = sql.SQL(
            """
            select count(*)
            from public.credits as c
            left join (
                select l.user_id, sum(l.amount) as total from ({}) as l group by l.user_id
            ) as s on s.user_id = c.user_id
            where c.balance is distinct from s.total
            """
        ).format(sql.SQL(" union all ").join(ledgers))
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else -1


@dataclass
class Report:
    results: list[Result]
    facts: dict[str, str]
    candidates: list[Variant]
    users: int
    seconds: int
    rounds: int
    loads: list[float]
    invariant_violations: int
    runtime_s: float
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_ratio": TARGET_RATIO,
            "server": self.facts,
            "cpus": os.cpu_count(),
            "users": self.users,
            "seconds": self.seconds,
            "rounds": self.rounds,
            "migrations_sha256": self.digest,
            "load_average_1m": [min(self.loads), max(self.loads)] if self.loads else None,
            "invariant_violations": self.invariant_violations,
            "total_runtime_s": round(self.runtime_s, 1),
            "results": [r.as_dict() for r in self.results],
        }

    def render(self) -> str:
        f = self.facts
        lines = [
            "adjust_credits vs bare-SQL floor (pgbench -n -M prepared; floor and adjust_credits interleaved)",
            f"PostgreSQL {f['server_version']}; fsync={f['fsync']}, wal_level={f['wal_level']}, "
            f"shared_buffers={f['shared_buffers']}; {os.cpu_count()} CPUs ({platform.machine()}); "
            f"migrations sha256 {self.digest}",
            f"{self.users} users; {self.seconds} s per run; {self.rounds} runs per variant and scenario; "
            f"1-min load average during runs {min(self.loads, default=0):.1f}"
            f"-{max(self.loads, default=0):.1f}",
            "",
        ]
        header = (
            f"{'scenario':<11} {'clients':>7} {'sync_commit':>11} {'floor tps':>10} "
            f"{'adjust tps':>10} {'ratio':>6}  verdict"
        )
        lines += [header, "-" * len(header)]
        for r in self.results:
            lines.append(
                f"{r.scenario.name:<11} {r.scenario.clients:>7} {r.synchronous_commit:>11} "
                f"{r.median(FLOOR):>10.1f} {r.median(REAL):>10.1f} {r.ratio():>6.3f}  {r.verdict()}"
            )
        lines += [
            "",
            f"target: ratio = adjust_credits tps / floor tps >= {TARGET_RATIO} (medians of the runs); "
            "'info' rows are not held to it.",
        ]
        if self.candidates:
            lines += ["", "candidates (interleaved with the runs above):"]
            lines.append(f"{'scenario':<11} {'clients':>7} {'candidate':<24} {'tps':>10} {'ratio':>6} "
                         f"{'vs adjust_credits':>17}")
            for r in self.results:
                for c in self.candidates:
                    change = r.median(c.name) / r.median(REAL) - 1 if r.median(REAL) else 0.0
                    lines.append(
                        f"{r.scenario.name:<11} {r.scenario.clients:>7} {c.name:<24} "
                        f"{r.median(c.name):>10.1f} {r.ratio(c.name):>6.3f} {change:>+16.1%}"
                    )
        lines += ["", "runs (tps, in run order):"]
        for r in self.results:
            runs = "; ".join(f"{name} " + ", ".join(f"{t:.0f}" for t in tps) for name, tps in r.tps.items())
            lines.append(f"  {r.scenario.name:<11} c={r.scenario.clients:<3} j={r.threads:<2} {runs}")
            lines.append(f"  {'':<11}       ({r.scenario.description})")
        verdict = "ok" if self.invariant_violations == 0 else f"{self.invariant_violations} users VIOLATE it"
        lines += [
            "",
            f"ledger invariant afterwards (balance = sum of ledger rows): {verdict}",
            f"total runtime: {self.runtime_s:.0f} s",
        ]
        return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each pgbench run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant and scenario (default 2)")
    parser.add_argument("--users", type=int, default=1000, help="users with a balance (default 1000)")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"),
        help=f"server to use instead of a throwaway cluster; {BENCH_DB} is (re)created there and dropped "
        "afterwards (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--candidate", type=Path, action="append", default=[], metavar="FILE.sql",
        help="SQL that creates bench.<FILE stem> with adjust_credits' signature; timed alongside "
        "(repeatable; for trying changes without touching the migrations)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the cluster or database afterwards")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    started = time.monotonic()
    digest = migrations_digest()
    cpus = os.cpu_count() or 1
    results: list[Result] = []
    loads: list[float] = []
    with (
        bench_database(args.database_url, args.keep) as conninfo,
        tempfile.TemporaryDirectory(prefix="paycore-bench-scripts-") as scripts_dir,
    ):
        log(f"setting up {args.users} users ...")
        setup(conninfo, args.users)
        candidates = install_candidates(conninfo, args.candidate)
        variants = [Variant(FLOOR, "bench.floor_adjust"), Variant(REAL, "public.adjust_credits"), *candidates]
        facts = server_facts(conninfo)
        target = Target(conninfo)
        for scenario in scenarios(client_counts):
            result = Result(scenario, min(scenario.clients, cpus), facts["synchronous_commit"])
            scripts: dict[str, Path] = {}
            for variant in variants:
                stem = f"{scenario.name.replace('+', '_')}_{scenario.clients}_{variant.name}"
                path = Path(scripts_dir) / f"{stem}.sql"
                path.write_text(scenario.script(variant.function, args.users))
                scripts[variant.name] = path
                result.tps[variant.name] = []
            for round_no in range(1, args.rounds + 1):
                for variant in variants:
                    checkpoint(conninfo)
                    tps = run_pgbench(
                        target, scripts[variant.name], scenario.clients, result.threads, args.seconds
                    )
                    result.tps[variant.name].append(tps)
                    loads.append(os.getloadavg()[0])
                log(
                    f"{scenario.name} c={scenario.clients} round {round_no}: "
                    + ", ".join(f"{v.name} {result.tps[v.name][-1]:.0f} tps" for v in variants)
                )
            results.append(result)
        broken = check_invariant(conninfo)
    report = Report(
        results, facts, candidates, args.users, args.seconds, args.rounds, loads, broken,
        time.monotonic() - started, digest,
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
