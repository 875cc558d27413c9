"""``ledger bench``: every workload of the performance issue in one run, on one database,
with the raw-PostgreSQL ceiling measured in the same run.

It starts its own ``ledger serve`` (a subprocess, so its memory can be measured) on a
fresh database on the embedded server, or on the server in ``LEDGER_DATABASE_URL``,
prints a table and writes ``bench/results.json``. Figures depend on the machine: quote
them with the command that made them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import psutil
import psycopg

from infrastructure.database import ConnectionParams, resolve
from infrastructure.settings import Settings


@dataclass(frozen=True)
class Plan:
    duration_s: float
    soak_s: float
    events: int
    wallets: int = 10_000


FULL = Plan(duration_s=20, soak_s=600, events=1_000_000)
QUICK = Plan(duration_s=8, soak_s=60, events=200_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- raw PostgreSQL ceilings --------------------------------------------------------------

RAW_DDL = """
DROP TABLE IF EXISTS bench_raw;
CREATE TABLE bench_raw (
    originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text,
    state bytea, notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version));
"""
STATE = b'{"amount":1000,"counterparty_id":"' + b"0" * 36 + b'","kind":"transfer"}'


def raw_commits_per_s(db: ConnectionParams, seconds: float, connections: int = 16) -> float:
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute(RAW_DDL)
    stop = time.monotonic() + seconds
    counts = [0] * connections

    def worker(i: int) -> None:
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            while time.monotonic() < stop:
                conn.execute(
                    "INSERT INTO bench_raw (originator_id, originator_version, topic, state)"
                    " VALUES (%s, 1, 'bench', %s)",
                    (uuid.uuid4(), STATE),
                    prepare=True,
                )
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


def raw_rows_per_s(db: ConnectionParams, seconds: float, per_txn: int = 1000) -> float:
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute(RAW_DDL)
    rows = 0
    start = time.monotonic()
    with psycopg.connect(db.conninfo) as conn:
        while time.monotonic() - start < seconds:
            copy_sql = "COPY bench_raw (originator_id, originator_version, topic, state) FROM STDIN"
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for _ in range(per_txn):
                    copy.write_row((uuid.uuid4(), 1, "bench", STATE))
            rows += per_txn
    elapsed = time.monotonic() - start
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_raw")
    return rows / elapsed


# ---- the service under test ---------------------------------------------------------------


class Server:
    def __init__(self, db: ConnectionParams, port: int, *, projections: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            LEDGER_DATABASE_URL=db.conninfo,
            LEDGER_RUN_PROJECTIONS_IN_SERVICE="true" if projections else "false",
            LEDGER_POOL_SIZE="16",
        )
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the ledger server did not start")

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Load:
    """HTTP workloads against the server (aiohttp: the client must cost less than the
    server it measures)."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.wallets: list[str] = []

    def client(self, n: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=n, limit_per_host=n, force_close=False)
        return aiohttp.ClientSession(
            base_url=self.url,
            headers=self.headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=120),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )

    async def post(
        self, c: aiohttp.ClientSession, path: str, body: dict[str, Any]
    ) -> tuple[int, Any]:
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        async with c.post(path, data=orjson.dumps(body), headers=headers) as r:
            return r.status, orjson.loads(await r.read())

    async def setup_wallets(self, n: int) -> None:
        async with self.client(32) as c:
            sem = asyncio.Semaphore(32)

            async def one() -> str:
                async with sem:
                    status, body = await self.post(c, "/v1/wallets", {"currency": "USD"})
                    assert status == 201, body
                    wid: str = body["wallet"]["id"]
                    status, body = await self.post(
                        c,
                        "/v1/deposits",
                        {"wallet_id": wid, "amount": "1000000.00", "currency": "USD"},
                    )
                    assert status == 201, body
                    return wid

            self.wallets = list(await asyncio.gather(*(one() for _ in range(n))))

    def _pair(self, hot: tuple[str, str] | None) -> tuple[str, str]:
        if hot:
            return hot if random.random() < 0.5 else (hot[1], hot[0])
        a, b = random.sample(self.wallets, 2)
        return a, b

    async def batches(self, seconds: float, clients: int, hot: tuple[str, str] | None) -> float:
        done = 0
        stop = time.monotonic() + seconds

        async def client_loop(c: aiohttp.ClientSession) -> None:
            nonlocal done
            while time.monotonic() < stop:
                items = []
                for _ in range(1000):
                    a, b = self._pair(hot)
                    items.append({"debit_wallet_id": a, "credit_wallet_id": b,
                                  "amount": "0.01", "currency": "USD"})  # fmt: skip
                body = {"atomic": False, "transfers": items}
                status, answer = await self.post(c, "/v1/transfers/batch", body)
                if status == 201:
                    done += int(answer["succeeded"])

        start = time.monotonic()
        async with self.client(clients) as c:
            await asyncio.gather(*(client_loop(c) for _ in range(clients)))
        return done / (time.monotonic() - start)

    async def singles(
        self, seconds: float, clients: int, hot_credit: str | None = None
    ) -> tuple[float, list[float]]:
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        async def client_loop(c: aiohttp.ClientSession) -> None:
            while time.monotonic() < stop:
                if hot_credit:
                    a, b = random.choice(self.wallets), hot_credit
                    if a == b:
                        continue
                else:
                    a, b = self._pair(None)
                t0 = time.perf_counter()
                body = {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "0.01",
                        "currency": "USD"}  # fmt: skip
                status, _ = await self.post(c, "/v1/transfers", body)
                if status == 201:
                    latencies.append((time.perf_counter() - t0) * 1000)

        start = time.monotonic()
        async with self.client(clients) as c:
            await asyncio.gather(*(client_loop(c) for _ in range(clients)))
        return len(latencies) / (time.monotonic() - start), latencies

    async def graphql(self, seconds: float, clients: int) -> tuple[float, list[float]]:
        latencies: list[float] = []
        stop = time.monotonic() + seconds
        query = "query($id: ID!) { wallet(id: $id) { balance { available { amount } } } }"

        async def client_loop(c: aiohttp.ClientSession) -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                payload = {"query": query, "variables": {"id": random.choice(self.wallets)}}
                async with c.post("/graphql", data=orjson.dumps(payload)) as r:
                    answer = orjson.loads(await r.read())
                if r.status == 200 and not answer.get("errors"):
                    latencies.append((time.perf_counter() - t0) * 1000)

        start = time.monotonic()
        async with self.client(clients) as c:
            await asyncio.gather(*(client_loop(c) for _ in range(clients)))
        return len(latencies) / (time.monotonic() - start), latencies


def _event_count(db: ConnectionParams) -> int:
    with psycopg.connect(db.conninfo) as conn:
        row = conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM ledger_events").fetchone()
    return int(row[0]) if row else 0


def settle(db: ConnectionParams) -> None:
    """Start a workload on a quiet database, as pgbench does: vacuumed and analyzed (so
    autovacuum is not catching up on the previous workload's rows meanwhile, on the same
    two cores) and checkpointed."""
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(quick: bool) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    settings = Settings()
    admin = resolve(settings)
    name = f"ledger_bench_{int(time.time())}"
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = admin.with_dbname(name)
    results: dict[str, Any] = {}

    log("raw PostgreSQL ceilings")
    results["raw_pg_commits_per_s"] = raw_commits_per_s(db, plan.duration_s)
    results["raw_pg_rows_per_s"] = raw_rows_per_s(db, plan.duration_s)

    from infrastructure.container import build

    container = build(Settings(database_url=db.conninfo))
    key = container.api_keys.create("bench", "merchant")
    container.close()

    server = Server(db, _free_port(), projections=False)
    try:
        load = Load(server.url, key)
        log(f"opening and funding {plan.wallets} wallets")
        asyncio.run(load.setup_wallets(plan.wallets))
        settle(db)
        log("batch API")
        results["batch_api_transfers_per_s"] = asyncio.run(load.batches(plan.duration_s, 4, None))
        hot = (load.wallets[0], load.wallets[1])
        settle(db)
        log("hot pair")
        results["hot_pair_transfers_per_s"] = asyncio.run(load.batches(plan.duration_s, 4, hot))
        settle(db)
        log("single requests")
        rate, lat = asyncio.run(load.singles(plan.duration_s, 64))
        results["single_api_transfers_per_s"] = rate
        results["single_api_p50_ms"] = _percentile(lat, 0.50)
        results["single_api_p99_ms"] = _percentile(lat, 0.99)
        settle(db)
        log("hot merchant wallet")
        rate, _ = asyncio.run(load.singles(plan.duration_s, 64, hot_credit=load.wallets[2]))
        results["hot_wallet_single_api_transfers_per_s"] = rate
        log(f"topping up to {plan.events} events")
        while _event_count(db) < plan.events:
            asyncio.run(load.batches(5, 4, None))
        results["events_in_store"] = _event_count(db)

        container = build(Settings(database_url=db.conninfo))
        try:
            from infrastructure.projection_runner import live_targets, rebuild

            settle(db)
            log("projection catch-up from position 0")
            with container.pool.connection() as conn:
                for t in live_targets():
                    conn.execute(f"TRUNCATE {t.table}")
                conn.execute("UPDATE projection_tracking SET position = 0")
            t0 = time.monotonic()
            n = container.runner.run_until_caught_up()
            results["projection_catchup_events_per_s"] = n / (time.monotonic() - t0)
            settle(db)
            log("rebuild of balances")
            t0 = time.monotonic()
            rebuild(container.pool, container.app.mapper, "balances", 5000)
            results["rebuild_1m_events_s"] = (time.monotonic() - t0) * (
                1_000_000 / max(1, results["events_in_store"])
            )
        finally:
            container.close()

        settle(db)
        log("GraphQL balance queries")
        rate, lat = asyncio.run(load.graphql(plan.duration_s, 32))
        results["graphql_balance_queries_per_s"] = rate
        results["graphql_balance_p99_ms"] = _percentile(lat, 0.99)

        log(f"soak: {plan.soak_s:.0f} s of single requests")
        worker = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli", "project"],
            env=server.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(load.singles(min(60.0, plan.soak_s), 64))
            results["rss_mb_after_warmup"] = server.rss_mb()
            if plan.soak_s > 60:
                asyncio.run(load.singles(plan.soak_s - 60, 64))
            results["rss_mb_after_sustained_load"] = server.rss_mb()
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    finally:
        server.stop()

    container = build(Settings(database_url=db.conninfo))
    try:
        container.runner.run_until_caught_up()
        from infrastructure.audit import verify

        log("audit verify")
        report = verify(container)
        results["audit_passed"] = report.ok
    finally:
        container.close()
    results["database"] = name
    results["quick"] = quick
    return results


TARGETS = {
    "batch_api_transfers_per_s": (">=", 10_000),
    "hot_pair_transfers_per_s": (">=", 5_000),
    "single_api_transfers_per_s": (">=", 2_000),
    "single_api_p99_ms": ("<=", 50),
    "hot_wallet_single_api_transfers_per_s": (">=", 1_500),
    "projection_catchup_events_per_s": (">=", 30_000),
    "rebuild_1m_events_s": ("<=", 60),
    "graphql_balance_queries_per_s": (">=", 3_000),
    "graphql_balance_p99_ms": ("<=", 30),
}


def print_table(results: dict[str, Any]) -> None:
    commits = results.get("raw_pg_commits_per_s") or 1
    rows = results.get("raw_pg_rows_per_s") or 1
    print(f"{'metric':42} {'value':>12} {'target':>10} {'met':>4} {'vs raw ceiling':>15}")
    for key, value in results.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        op, target = TARGETS.get(key, ("", None))
        met = ""
        if target is not None:
            met = "yes" if (value >= target if op == ">=" else value <= target) else "NO"
        ratio = ""
        if key.startswith(("single_api_transfers", "hot_wallet")):
            ratio = f"{value / commits:.2f}x commits"
        elif key.startswith(("batch", "hot_pair", "projection")):
            ratio = f"{value / rows:.2f}x rows"
        tgt = f"{op}{target}" if target is not None else ""
        print(f"{key:42} {value:12.1f} {tgt:>10} {met:>4} {ratio:>15}")
    passed = "PASSED" if results.get("audit_passed") else "FAILED"
    print(f"audit verify on the benchmark database: {passed}")


def main(quick: bool) -> int:
    results = run(quick)
    Path("bench").mkdir(exist_ok=True)
    Path("bench/results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print_table(results)
    return 0 if results.get("audit_passed") else 1
