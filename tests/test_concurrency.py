"""Credits and generations under real concurrency.

Many threads, one autocommit connection each (as the database owner, a trusted server role
like service_role), run random operations against a few fresh users at once: grants, debits,
overdraft attempts, idempotent replays, idempotency conflicts, generations started, completed
and failed by any thread, and the same generation failed by two threads at the same instant.
Every outcome is checked as it happens against the set of outcomes that are legal, and a
Python-side model of everything that succeeded is compared with the ledger at the end.

The random seed is printed and included in every failure message; rerun a failing case with
PAYCORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

THREADS = 24
OPS_PER_THREAD = 400
USERS = 10
INITIAL_GRANT = 200
OVERDRAFT = 10**12  # far above any balance this test can reach
POOL_KEYS = 6  # idempotency keys per user for adjust_credits: 0-3 grants, 4-5 debits
GEN_POOL_KEYS = 3  # idempotency keys per user for start_generation
DOUBLE_FAIL_EVERY = 60  # each pair of threads fails one generation together every N ops
BARRIER_TIMEOUT = 60

SEED = int(os.environ.get("PAYCORE_TEST_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)

# Operation mix of the random workers (weights).
OPERATIONS = {
    "grant": 14,
    "debit": 14,
    "overdraft": 4,
    "pool": 16,
    "conflict": 3,
    "start": 20,
    "gen_conflict": 1,
    "complete": 10,
    "fail": 10,
}

ADJUST_SQL = (
    "select balance, transaction_id from public.adjust_credits("
    "%s, %s::bigint, %s, %s, %s, %s)"
)
START_SQL = (
    "select id, credits_used, status from public.start_generation("
    "%s, %s, %s, %s, %s::bigint, %s, %s)"
)
COMPLETE_SQL = "select id, status from public.complete_generation(%s, %s)"
FAIL_SQL = "select id, status, credits_used from public.fail_generation(%s, %s)"


def pool_args(key: str) -> tuple[int, str, str, dict]:
    """The arguments always sent with an adjust_credits pool key, derived from the key alone."""
    n = int(key.rsplit("-", 1)[1])
    amount = 10 + 7 * n if n < 4 else -(5 + n)
    return amount, "grant" if amount > 0 else "debit", f"pool call {key}", {"key": key, "n": n}


def gen_pool_args(key: str) -> tuple[str, str, str, int, dict]:
    """The arguments always sent with a start_generation pool key: type, model, prompt, cost, meta."""
    n = int(key.rsplit("-", 1)[1])
    return "image", f"model-{n}", f"prompt for {key}", 5 + 3 * n, {"key": key}


@dataclass
class Shared:
    """State the threads share, guarded by lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # generation id -> (user_id, credits_used), every generation any thread started
    gens: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)
    gen_order: list[uuid.UUID] = field(default_factory=list)
    # (user, key) -> [(t_start, t_end, outcome)]; outcome ("ok", balance, tx) or ("PT402",)
    pool_calls: dict[tuple[uuid.UUID, str], list] = field(default_factory=lambda: defaultdict(list))
    # (user, key) -> [(t_start, t_end, outcome)]; outcome ("ok", gen_id, credits_used) or ("PT402",)
    gen_pool_calls: dict[tuple[uuid.UUID, str], list] = field(default_factory=lambda: defaultdict(list))
    # (user, key) whose success has been observed: safe targets of a deliberate conflict
    applied_pool: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    applied_gen_pool: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    # (pair, round) -> generation id the leader created for the simultaneous double fail
    double_slots: dict[tuple[int, int], uuid.UUID | None] = field(default_factory=dict)
    # (pair, round) -> outcomes of the two simultaneous fail_generation calls
    double_results: dict[tuple[int, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)


@dataclass
class Model:
    """What one thread saw succeed, merged after the run."""

    plain_delta: Counter = field(default_factory=Counter)  # user -> sum of unkeyed adjustments
    plain_rows: Counter = field(default_factory=Counter)  # user -> number of unkeyed ledger rows
    failed: list[uuid.UUID] = field(default_factory=list)  # successful fail_generation calls
    completed: list[uuid.UUID] = field(default_factory=list)  # successful complete_generation calls
    outcomes: Counter = field(default_factory=Counter)  # "op:outcome" -> count


def sqlstate_hint(exc: psycopg.Error) -> tuple[str | None, str | None]:
    return exc.sqlstate, exc.diag.message_hint


class Worker:
    def __init__(self, idx: int, db: str, users: list[uuid.UUID], shared: Shared,
                 start: threading.Barrier, pair_barriers: list[threading.Barrier]):
        self.idx = idx
        self.seed = SEED * 1000 + idx
        self.rng = random.Random(self.seed)
        self.db = db
        self.users = users
        self.shared = shared
        self.start_barrier = start
        self.pair_barrier = pair_barriers[idx // 2]
        self.model = Model()
        self.conn: psycopg.Connection | None = None
        self.op_index = -1

    # -- plumbing -------------------------------------------------------------------------

    def error(self, what: str) -> None:
        with self.shared.lock:
            self.shared.errors.append(
                f"[seed {SEED}, thread {self.idx} (rng seed {self.seed}), op {self.op_index}] {what}"
            )

    def unexpected(self, op: str, exc: BaseException) -> None:
        if isinstance(exc, psycopg.Error):
            state, hint = sqlstate_hint(exc)
            text = " | ".join(str(exc).splitlines()[:2])  # message and DETAIL, not the context
            self.error(f"{op}: unexpected {type(exc).__name__} sqlstate={state} hint={hint}: {text}")
        else:
            self.error(f"{op}: unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        if self.conn is not None and self.conn.closed:
            self.conn = psycopg.connect(self.db, autocommit=True)

    def one(self, sql: str, params: tuple) -> tuple:
        assert self.conn is not None
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return row

    def adjust(self, user: uuid.UUID, amount: int, type_: str, description: str | None = None,
               metadata: dict | None = None, key: str | None = None) -> tuple[int, uuid.UUID]:
        return self.one(ADJUST_SQL, (user, amount, type_, description, Jsonb(metadata or {}), key))

    def record(self, op: str, outcome: str) -> None:
        self.model.outcomes[f"{op}:{outcome}"] += 1

    def refused(self, op: str, exc: psycopg.Error, allowed: set[tuple[str, str]]) -> str | None:
        """The outcome key of an expected refusal, or None after recording an unexpected one."""
        state, hint = sqlstate_hint(exc)
        if (state, hint) in allowed:
            self.record(op, f"{state}")
            return state
        self.unexpected(op, exc)
        return None

    # -- operations -----------------------------------------------------------------------

    def op_grant(self) -> None:
        user = self.rng.choice(self.users)
        amount = self.rng.randint(1, 50)
        try:
            balance, _ = self.adjust(user, amount, "grant", "random grant")
        except psycopg.Error as exc:
            self.unexpected("grant", exc)
            return
        if balance < amount:
            self.error(f"grant of {amount} returned balance {balance}")
        self.model.plain_delta[user] += amount
        self.model.plain_rows[user] += 1
        self.record("grant", "ok")

    def op_debit(self) -> None:
        user = self.rng.choice(self.users)
        amount = self.rng.randint(1, 60)
        try:
            balance, _ = self.adjust(user, -amount, "debit", "random debit")
        except psycopg.Error as exc:
            self.refused("debit", exc, {("PT402", "insufficient_credits")})
            return
        if balance < 0:
            self.error(f"debit of {amount} returned negative balance {balance}")
        self.model.plain_delta[user] -= amount
        self.model.plain_rows[user] += 1
        self.record("debit", "ok")

    def op_overdraft(self) -> None:
        user = self.rng.choice(self.users)
        try:
            row = self.adjust(user, -OVERDRAFT, "debit", "overdraft attempt")
        except psycopg.Error as exc:
            self.refused("overdraft", exc, {("PT402", "insufficient_credits")})
            return
        self.error(f"overdraft of {OVERDRAFT} on {user} succeeded: {row}")

    def op_pool(self) -> None:
        user = self.rng.choice(self.users)
        key = f"pool-{self.rng.randrange(POOL_KEYS)}"
        amount, type_, description, metadata = pool_args(key)
        t0 = time.monotonic()
        try:
            balance, tx = self.adjust(user, amount, type_, description, metadata, key)
        except psycopg.Error as exc:
            t1 = time.monotonic()
            allowed = {("PT402", "insufficient_credits")} if amount < 0 else set()
            if self.refused("pool", exc, allowed) is not None:
                with self.shared.lock:
                    self.shared.pool_calls[(user, key)].append((t0, t1, ("PT402",)))
            return
        t1 = time.monotonic()
        with self.shared.lock:
            self.shared.pool_calls[(user, key)].append((t0, t1, ("ok", balance, tx)))
            self.shared.applied_pool.add((user, key))
        self.record("pool", "ok")

    def op_conflict(self) -> None:
        """An applied adjust_credits key sent again with other arguments: PT409, nothing written."""
        with self.shared.lock:
            applied = sorted(self.shared.applied_pool)
        if not applied:
            self.op_grant()
            return
        user, key = self.rng.choice(applied)
        amount, type_, description, metadata = pool_args(key)
        variant = self.rng.randrange(3)
        if variant == 0:
            amount += 1
        elif variant == 1:
            metadata = {**metadata, "other": True}
        else:
            description = description + " (changed)"
        try:
            row = self.adjust(user, amount, type_, description, metadata, key)
        except psycopg.Error as exc:
            self.refused("conflict", exc, {("PT409", "idempotency_conflict")})
            return
        self.error(f"key {key} of {user} reused with other arguments (variant {variant}) returned {row}")

    def remember_generation(self, gen_id: uuid.UUID, user: uuid.UUID, cost: int, *,
                            pickable: bool = True) -> None:
        """Records a generation; pickable ones may be completed or failed by any thread."""
        with self.shared.lock:
            known = self.shared.gens.get(gen_id)
            if known is None:
                self.shared.gens[gen_id] = (user, cost)
                if pickable:
                    self.shared.gen_order.append(gen_id)
            elif known != (user, cost):
                self.shared.errors.append(
                    f"[seed {SEED}] generation {gen_id} seen as {known} and {(user, cost)}"
                )

    def op_start(self) -> None:
        user = self.rng.choice(self.users)
        if self.rng.random() < 0.25:
            key: str | None = f"gen-{self.rng.randrange(GEN_POOL_KEYS)}"
            type_, model, prompt, cost, metadata = gen_pool_args(key)
        else:
            key = None
            type_, model, prompt = "image", "model-x", "a random prompt"
            cost = 0 if self.rng.random() < 0.05 else self.rng.randint(1, 40)
            metadata = {"thread": self.idx}
        t0 = time.monotonic()
        try:
            gen_id, credits_used, status = self.one(
                START_SQL, (user, type_, model, prompt, cost, Jsonb(metadata), key)
            )
        except psycopg.Error as exc:
            t1 = time.monotonic()
            if self.refused("start", exc, {("PT402", "insufficient_credits")}) is not None and key:
                with self.shared.lock:
                    self.shared.gen_pool_calls[(user, key)].append((t0, t1, ("PT402",)))
            return
        t1 = time.monotonic()
        if credits_used != cost:
            self.error(f"start_generation with cost {cost} returned credits_used {credits_used}")
        if key is None and status != "processing":
            self.error(f"new generation {gen_id} has status {status}")
        self.remember_generation(gen_id, user, credits_used)
        if key is not None:
            with self.shared.lock:
                self.shared.gen_pool_calls[(user, key)].append((t0, t1, ("ok", gen_id, credits_used)))
                self.shared.applied_gen_pool.add((user, key))
        self.record("start", "ok")

    def op_gen_conflict(self) -> None:
        with self.shared.lock:
            applied = sorted(self.shared.applied_gen_pool)
        if not applied:
            self.op_start()
            return
        user, key = self.rng.choice(applied)
        type_, model, prompt, cost, metadata = gen_pool_args(key)
        try:
            row = self.one(START_SQL, (user, type_, model, prompt, cost + 1, Jsonb(metadata), key))
        except psycopg.Error as exc:
            self.refused("gen_conflict", exc, {("PT409", "idempotency_conflict")})
            return
        self.error(f"generation key {key} of {user} reused with another cost returned {row}")

    def pick_generation(self) -> uuid.UUID | None:
        with self.shared.lock:
            order = self.shared.gen_order
            if not order:
                return None
            if self.rng.random() < 0.7:
                return self.rng.choice(order[-10:])
            return self.rng.choice(order)

    def op_complete(self) -> None:
        gen_id = self.pick_generation()
        if gen_id is None:
            self.op_start()
            return
        try:
            got_id, status = self.one(COMPLETE_SQL, (gen_id, Jsonb([f"https://cdn.test/{gen_id}.png"])))
        except psycopg.Error as exc:
            self.refused("complete", exc, {("PT409", "invalid_state")})
            return
        if got_id != gen_id or status != "success":
            self.error(f"complete_generation({gen_id}) returned {(got_id, status)}")
        self.model.completed.append(gen_id)
        self.record("complete", "ok")

    def fail(self, gen_id: uuid.UUID, op: str) -> str | None:
        try:
            got_id, status, _ = self.one(FAIL_SQL, (gen_id, f"failed by thread {self.idx}"))
        except psycopg.Error as exc:
            return self.refused(op, exc, {("PT409", "invalid_state")})
        if got_id != gen_id or status != "failed":
            self.error(f"fail_generation({gen_id}) returned {(got_id, status)}")
        self.model.failed.append(gen_id)
        self.record(op, "ok")
        return "ok"

    def op_fail(self) -> None:
        gen_id = self.pick_generation()
        if gen_id is None:
            self.op_start()
            return
        self.fail(gen_id, "fail")

    def double_fail(self, round_: int) -> None:
        """Both threads of a pair fail the same fresh generation at the same instant."""
        pair = self.idx // 2
        slot = (pair, round_)
        if self.idx % 2 == 0:
            gen_id = None
            user = self.rng.choice(self.users)
            cost = self.rng.randint(1, 20)
            for _ in range(50):
                try:
                    self.adjust(user, cost, "grant", "grant before a double fail")
                    self.model.plain_delta[user] += cost
                    self.model.plain_rows[user] += 1
                    gen_id, credits_used, _ = self.one(
                        START_SQL, (user, "video", "model-d", "double fail", cost, Jsonb({}), None)
                    )
                except psycopg.Error as exc:
                    if sqlstate_hint(exc) != ("PT402", "insufficient_credits"):
                        self.unexpected("double_fail setup", exc)
                        break
                    continue  # others spent the grant first: try again
                # Not pickable yet: no third thread may finish it before the double fail.
                self.remember_generation(gen_id, user, credits_used, pickable=False)
                break
            with self.shared.lock:
                self.shared.double_slots[slot] = gen_id
        self.pair_barrier.wait(timeout=BARRIER_TIMEOUT)
        with self.shared.lock:
            gen_id = self.shared.double_slots[slot]
        if gen_id is None:
            return
        outcome = self.fail(gen_id, "double_fail")
        with self.shared.lock:
            self.shared.double_results[slot].append(str(outcome))
            if self.idx % 2 == 0:
                self.shared.gen_order.append(gen_id)  # final now: others must get PT409

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        names = list(OPERATIONS)
        weights = list(OPERATIONS.values())
        try:
            self.conn = psycopg.connect(self.db, autocommit=True)
            self.start_barrier.wait(timeout=BARRIER_TIMEOUT)
            for i in range(OPS_PER_THREAD):
                self.op_index = i
                if i % DOUBLE_FAIL_EVERY == DOUBLE_FAIL_EVERY - 1:
                    self.double_fail(i // DOUBLE_FAIL_EVERY)
                    continue
                op = self.rng.choices(names, weights)[0]
                try:
                    getattr(self, f"op_{op}")()
                except Exception as exc:  # noqa: BLE001 - every surprise is reported
                    self.unexpected(op, exc)
        except BaseException as exc:  # noqa: BLE001 - a dead thread must fail the test
            self.unexpected("thread", exc)
            self.pair_barrier.abort()
        finally:
            if self.conn is not None:
                self.conn.close()


def run_threads(workers: list, target: str = "run") -> None:
    threads = [threading.Thread(target=getattr(w, target), name=f"worker-{i}") for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), f"seed {SEED}: thread {t.name} hangs"


def create_users(conn: psycopg.Connection, n: int) -> list[uuid.UUID]:
    return [conn.execute("select tests.create_user()").fetchone()[0] for _ in range(n)]


def test_credits_and_generations_invariants_under_concurrency(db: str) -> None:
    print(f"concurrency seed: {SEED} (rerun with PAYCORE_TEST_SEED={SEED})")
    with psycopg.connect(db, autocommit=True) as conn:
        users = create_users(conn, USERS)
        for user in users:
            conn.execute(ADJUST_SQL, (user, INITIAL_GRANT, "grant", "initial grant", Jsonb({}), None))

    shared = Shared()
    start = threading.Barrier(THREADS)
    pair_barriers = [threading.Barrier(2) for _ in range(THREADS // 2)]
    workers = [Worker(i, db, users, shared, start, pair_barriers) for i in range(THREADS)]
    t0 = time.monotonic()
    run_threads(workers)
    elapsed = time.monotonic() - t0

    outcomes: Counter = Counter()
    plain_delta: Counter = Counter({u: INITIAL_GRANT for u in users})
    plain_rows: Counter = Counter({u: 1 for u in users})
    failed_calls: list[uuid.UUID] = []
    completed_calls: list[uuid.UUID] = []
    for w in workers:
        outcomes.update(w.model.outcomes)
        plain_delta.update(w.model.plain_delta)
        plain_rows.update(w.model.plain_rows)
        failed_calls += w.model.failed
        completed_calls += w.model.completed
    print(f"{THREADS} threads x {OPS_PER_THREAD} ops in {elapsed:.1f}s: {dict(sorted(outcomes.items()))}")

    problems = list(shared.errors)

    # -- what the threads saw -------------------------------------------------------------

    # An idempotency key returns one result, whoever sends it; once a call with it has
    # returned, no later call may be refused for lack of credits.
    pool_applied: dict[tuple[uuid.UUID, str], tuple[int, uuid.UUID]] = {}
    for (user, key), calls in shared.pool_calls.items():
        oks = {c[2] for c in calls if c[2][0] == "ok"}
        if len(oks) > 1:
            problems.append(f"pool key {key} of {user} returned different results: {sorted(map(str, oks))}")
        if oks:
            _, balance, tx = next(iter(oks))
            pool_applied[(user, key)] = (balance, tx)
            first_end = min(c[1] for c in calls if c[2][0] == "ok")
            late = [c for c in calls if c[2][0] != "ok" and c[0] > first_end]
            if late:
                problems.append(f"pool key {key} of {user} refused {len(late)}x after it was applied")
    gen_pool_applied: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    for (user, key), calls in shared.gen_pool_calls.items():
        oks = {c[2] for c in calls if c[2][0] == "ok"}
        if len(oks) > 1:
            problems.append(f"generation key {key} of {user} returned different generations: {oks}")
        if oks:
            gen_pool_applied[(user, key)] = next(iter(oks))[1]
            first_end = min(c[1] for c in calls if c[2][0] == "ok")
            late = [c for c in calls if c[2][0] != "ok" and c[0] > first_end]
            if late:
                problems.append(f"generation key {key} of {user} refused {len(late)}x after it was applied")

    # Exactly one of two simultaneous fail_generation calls wins.
    for slot, results in sorted(shared.double_results.items()):
        if sorted(results) != ["PT409", "ok"]:
            problems.append(f"double fail {slot} ({shared.double_slots[slot]}): outcomes {results}")
    if len(shared.double_results) < THREADS // 2:
        problems.append(f"only {len(shared.double_results)} simultaneous double fails ran")

    # A generation reaches one final state once.
    finals = Counter(failed_calls) + Counter(completed_calls)
    twice = [g for g, n in finals.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} generations finished more than once, e.g. {twice[:3]}")

    # -- what the database holds ------------------------------------------------------------

    with psycopg.connect(db, autocommit=True) as conn:
        balances = dict(conn.execute(
            "select u.id, c.balance from unnest(%s::uuid[]) as u(id)"
            " left join public.credits as c on c.user_id = u.id", (users,)
        ).fetchall())
        ledger = conn.execute(
            "select user_id, amount, balance_after, type, generation_id, idempotency_key, id"
            " from public.credit_transactions where user_id = any(%s)", (users,)
        ).fetchall()
        gens = {r[0]: r[1:] for r in conn.execute(
            "select id, user_id, status, credits_used from public.generations where user_id = any(%s)",
            (users,),
        ).fetchall()}
        dup_keys = conn.execute(
            "select user_id, idempotency_key, count(*) from public.credit_transactions"
            " where user_id = any(%s) and idempotency_key is not null"
            " group by 1, 2 having count(*) > 1", (users,)
        ).fetchall()
        gen_ledger = conn.execute(
            """
            select g.id, g.status, g.credits_used,
                count(t.id) filter (where t.type = 'refund' and t.amount = g.credits_used),
                count(t.id) filter (where t.amount > 0),
                count(t.id) filter (where t.amount = -g.credits_used),
                count(t.id) filter (where t.amount < 0),
                count(t.id), coalesce(sum(t.amount), 0),
                count(t.id) filter (where t.user_id <> g.user_id)
            from public.generations as g
            left join public.credit_transactions as t on t.generation_id = g.id
            where g.user_id = any(%s)
            group by g.id
            """, (users,)
        ).fetchall()

    by_user: dict[uuid.UUID, list] = defaultdict(list)
    for row in ledger:
        by_user[row[0]].append(row)
    for user in users:
        rows = by_user[user]
        balance = balances[user] if balances[user] is not None else 0
        total = sum(r[1] for r in rows)
        if balance != total:
            problems.append(f"user {user}: balance {balance} <> sum of ledger {total}")
        if balance < 0:
            problems.append(f"user {user}: negative balance {balance}")
        negative = [r for r in rows if r[2] < 0]
        if negative:
            problems.append(f"user {user}: {len(negative)} ledger rows with balance_after < 0")
        # The rows form one chain of balances from 0 to the final balance (the row lock
        # serialises the writers of one user): before-values + [final] = after-values + [0].
        if Counter([r[2] - r[1] for r in rows] + [balance]) != Counter([r[2] for r in rows] + [0]):
            problems.append(f"user {user}: balance_after values do not form one chain")

        # Python's model of every successful call gives the final balance.
        user_gens = {g: v for g, v in shared.gens.items() if v[0] == user}
        pool = {k: v for k, v in pool_applied.items() if k[0] == user}
        expected = (
            plain_delta[user]
            + sum(pool_args(key)[0] for _, key in pool)
            - sum(cost for _, cost in user_gens.values())
            + sum(shared.gens[g][1] for g in set(failed_calls) if shared.gens[g][0] == user)
        )
        if balance != expected:
            problems.append(f"user {user}: balance {balance}, the model of successful calls says {expected}")

        # Unkeyed rows are exactly the unkeyed adjustments that succeeded.
        unkeyed = [r for r in rows if r[5] is None]
        if len(unkeyed) != plain_rows[user] or any(r[4] is not None for r in unkeyed):
            problems.append(f"user {user}: {len(unkeyed)} unkeyed ledger rows, {plain_rows[user]} expected")
        # Idempotent adjustments: one row per applied key, with its arguments and first result.
        keyed = {r[5]: r for r in rows if r[5] is not None and r[5].startswith("pool-")}
        if set(keyed) != {key for _, key in pool}:
            problems.append(f"user {user}: pool keys in the ledger {sorted(keyed)}, applied {sorted(pool)}")
        for (_, key), (bal, tx) in pool.items():
            row = keyed.get(key)
            if row is not None and (row[1], row[2], row[6], row[4]) != (pool_args(key)[0], bal, tx, None):
                problems.append(f"user {user}: ledger row of {key} {row} does not match the call {(bal, tx)}")
        # Every generation in the database was returned to a thread, and vice versa.
        db_gens = {g for g, v in gens.items() if v[0] == user}
        if db_gens != set(user_gens):
            problems.append(
                f"user {user}: generations in the database and seen by threads differ: "
                f"{len(db_gens - set(user_gens))} unknown, {len(set(user_gens) - db_gens)} missing"
            )

    if dup_keys:
        problems.append(f"idempotency keys applied more than once: {dup_keys}")

    # Every generation's ledger rows: one debit, and one refund iff it failed.
    failed_in_db = set()
    for gen_id, status, cost, refunds, credits, debits, charges, n, total, foreign in gen_ledger:
        if status == "failed":
            failed_in_db.add(gen_id)
        if foreign:
            problems.append(f"generation {gen_id}: {foreign} ledger rows of another user")
        if cost == 0:
            if n:
                problems.append(f"generation {gen_id} costs 0 but has {n} ledger rows")
            continue
        if status == "failed":
            ok = (refunds, credits, debits, charges, n, total) == (1, 1, 1, 1, 2, 0)
        elif status in ("success", "processing"):
            ok = (refunds, credits, debits, charges, n, total) == (0, 0, 1, 1, 1, -cost)
        else:
            ok = False
        if not ok:
            problems.append(
                f"generation {gen_id} ({status}, cost {cost}): refunds={refunds} credits={credits} "
                f"debits={debits} charges={charges} rows={n} sum={total}"
            )
        if status == "success" and gen_id not in completed_calls:
            problems.append(f"generation {gen_id} is success but no complete_generation call succeeded")

    if len(failed_calls) != len(failed_in_db) or set(failed_calls) != failed_in_db:
        problems.append(f"{len(failed_calls)} successful fail_generation calls, "
                        f"{len(failed_in_db)} failed generations in the database")
    done = {g for g, v in gens.items() if v[1] == "success"}
    if set(completed_calls) != done:
        problems.append(f"{len(completed_calls)} successful complete_generation calls, {len(done)} successes")

    # The run exercised what it claims to exercise.
    for needed in ("grant:ok", "debit:ok", "debit:PT402", "overdraft:PT402", "pool:ok", "conflict:PT409",
                   "start:ok", "start:PT402", "complete:ok", "complete:PT409", "fail:ok", "fail:PT409",
                   "double_fail:ok", "double_fail:PT409", "gen_conflict:PT409"):
        if not outcomes[needed]:
            problems.append(f"the run never produced {needed}")
    replays = sum(len([c for c in calls if c[2][0] == "ok"]) for calls in shared.pool_calls.values())
    if replays <= len(pool_applied):
        problems.append("no idempotent replay happened")

    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:40])


def test_parallel_debits_of_one_user_stop_at_zero(db: str) -> None:
    """16 threads debit one user at once; the balance allows exactly K debits."""
    threads, calls_per_thread, amount, k = 16, 6, 3, 37
    with psycopg.connect(db, autocommit=True) as conn:
        (user,) = create_users(conn, 1)
        conn.execute(ADJUST_SQL, (user, amount * k, "grant", "exactly K debits", Jsonb({}), None))

    barrier = threading.Barrier(threads)
    results: list[str] = []
    lock = threading.Lock()

    class Debitor:
        def run(self) -> None:
            try:
                with psycopg.connect(db, autocommit=True) as conn:
                    barrier.wait(timeout=BARRIER_TIMEOUT)
                    for _ in range(calls_per_thread):
                        try:
                            balance, _ = conn.execute(
                                ADJUST_SQL, (user, -amount, "debit", "race", Jsonb({}), None)
                            ).fetchone()
                            outcome = "ok" if balance >= 0 else f"negative balance {balance}"
                        except psycopg.Error as exc:
                            state, hint = sqlstate_hint(exc)
                            outcome = "PT402" if (state, hint) == ("PT402", "insufficient_credits") \
                                else f"unexpected {state} {hint}: {exc}"
                        with lock:
                            results.append(outcome)
            except Exception as exc:  # noqa: BLE001
                with lock:
                    results.append(f"unexpected {type(exc).__name__}: {exc}")

    run_threads([Debitor() for _ in range(threads)])
    counts = Counter(results)
    assert set(counts) <= {"ok", "PT402"}, counts
    assert counts["ok"] == k, counts
    assert counts["PT402"] == threads * calls_per_thread - k, counts
    with psycopg.connect(db, autocommit=True) as conn:
        balance, total, n = conn.execute(
            "select c.balance, (select sum(amount) from public.credit_transactions where user_id = %s),"
            " (select count(*) from public.credit_transactions where user_id = %s)"
            " from public.credits as c where c.user_id = %s", (user, user, user)
        ).fetchone()
    assert (balance, total, n) == (0, 0, k + 1)


def test_parallel_first_credits_of_new_users(db: str) -> None:
    """16 threads give each of 8 new users its first credit at the same instant: the balance row
    is created once (the others wait for it and add to it), every grant is applied."""
    threads, users_n = 16, 8
    with psycopg.connect(db, autocommit=True) as conn:
        users = create_users(conn, users_n)
    barrier = threading.Barrier(threads)
    results: list[str] = []
    lock = threading.Lock()

    class Granter:
        def __init__(self, n: int) -> None:
            self.n = n

        def run(self) -> None:
            try:
                with psycopg.connect(db, autocommit=True) as conn:
                    for user in users:
                        barrier.wait(timeout=BARRIER_TIMEOUT)
                        try:
                            conn.execute(ADJUST_SQL, (user, self.n, "grant", "first", Jsonb({}), None))
                            outcome = "ok"
                        except psycopg.Error as exc:
                            outcome = f"unexpected {exc.sqlstate}: {exc}"
                        with lock:
                            results.append(outcome)
            except Exception as exc:  # noqa: BLE001
                with lock:
                    results.append(f"unexpected {type(exc).__name__}: {exc}")

    run_threads([Granter(n) for n in range(1, threads + 1)])
    assert Counter(results) == {"ok": threads * users_n}, Counter(results)
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            "select c.balance,"
            " (select sum(amount) from public.credit_transactions as t where t.user_id = c.user_id),"
            " (select count(*) from public.credit_transactions as t where t.user_id = c.user_id)"
            " from public.credits as c where c.user_id = any(%s)", (users,)
        ).fetchall()
    expected = threads * (threads + 1) // 2
    assert rows == [(expected, expected, threads)] * users_n, rows


def test_track_event_rate_limit_holds_under_concurrency(db: str) -> None:
    """32 sessions of one user track an event at the same instant with a limit of 20 an hour:
    exactly 20 are recorded, 12 are PT429 rate_limited, the counter says 20."""
    threads, limit = 32, 20
    clock = "2031-06-01 10:30:00+00"
    with psycopg.connect(db, autocommit=True) as conn:
        (user,) = create_users(conn, 1)
        previous = conn.execute(
            "select value::text from paycore.settings where key = 'track_event_hourly_limit'"
        ).fetchone()[0]
        conn.execute("update paycore.settings set value = %s where key = 'track_event_hourly_limit'",
                     (str(limit),))
    barrier = threading.Barrier(threads)
    results: list[str] = []
    lock = threading.Lock()
    claims = json.dumps({"sub": str(user), "role": "authenticated"})

    class Tracker:
        def run(self) -> None:
            try:
                with psycopg.connect(db) as conn:
                    barrier.wait(timeout=BARRIER_TIMEOUT)
                    try:
                        with conn.transaction():
                            # As PostgREST runs an RPC of a signed-in user.
                            conn.execute("select set_config('request.jwt.claims', %s, true),"
                                         " set_config('paycore.now', %s, true)", (claims, clock))
                            conn.execute("set local role authenticated")
                            conn.execute("select public.track_event('app1', 'clicked')")
                        outcome = "ok"
                    except psycopg.Error as exc:
                        outcome = exc.diag.message_hint if exc.sqlstate == "PT429" else f"unexpected {exc}"
                    with lock:
                        results.append(outcome)
            except Exception as exc:  # noqa: BLE001
                with lock:
                    results.append(f"unexpected {type(exc).__name__}: {exc}")

    try:
        run_threads([Tracker() for _ in range(threads)])
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("update paycore.settings set value = %s::jsonb"
                         " where key = 'track_event_hourly_limit'", (previous,))
    assert Counter(results) == {"ok": limit, "rate_limited": threads - limit}, Counter(results)
    with psycopg.connect(db, autocommit=True) as conn:
        recorded = conn.execute(
            "select count(*) from public.events where actor_id = %s and source = 'client'", (user,)
        ).fetchone()[0]
        counter = conn.execute(
            "select events from paycore.client_event_counters where user_id = %s", (user,)
        ).fetchone()[0]
    assert (recorded, counter) == (limit, limit)
