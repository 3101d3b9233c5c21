"""The shared part of every paycore benchmark: a function against its bare-SQL floor.

A module's benchmark (``bench/credits.py``, later ``bench/usage.py`` ...) declares a
:class:`Benchmark`: how to set up a database after ``yoyo apply`` of ``migrations/``, and
a list of :class:`Scenario` s, each a client count and one pgbench script per variant (the
floor first, the function under test second, optional candidates after). The harness
does the rest:

- the server: a throwaway PostgreSQL 15 cluster in a temp dir (``scripts/localdb.py``,
  private Unix socket, ``synchronous_commit = on``, ``fsync = on``), or an existing server
  from ``--database-url`` / ``$PAYCORE_TEST_DATABASE_URL`` (never ``$DATABASE_URL``: that
  is production); one database per declared database label, built with ``yoyo apply``;
- the headline, by separate runs: per scenario an untimed warm-up run of each variant
  (``--warmup-seconds``, in reverse order), then ``--rounds`` rounds (at least 4), each
  round runs every variant's script alone (``pgbench -n -M prepared -T s -c C -j
  min(C, CPUs)``), order alternated per round (floor first, then function first), each
  run right after a ``checkpoint``; ratio of a round = function tps / floor tps of that
  round; reported: median and min-max of the ratios, median tps of each variant, clients,
  ``synchronous_commit`` as the server reports it, the load average during the runs;
- optionally (``--mixed-rounds``) a run of all scripts mixed at equal weight, as a side
  figure (it reads high: see bench/README.md);
- comparisons of one database against another (e.g. a 10M-row ledger against an empty
  one): difference of the median ratios, and the floor's own tps ratio;
- a text report on stdout (``--json``: JSON on stdout, the text on stderr), progress on
  stderr. Exit 0 whatever the result: a benchmark is a report, not a test.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import localdb  # noqa: E402

PGBENCH = localdb.PG_BIN / "pgbench"
URL_ENV = "PAYCORE_TEST_DATABASE_URL"
BENCH_PORT = 55432
TARGET_RATIO = 0.7
MAX_RATIO_DROP = 0.1
MIN_ROUNDS = 4
DEFAULT_DATABASE = "default"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Scenario:
    """One row of the report: a client count, a database, one pgbench script per variant.

    ``scripts`` maps variant name to script text, in this order: the floor, the function
    under test, then any candidates.
    """

    name: str
    clients: int
    scripts: dict[str, str]
    database: str = DEFAULT_DATABASE
    info: bool = False  # reported, not held to the target
    description: str = ""

    @property
    def variants(self) -> list[str]:
        return list(self.scripts)

    @property
    def key(self) -> tuple[str, int]:
        """What makes scenarios of two databases comparable."""
        return (self.name, self.clients)


Setup = Callable[[str, str, argparse.Namespace], dict[str, Any] | None]


@dataclass
class Benchmark:
    """What a module's benchmark declares; :func:`main` runs it.

    - ``setup(conninfo, database, args)`` runs after ``yoyo apply`` on each database; it
      may return facts to report (e.g. rows loaded). :func:`sql_setup` makes one from SQL.
    - ``scenarios(args)`` lists the scenarios, in run order.
    - ``check(conninfo)`` (optional) runs on each database after the runs: ``(ok, text)``.
    - ``probe(conninfo)`` (optional) runs before each scenario: facts shown with it.
    - ``compare`` (optional): ``(database, baseline)``, or a function of the options giving
      it or None; for every scenario (name, clients) run in both, the report shows
      ``ratio(database) - ratio(baseline)``, held to ``>= -max_ratio_drop``, and
      ``floor tps(database) / floor tps(baseline)``.
    """

    name: str  # databases are paycore_bench_<name>_<database>
    title: str
    setup: Setup
    scenarios: Callable[[argparse.Namespace], list[Scenario]]
    # Database labels (or a function of the options giving them), e.g. ["empty", "10M"].
    databases: list[str] | Callable[[argparse.Namespace], list[str]] = field(
        default_factory=lambda: [DEFAULT_DATABASE]
    )
    database_label: str = "database"
    check: Callable[[str], tuple[bool, str]] | None = None
    probe: Callable[[str], dict[str, Any]] | None = None
    compare: tuple[str, str] | Callable[[argparse.Namespace], tuple[str, str] | None] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    target_ratio: float = TARGET_RATIO
    max_ratio_drop: float = MAX_RATIO_DROP
    doc: str = ""


def sql_setup(text: str) -> Setup:
    """A setup that runs ``text`` (one or more statements) in one transaction, then vacuum analyze."""

    def setup(conninfo: str, database: str, args: argparse.Namespace) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(text.encode())
            conn.execute("vacuum analyze")

    return setup


# --------------------------------------------------------------------------- server and databases


@dataclass(frozen=True)
class Target:
    """How pgbench reaches a database: flags plus libpq environment variables."""

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
        args.append(str(info["dbname"]))
        return args, env


def database_name(bench: str, database: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", database.lower()).strip("_")
    return f"paycore_bench_{bench}" + (f"_{slug}" if slug and database != DEFAULT_DATABASE else "")


@contextmanager
def server(database_url: str | None, keep: bool) -> Iterator[tuple[str, bool]]:
    """``(server url, throwaway)``: an existing server, or a cluster in a temp dir."""
    if database_url:
        yield database_url, False
        return
    datadir = Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    cluster = localdb.Cluster(datadir, port=BENCH_PORT, settings={"synchronous_commit": "on", "fsync": "on"})
    try:
        cluster.start()
        yield cluster.url(), True
    finally:
        if keep:
            log(f"kept cluster in {datadir} (stop it with pg_ctl -D {cluster.pgdata} stop): {cluster.url()}")
        else:
            cluster.destroy()


@contextmanager
def databases(server_url: str, names: list[str], keep: bool) -> Iterator[dict[str, str]]:
    """Fresh databases (dropped first if they exist), built with yoyo apply of migrations/."""
    created: list[str] = []
    try:
        conninfos: dict[str, str] = {}
        for name in names:
            conninfo = localdb.create_database(server_url, name)
            created.append(name)
            localdb.yoyo("apply", conninfo)
            conninfos[name] = conninfo
        yield conninfos
    finally:
        if keep:
            log("kept databases: " + ", ".join(created))
        else:
            for name in created:
                localdb.drop_database(server_url, name)


def server_facts(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo) as conn:
        facts: dict[str, str] = {}
        for setting in (
            "server_version", "synchronous_commit", "fsync", "wal_level", "shared_buffers", "max_wal_size",
        ):
            row = conn.execute(sql.SQL("show {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = str(row[0]) if row else "?"
        return facts


def synchronous_commit(conninfo: str) -> str:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("show synchronous_commit").fetchone()
        return str(row[0]) if row else "?"


def checkpoint(conninfo: str) -> None:
    """Each run starts right after a checkpoint, so that all pay the same full-page writes."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("checkpoint")
    except psycopg.errors.InsufficientPrivilege:
        pass


def migrations_digest() -> str:
    """Which SQL was measured: the files under migrations/ change while people work."""
    digest = hashlib.sha256()
    for path in sorted(localdb.MIGRATIONS.glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------- pgbench

TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
TXNS_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
# With more than one -f, pgbench 15 reports each script after the totals:
#   SQL script 1: /tmp/.../spread_8_floor.sql
#    - weight: 1 (targets 50.0% of total)
#    - 5311 transactions (50.3% of total, tps = 1772.755508)
#    - number of failed transactions: 0 (0.000%)
#    - latency average = 2.159 ms
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
    failed = FAILED_RE.search(proc.stdout)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench: {failed.group(1)} failed transactions: {' '.join(cmd)}\n{proc.stdout}")
    return proc.stdout


def run_alone(target: Target, script: Path, clients: int, threads: int, seconds: int) -> float:
    """tps of one script on its own."""
    match = TPS_RE.search(pgbench(target, [script], clients, threads, seconds))
    assert match
    return float(match.group(1))


def run_mixed(
    target: Target, scripts: dict[str, Path], clients: int, threads: int, seconds: int
) -> dict[str, float]:
    """Latency average (ms) per script of one run with every script at weight 1."""
    out = pgbench(target, list(scripts.values()), clients, threads, seconds)
    heads = list(SCRIPT_RE.finditer(out))
    if len(heads) != len(scripts):
        raise RuntimeError(f"unexpected pgbench output: {len(heads)} script reports\n{out}")
    latency: dict[str, float] = {}
    for i, (name, head) in enumerate(zip(scripts, heads, strict=True)):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(out)
        block = out[head.start():end]
        txns, ms = SCRIPT_TXNS_RE.search(block), SCRIPT_LATENCY_RE.search(block)
        if int(head.group(1)) != i + 1 or not txns or not ms or int(txns.group(1)) == 0:
            raise RuntimeError(f"unexpected pgbench report for script {i + 1} ({name}):\n{out}")
        latency[name] = float(ms.group(1))
    return latency


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    scenario: Scenario
    threads: int
    synchronous_commit: str
    probe: dict[str, Any] = field(default_factory=dict)
    tps: dict[str, list[float]] = field(default_factory=dict)  # per variant, one per round
    orders: list[list[str]] = field(default_factory=list)  # run order per round
    mixed: list[dict[str, float]] = field(default_factory=list)  # latency ms per variant, per mixed run
    warmup: dict[str, float] = field(default_factory=dict)  # tps of the untimed warm-up runs

    @property
    def floor(self) -> str:
        return self.scenario.variants[0]

    @property
    def function(self) -> str:
        return self.scenario.variants[1]

    def ratios(self, variant: str | None = None) -> list[float]:
        """Per round: variant tps / floor tps of the same round."""
        variant = variant or self.function
        return [v / f if f else 0.0 for v, f in zip(self.tps[variant], self.tps[self.floor], strict=True)]

    def ratio(self, variant: str | None = None) -> float:
        return statistics.median(self.ratios(variant))

    def median_tps(self, variant: str) -> float:
        return statistics.median(self.tps[variant])

    def change(self, variant: str) -> float:
        """Median over rounds of variant tps / function tps, minus 1 (for candidates)."""
        return statistics.median(
            v / x if x else 0.0 for v, x in zip(self.tps[variant], self.tps[self.function], strict=True)
        ) - 1

    def mixed_ratio(self, variant: str | None = None) -> float | None:
        variant = variant or self.function
        if not self.mixed:
            return None
        return statistics.median(run[self.floor] / run[variant] for run in self.mixed)

    def verdict(self, target: float) -> str:
        if self.scenario.info:
            return "info"
        return "ok" if self.ratio() >= target else "BELOW TARGET"

    def as_dict(self, target: float) -> dict[str, Any]:
        s = self.scenario
        return {
            "scenario": s.name,
            "database": s.database,
            "clients": s.clients,
            "threads": self.threads,
            "synchronous_commit": self.synchronous_commit,
            "description": s.description,
            "info": s.info,
            "probe": self.probe,
            "warmup_tps": {v: round(t, 1) for v, t in self.warmup.items()},
            "ratio": round(self.ratio(), 3),
            "ratio_min": round(min(self.ratios()), 3),
            "ratio_max": round(max(self.ratios()), 3),
            "meets_target": None if s.info else self.ratio() >= target,
            "median_tps": {v: round(self.median_tps(v), 1) for v in s.variants},
            "rounds": [
                {
                    "order": order,
                    "tps": {v: round(self.tps[v][i], 1) for v in s.variants},
                    "ratio": round(self.ratios()[i], 3),
                }
                for i, order in enumerate(self.orders)
            ],
            "candidates": {
                v: {
                    "ratio": round(self.ratio(v), 3),
                    "ratio_min": round(min(self.ratios(v)), 3),
                    "ratio_max": round(max(self.ratios(v)), 3),
                    "vs_function": round(self.change(v), 3),
                }
                for v in s.variants[2:]
            },
            "mixed": {
                "ratio": round(r, 3),
                "runs_latency_ms": [{v: round(ms, 3) for v, ms in run.items()} for run in self.mixed],
            }
            if (r := self.mixed_ratio()) is not None
            else None,
        }


@dataclass(frozen=True)
class Comparison:
    """One scenario in two databases: ``ratio(database) - ratio(baseline)``."""

    database: Result
    baseline: Result
    max_drop: float

    @property
    def ratio_change(self) -> float:
        return self.database.ratio() - self.baseline.ratio()

    @property
    def floor_tps_ratio(self) -> float:
        base = self.baseline.median_tps(self.baseline.floor)
        return self.database.median_tps(self.database.floor) / base if base else 0.0

    @property
    def ok(self) -> bool:
        return self.ratio_change >= -self.max_drop - 1e-9

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.database.scenario.name,
            "clients": self.database.scenario.clients,
            "database": self.database.scenario.database,
            "baseline": self.baseline.scenario.database,
            "ratio": round(self.database.ratio(), 3),
            "baseline_ratio": round(self.baseline.ratio(), 3),
            "ratio_change": round(self.ratio_change, 3),
            "within_max_drop": self.ok,
            "floor_tps": round(self.database.median_tps(self.database.floor), 1),
            "baseline_floor_tps": round(self.baseline.median_tps(self.baseline.floor), 1),
            "floor_tps_ratio": round(self.floor_tps_ratio, 3),
        }


@dataclass
class Report:
    bench: Benchmark
    args: argparse.Namespace
    facts: dict[str, str]
    builds: dict[str, dict[str, Any]]
    results: list[Result]
    checks: dict[str, tuple[bool, str]]
    loads: list[float]
    runtime_s: float
    digest: str

    def comparisons(self) -> list[Comparison]:
        compare = self.bench.compare  # resolved by main()
        if not compare or callable(compare):
            return []
        database, baseline = compare
        by_key = {(r.scenario.database, r.scenario.key): r for r in self.results}
        out: list[Comparison] = []
        for r in self.results:
            if r.scenario.database != database:
                continue
            base = by_key.get((baseline, r.scenario.key))
            if base:
                out.append(Comparison(r, base, self.bench.max_ratio_drop))
        return out

    def as_dict(self) -> dict[str, Any]:
        a, b = self.args, self.bench
        return {
            "benchmark": b.name,
            "title": b.title,
            "method": "separate pgbench runs per variant, order alternated per round, checkpoint before "
            "each; ratio = function tps / floor tps of the same round; median over rounds",
            "target_ratio": b.target_ratio,
            "max_ratio_drop": b.max_ratio_drop if b.compare else None,
            "server": self.facts,
            "cpus": os.cpu_count(),
            "seconds": a.seconds,
            "warmup_seconds": a.warmup_seconds,
            "rounds": a.rounds,
            "mixed_rounds": a.mixed_rounds,
            "migrations_sha256": self.digest,
            "load_average_1m": [min(self.loads), max(self.loads)] if self.loads else None,
            "builds": self.builds,
            "results": [r.as_dict(b.target_ratio) for r in self.results],
            "comparisons": [c.as_dict() for c in self.comparisons()],
            "checks": {db: {"ok": ok, "detail": text} for db, (ok, text) in self.checks.items()},
            "total_runtime_s": round(self.runtime_s, 1),
        }

    def render(self) -> str:
        a, b, f = self.args, self.bench, self.facts
        results = self.results
        fn = results[0].function if results else "function"
        floor = results[0].floor if results else "floor"
        candidates = results[0].scenario.variants[2:] if results else []
        label = b.database_label
        lines = [
            f"{b.title} (pgbench -n -M prepared, separate runs)",
            f"PostgreSQL {f['server_version']}; synchronous_commit={f['synchronous_commit']}, "
            f"fsync={f['fsync']}, wal_level={f['wal_level']}, shared_buffers={f['shared_buffers']}, "
            f"max_wal_size={f['max_wal_size']}; {os.cpu_count()} CPUs ({platform.machine()}); "
            f"migrations sha256 {self.digest}",
            f"{a.rounds} rounds per scenario, each: {floor} and {fn} run alone for {a.seconds} s, "
            "order alternated per round, checkpoint before every run"
            + (f", after an untimed {a.warmup_seconds} s warm-up run of each" if a.warmup_seconds else "")
            + "; "
            f"1-min load average during runs {min(self.loads, default=0):.1f}-"
            f"{max(self.loads, default=0):.1f}",
            f"ratio = {fn} tps / {floor} tps of the same round; median and min-max over the rounds",
            "",
        ]
        header = (
            f"{'scenario':<11} {label:<7} {'clients':>7} {'sync_commit':>11} {floor + ' tps':>10} "
            f"{fn[:11] + ' tps':>15} {'ratio':>6} {'min-max':>11}"
            + (f" {'mixed':>6}" if a.mixed_rounds else "") + "  verdict"
        )
        lines += [header, "-" * len(header)]
        for r in results:
            s = r.scenario
            spread = f"{min(r.ratios()):.3f}-{max(r.ratios()):.3f}"
            mixed = r.mixed_ratio()
            lines.append(
                f"{s.name:<11} {s.database:<7} {s.clients:>7} {r.synchronous_commit:>11} "
                f"{r.median_tps(r.floor):>10.1f} {r.median_tps(r.function):>15.1f} {r.ratio():>6.3f} "
                f"{spread:>11}"
                + (f" {mixed:>6.3f}" if mixed is not None else "") + f"  {r.verdict(b.target_ratio)}"
            )
        lines.append(f"target: median ratio >= {b.target_ratio} in every row but 'info'.")
        if a.mixed_rounds:
            lines.append(
                f"mixed = {floor} latency / {fn} latency in one run of both scripts "
                "(side figure; reads high)."
            )
        comparisons = self.comparisons()
        if comparisons:
            database = comparisons[0].database.scenario.database
            baseline = comparisons[0].baseline.scenario.database
            lines += [
                "",
                f"{label} {database} against {label} {baseline} (same scenario and clients; "
                f"ratio change held to >= -{b.max_ratio_drop}):",
            ]
            header = (
                f"{'scenario':<11} {'clients':>7} {'ratio ' + baseline:>12} {'ratio ' + database:>12} "
                f"{'change':>7} {'floor tps ' + database + '/' + baseline:>24}  verdict"
            )
            lines += [header, "-" * len(header)]
            for c in comparisons:
                s = c.database.scenario
                verdict = "ok" if c.ok else "RATIO FELL"
                if s.info:
                    verdict += " (info)"
                lines.append(
                    f"{s.name:<11} {s.clients:>7} {c.baseline.ratio():>12.3f} {c.database.ratio():>12.3f} "
                    f"{c.ratio_change:>+7.3f} {c.floor_tps_ratio:>24.3f}  {verdict}"
                )
        if candidates:
            lines += [
                "",
                f"candidates (run alone in the same rounds; ratio to {floor}, tps change against {fn}):",
            ]
            header = (
                f"{'scenario':<11} {label:<7} {'clients':>7} {'candidate':<20} {'tps':>9} {'ratio':>6} "
                f"{'vs ' + fn[:11]:>15}"
            )
            lines += [header, "-" * len(header)]
            for r in results:
                for v in r.scenario.variants[2:]:
                    lines.append(
                        f"{r.scenario.name:<11} {r.scenario.database:<7} {r.scenario.clients:>7} {v:<20} "
                        f"{r.median_tps(v):>9.1f} {r.ratio(v):>6.3f} {r.change(v):>+15.1%}"
                    )
        lines += ["", "rounds (in run order; tps per variant, ratio):"]
        for r in results:
            s = r.scenario
            probe = ", ".join(f"{k} {v}" for k, v in r.probe.items())
            lines.append(
                f"  {s.name:<11} {label} {s.database:<6} c={s.clients:<3} j={r.threads:<2} ({s.description}"
                + (f"; at start: {probe}" if probe else "") + ")"
            )
            for i, order in enumerate(r.orders):
                runs = ", ".join(f"{v} {r.tps[v][i]:.0f}" for v in order)
                lines.append(f"    {i + 1}: {runs}; ratio {r.ratios()[i]:.3f}")
        lines += ["", "databases:"]
        for database, build in self.builds.items():
            extra = ", ".join(f"{k} {v}" for k, v in build.items() if k not in ("name", "setup_s"))
            lines.append(
                f"  {database:<7} {build['name']}: built in {build['setup_s']:.0f} s"
                + (f"; {extra}" if extra else "")
            )
        for database, (ok, text) in self.checks.items():
            lines.append(f"  {database:<7} check: {'ok' if ok else 'FAILED'}: {text}")
        lines.append(f"total runtime: {self.runtime_s:.0f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def parse_args(bench: Benchmark, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=bench.doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="length of each pgbench run (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=MIN_ROUNDS,
        help=f"rounds per scenario, each one run per variant, order alternated (default and minimum "
        f"{MIN_ROUNDS})",
    )
    parser.add_argument(
        "--warmup-seconds", type=int, default=3,
        help="an untimed run of each variant before round 1, in reverse order (default 3; 0: none)",
    )
    parser.add_argument(
        "--mixed-rounds", type=int, default=0,
        help="also one run of all scripts mixed at equal weight in each of the first N rounds (side figure; "
        "default 0)",
    )
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    parser.add_argument(
        "--database-url", default=os.environ.get(URL_ENV),
        help=f"server (a user that may create databases) to use instead of a throwaway cluster; the "
        f"databases paycore_bench_{bench.name}* are (re)created there and dropped afterwards "
        f"(default: ${URL_ENV}; $DATABASE_URL is never read)",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print the results as JSON on stdout (the text report goes to stderr)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster or databases afterwards")
    if bench.add_arguments:
        bench.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS or args.seconds < 1 or args.mixed_rounds < 0 or args.warmup_seconds < 0:
        parser.error(
            f"--rounds must be >= {MIN_ROUNDS}, --seconds >= 1, --mixed-rounds and --warmup-seconds >= 0"
        )
    try:
        args.client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    except ValueError:
        parser.error("--clients takes comma-separated integers")
    if not args.client_counts or min(args.client_counts) < 1:
        parser.error("--clients takes comma-separated integers >= 1")
    return args


def run_scenario(
    scenario: Scenario, conninfo: str, scripts_dir: Path, args: argparse.Namespace,
    probe: Callable[[str], dict[str, Any]] | None, loads: list[float],
) -> Result:
    cpus = os.cpu_count() or 1
    result = Result(scenario, min(scenario.clients, cpus), synchronous_commit(conninfo))
    if probe:
        result.probe = probe(conninfo)
    target = Target(conninfo)
    paths: dict[str, Path] = {}
    for variant, text in scenario.scripts.items():
        stem = f"{scenario.name}_{scenario.database}_{scenario.clients}_{variant}"
        stem = re.sub(r"[^A-Za-z0-9]+", "_", stem)
        path = scripts_dir / f"{stem}.sql"
        path.write_text(text)
        paths[variant] = path
        result.tps[variant] = []
    # Warm-up, untimed, in the reverse order of round 1: then in every round one variant follows
    # itself and the other last ran two runs before, and which is which alternates. Without it,
    # round 1's second variant starts on tables that have gone cold since the previous scenario
    # (a 10M-row ledger does not stay in the page cache here), and round 1 reads low for it.
    if args.warmup_seconds:
        for variant in scenario.variants[::-1]:
            result.warmup[variant] = run_alone(
                target, paths[variant], scenario.clients, result.threads, args.warmup_seconds
            )
        log(f"{scenario.name} {scenario.database} c={scenario.clients} warm-up: "
            + ", ".join(f"{v} {t:.0f} tps" for v, t in result.warmup.items()))
    for round_no in range(1, args.rounds + 1):
        order = scenario.variants if round_no % 2 else scenario.variants[::-1]
        for variant in order:
            checkpoint(conninfo)
            tps = run_alone(target, paths[variant], scenario.clients, result.threads, args.seconds)
            result.tps[variant].append(tps)
            loads.append(os.getloadavg()[0])
        result.orders.append(order)
        label = f"{scenario.name} {scenario.database} c={scenario.clients} round {round_no}"
        log(f"{label}: " + ", ".join(f"{v} {result.tps[v][-1]:.0f} tps" for v in order)
            + f", ratio {result.ratios()[-1]:.3f}")
        if round_no <= args.mixed_rounds:
            checkpoint(conninfo)
            result.mixed.append(run_mixed(target, paths, scenario.clients, result.threads, args.seconds))
            loads.append(os.getloadavg()[0])
    return result


def main(bench: Benchmark, argv: list[str]) -> int:
    args = parse_args(bench, argv)
    started = time.monotonic()
    digest = migrations_digest()
    if callable(bench.databases):
        bench.databases = bench.databases(args)
    if callable(bench.compare):
        bench.compare = bench.compare(args)
    scenarios = bench.scenarios(args)
    unknown = {s.database for s in scenarios} - set(bench.databases)
    if unknown:
        raise SystemExit(f"scenarios name unknown databases: {sorted(unknown)}")
    runs = sum(len(s.scripts) * args.rounds + min(args.mixed_rounds, args.rounds) for s in scenarios)
    warmup = sum(len(s.scripts) for s in scenarios) * (args.warmup_seconds + 1) if args.warmup_seconds else 0
    log(f"{len(scenarios)} scenarios, {runs} pgbench runs of {args.seconds} s: "
        f"about {(runs * (args.seconds + 1) + warmup) / 60:.0f} min of runs, plus building the databases")
    names = {db: database_name(bench.name, db) for db in bench.databases}
    loads: list[float] = []
    builds: dict[str, dict[str, Any]] = {}
    results: list[Result] = []
    checks: dict[str, tuple[bool, str]] = {}
    with (
        server(args.database_url, args.keep) as (server_url, _throwaway),
        databases(server_url, list(names.values()), args.keep) as conninfos,
        tempfile.TemporaryDirectory(prefix="paycore-bench-scripts-") as scripts_dir,
    ):
        by_db = {db: conninfos[name] for db, name in names.items()}
        for db, conninfo in by_db.items():
            log(f"setting up {bench.database_label} {db} ({names[db]}) ...")
            t = time.monotonic()
            extra = bench.setup(conninfo, db, args) or {}
            checkpoint(conninfo)
            builds[db] = {"name": names[db], "setup_s": round(time.monotonic() - t, 1), **extra}
            log(f"  done in {builds[db]['setup_s']:.0f} s")
        facts = server_facts(next(iter(by_db.values())))
        for scenario in scenarios:
            results.append(run_scenario(
                scenario, by_db[scenario.database], Path(scripts_dir), args, bench.probe, loads,
            ))
        if bench.check:
            for db, conninfo in by_db.items():
                checks[db] = bench.check(conninfo)
    report = Report(bench, args, facts, builds, results, checks, loads, time.monotonic() - started, digest)
    if args.json:
        log(report.render())
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render())
    return 0
