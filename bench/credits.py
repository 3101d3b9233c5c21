#!/usr/bin/env python3
"""Throughput of public.adjust_credits against a bare-SQL floor, measured in the same run.

The floor, ``bench.floor_adjust``, is the least any credit change must do: one UPDATE of
the balance and one INSERT of a ledger row (into ``bench.ledger``, a copy of
``public.credit_transactions`` with its defaults, checks and indexes but without its
foreign keys and triggers). Both are driven by pgbench with the same user lookup and the
same settings.

The headline is paired: one pgbench run per round with both scripts
(``-f floor.sql@1 -f adjust.sql@1``), so that both see exactly the same noise, and
ratio = floor latency average / adjust_credits latency average from pgbench's per-script
report (the per-call throughput ratio); the median over ``--rounds`` runs and its min-max
are reported per scenario; the target is >= 0.7. Separate, interleaved floor and
adjust_credits runs (``--separate-rounds``) follow as a secondary table of absolute tps.

This is a report, not a test: it exits 0 whatever the ratio.

    .venv/bin/python bench/credits.py                      # throwaway cluster, 8 s runs
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


@dataclass(frozen=True)
class PairedRun:
    """One pgbench run of every variant's script at weight 1: pgbench's per-script report."""

    latency_ms: dict[str, float]  # "latency average" per script
    transactions: dict[str, int]
    tps: float  # the whole mix

    def ratio(self, variant: str = REAL) -> float:
        """floor latency / variant latency: the variant's per-call throughput relative to the floor."""
        return self.latency_ms[FLOOR] / self.latency_ms[variant]


@dataclass
class Result:
    scenario: Scenario
    threads: int
    synchronous_commit: str
    paired: list[PairedRun] = field(default_factory=list)
    tps: dict[str, list[float]] = field(default_factory=dict)  # separate runs, per variant

    # Paired runs: the headline.
    def ratios(self, variant: str = REAL) -> list[float]:
        return [run.ratio(variant) for run in self.paired]

    def ratio(self, variant: str = REAL) -> float:
        return statistics.median(self.ratios(variant))

    def latency(self, variant: str) -> float:
        return statistics.median(run.latency_ms[variant] for run in self.paired)

    def verdict(self) -> str:
        if self.scenario.info:
            return "info"
        return "ok" if self.ratio() >= TARGET_RATIO else "BELOW TARGET"

    # Separate runs: absolute tps per variant.
    @property
    def separate(self) -> bool:
        return bool(self.tps.get(FLOOR))

    def median_tps(self, variant: str) -> float:
        return statistics.median(self.tps[variant])

    def separate_ratio(self, variant: str = REAL) -> float:
        floor = self.median_tps(FLOOR)
        return self.median_tps(variant) / floor if floor else 0.0

    def as_dict(self) -> dict[str, Any]:
        variants = list(self.paired[0].latency_ms)
        return {
            "scenario": self.scenario.name,
            "clients": self.scenario.clients,
            "threads": self.threads,
            "synchronous_commit": self.synchronous_commit,
            "description": self.scenario.description,
            "info": self.scenario.info,
            "ratio": round(self.ratio(), 3),
            "ratio_min": round(min(self.ratios()), 3),
            "ratio_max": round(max(self.ratios()), 3),
            "meets_target": None if self.scenario.info else self.ratio() >= TARGET_RATIO,
            "paired": {
                "floor_latency_ms": round(self.latency(FLOOR), 3),
                "adjust_credits_latency_ms": round(self.latency(REAL), 3),
                "runs": [
                    {
                        "latency_ms": {name: round(ms, 3) for name, ms in run.latency_ms.items()},
                        "transactions": run.transactions,
                        "tps": round(run.tps, 1),
                        "ratio": round(run.ratio(), 3),
                    }
                    for run in self.paired
                ],
            },
            "separate": {
                "floor_tps": round(self.median_tps(FLOOR), 1),
                "adjust_credits_tps": round(self.median_tps(REAL), 1),
                "ratio": round(self.separate_ratio(), 3),
                "runs": {name: [round(t, 1) for t in runs] for name, runs in self.tps.items()},
            }
            if self.separate
            else None,
            "candidates": {
                name: {
                    "latency_ms": round(self.latency(name), 3),
                    "ratio": round(self.ratio(name), 3),
                    "ratio_min": round(min(self.ratios(name)), 3),
                    "ratio_max": round(max(self.ratios(name)), 3),
                    "separate_tps": round(self.median_tps(name), 1) if self.separate else None,
                }
                for name in variants
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
# With more than one -f, pgbench 15 reports each script after the totals:
#   SQL script 1: /tmp/.../spread_8_floor.sql
#    - weight: 1 (targets 50.0% of total)
#    - 5311 transactions (50.3% of total, tps = 1772.755508)
#    - number of failed transactions: 0 (0.000%)
#    - latency average = 2.159 ms
#    - latency stddev = 1.193 ms
SCRIPT_RE = re.compile(r"^SQL script (\d+): ", re.MULTILINE)
SCRIPT_TXNS_RE = re.compile(r"^ - (\d+) transactions \(", re.MULTILINE)
SCRIPT_LATENCY_RE = re.compile(r"^ - latency average = ([0-9.]+) ms$", re.MULTILINE)


def pgbench(target: Target, scripts: list[Path], clients: int, threads: int, seconds: int) -> str:
    """stdout of one pgbench run; with several scripts each gets weight 1."""
    args, env = target.pgbench_args()
    files: list[str] = []
    for script in scripts:
        files += ["-f", f"{script}@1" if len(scripts) > 1 else str(script)]
    cmd = [
        str(PGBENCH), "-n", "-M", "prepared", "-T", str(seconds), "-c", str(clients), "-j", str(threads),
        *files, *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not TPS_RE.search(proc.stdout):
        raise RuntimeError(
            f"pgbench failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def run_pgbench(target: Target, script: Path, clients: int, threads: int, seconds: int) -> float:
    """tps of one script on its own."""
    match = TPS_RE.search(pgbench(target, [script], clients, threads, seconds))
    assert match
    return float(match.group(1))


def run_paired(
    target: Target, scripts: dict[str, Path], clients: int, threads: int, seconds: int
) -> PairedRun:
    """All variants' scripts in one run, so that they share exactly the same noise."""
    out = pgbench(target, list(scripts.values()), clients, threads, seconds)
    tps = TPS_RE.search(out)
    heads = list(SCRIPT_RE.finditer(out))
    if not tps or len(heads) != len(scripts):
        raise RuntimeError(f"unexpected pgbench output: {len(heads)} script reports\n{out}")
    latency: dict[str, float] = {}
    transactions: dict[str, int] = {}
    for i, (name, head) in enumerate(zip(scripts, heads, strict=True)):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(out)
        block = out[head.start():end]
        txns, ms = SCRIPT_TXNS_RE.search(block), SCRIPT_LATENCY_RE.search(block)
        if int(head.group(1)) != i + 1 or not txns or not ms or int(txns.group(1)) == 0:
            raise RuntimeError(f"unexpected pgbench report for script {i + 1} ({name}):\n{out}")
        transactions[name] = int(txns.group(1))
        latency[name] = float(ms.group(1))
    return PairedRun(latency, transactions, float(tps.group(1)))


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
    separate_rounds: int
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
            "separate_rounds": self.separate_rounds,
            "ratio": "floor latency average / adjust_credits latency average, same pgbench run (paired)",
            "migrations_sha256": self.digest,
            "load_average_1m": [min(self.loads), max(self.loads)] if self.loads else None,
            "invariant_violations": self.invariant_violations,
            "total_runtime_s": round(self.runtime_s, 1),
            "results": [r.as_dict() for r in self.results],
        }

    def render(self) -> str:
        f = self.facts
        separate = self.separate_rounds > 0
        lines = [
            "adjust_credits vs bare-SQL floor (pgbench -n -M prepared)",
            f"PostgreSQL {f['server_version']}; fsync={f['fsync']}, wal_level={f['wal_level']}, "
            f"shared_buffers={f['shared_buffers']}; {os.cpu_count()} CPUs ({platform.machine()}); "
            f"migrations sha256 {self.digest}",
            f"{self.users} users; {self.seconds} s per run; {self.rounds} paired runs"
            + (f" and {self.separate_rounds} separate run(s) per variant" if separate else "")
            + " per scenario; "
            f"1-min load average during runs {min(self.loads, default=0):.1f}"
            f"-{max(self.loads, default=0):.1f}",
            "",
            "paired: floor and adjust_credits in the same pgbench run (-f floor.sql@1 -f adjust.sql@1),",
            "ratio = floor latency / adjust_credits latency (per-call throughput ratio), "
            f"median and min-max of {self.rounds} runs",
            "",
        ]
        header = (
            f"{'scenario':<11} {'clients':>7} {'sync_commit':>11} {'floor ms':>9} "
            f"{'adjust ms':>9} {'ratio':>6} {'min-max':>11}  verdict"
        )
        lines += [header, "-" * len(header)]
        for r in self.results:
            spread = f"{min(r.ratios()):.3f}-{max(r.ratios()):.3f}"
            lines.append(
                f"{r.scenario.name:<11} {r.scenario.clients:>7} {r.synchronous_commit:>11} "
                f"{r.latency(FLOOR):>9.3f} {r.latency(REAL):>9.3f} {r.ratio():>6.3f} {spread:>11}  "
                f"{r.verdict()}"
            )
        lines += [
            "",
            f"target: paired ratio >= {TARGET_RATIO} (median); 'info' rows are not held to it.",
            "caveat: with several clients both scripts wait in the same queues (CPU run queue, WAL flush);",
            "those waits add alike to both latencies and pull the ratio towards 1. In 'hot' with several",
            "clients the one row lock serialises both scripts: a call mostly waits for the others' locks,",
            "so the paired ratio there is near 1 by construction; separate runs do not share waits.",
        ]
        if separate:
            lines += [
                "",
                "separate runs (one script per run, floor and adjust_credits interleaved; "
                f"median tps of {self.separate_rounds}):",
            ]
            header = (
                f"{'scenario':<11} {'clients':>7} {'sync_commit':>11} {'floor tps':>10} "
                f"{'adjust tps':>10} {'ratio':>6}"
            )
            lines += [header, "-" * len(header)]
            for r in self.results:
                lines.append(
                    f"{r.scenario.name:<11} {r.scenario.clients:>7} {r.synchronous_commit:>11} "
                    f"{r.median_tps(FLOOR):>10.1f} {r.median_tps(REAL):>10.1f} {r.separate_ratio():>6.3f}"
                )
            lines.append("ratio here = adjust_credits tps / floor tps, from different runs: different noise.")
        if self.candidates:
            lines += ["", "candidates (a third script in the same paired runs):"]
            lines.append(
                f"{'scenario':<11} {'clients':>7} {'candidate':<24} {'ms':>7} {'ratio':>6} "
                f"{'vs adjust_credits':>17}" + (f" {'separate tps':>12}" if separate else "")
            )
            for r in self.results:
                for c in self.candidates:
                    # Per-call throughput of the candidate against adjust_credits, run by run.
                    change = statistics.median(
                        run.latency_ms[REAL] / run.latency_ms[c.name] for run in r.paired
                    )
                    lines.append(
                        f"{r.scenario.name:<11} {r.scenario.clients:>7} {c.name:<24} "
                        f"{r.latency(c.name):>7.3f} {r.ratio(c.name):>6.3f} {change - 1:>+16.1%}"
                        + (f" {r.median_tps(c.name):>12.1f}" if separate else "")
                    )
        lines += ["", "runs (in run order):"]
        for r in self.results:
            lines.append(f"  {r.scenario.name:<11} c={r.scenario.clients:<3} j={r.threads:<2} "
                         f"({r.scenario.description})")
            lines.append(
                "    paired ratio " + ", ".join(f"{x:.3f}" for x in r.ratios())
                + "; ms " + "; ".join(
                    f"{name} " + ", ".join(f"{run.latency_ms[name]:.3f}" for run in r.paired)
                    for name in r.paired[0].latency_ms
                )
                + "; mix tps " + ", ".join(f"{run.tps:.0f}" for run in r.paired)
            )
            if r.separate:
                runs = (f"{name} " + ", ".join(f"{t:.0f}" for t in tps) for name, tps in r.tps.items())
                lines.append("    separate tps " + "; ".join(runs))
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
    parser.add_argument("--seconds", type=int, default=8, help="length of each pgbench run (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="paired runs (both scripts in one pgbench run) per scenario: the headline (default 3)",
    )
    parser.add_argument(
        "--separate-rounds", type=int, default=1,
        help="separate runs per variant and scenario, interleaved, for absolute tps (default 1; 0: none)",
    )
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
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.separate_rounds < 0 or args.seconds < 1:
        parser.error("--rounds and --seconds must be >= 1, --separate-rounds >= 0")
    return args


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
            # Paired and separate runs alternate, so that drift hits both kinds alike.
            for round_no in range(1, max(args.rounds, args.separate_rounds) + 1):
                label = f"{scenario.name} c={scenario.clients} round {round_no}"
                if round_no <= args.rounds:
                    checkpoint(conninfo)
                    run = run_paired(target, scripts, scenario.clients, result.threads, args.seconds)
                    result.paired.append(run)
                    loads.append(os.getloadavg()[0])
                    log(
                        f"{label} paired: "
                        + ", ".join(f"{v.name} {run.latency_ms[v.name]:.3f} ms" for v in variants)
                        + f", ratio {run.ratio():.3f}"
                    )
                if round_no <= args.separate_rounds:
                    for variant in variants:
                        checkpoint(conninfo)
                        tps = run_pgbench(
                            target, scripts[variant.name], scenario.clients, result.threads, args.seconds
                        )
                        result.tps[variant.name].append(tps)
                        loads.append(os.getloadavg()[0])
                    log(
                        f"{label} separate: "
                        + ", ".join(f"{v.name} {result.tps[v.name][-1]:.0f} tps" for v in variants)
                    )
            results.append(result)
        broken = check_invariant(conninfo)
    report = Report(
        results, facts, candidates, args.users, args.seconds, args.rounds, args.separate_rounds, loads,
        broken, time.monotonic() - started, digest,
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
