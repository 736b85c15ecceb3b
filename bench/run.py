"""The benchmark: restock-service beside pgbench, measured side by side in one run.

It starts a throwaway PostgreSQL cluster (default durability), loads the pgbench yardstick
(../shared/bench) into one database and the service's schema into another, seeds realistic
data, serves the service with uvicorn workers, and drives both with the same concurrency:
wrk with a Lua script for the service, pgbench for the database's own limit. It writes
bench/results/latest.json and a chart, and prints the ratio table.

    python bench/run.py            # the full run (a few minutes)
    python bench/run.py --quick    # CI: every phase, briefly; asserts completion and answers
    python bench/run.py --skip sync_batch   # leave out a phase and its twin (also BENCH_SKIP)
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgcluster import Cluster  # noqa: E402
from tests.servers import free_port  # noqa: E402

SHARED_BENCH = ROOT.parent / "shared" / "bench"
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "restock.lua"
ORDER_PREFIX = "354396-20260525-"  # the seeded synced orders, which the restock phases cancel
SYNC_PREFIX = "354396-20261201-"  # the fresh orders of the sync phases, as in pgbench_sync.sql

# Targets from the performance issue, as ratios measured in one run: service over its pgbench
# twin of the same round, except p99 (service p99 over pgbench restock's p99, both at c=8) and
# RSS (megabytes).
TARGETS = {
    "single_vs_pgbench": 0.60,
    "keyed_single_vs_single": 0.90,
    "batch100_orders_vs_pgbench": 2.50,
    "get_vs_pgbench_read": 0.08,
    "sync_single_vs_pgbench_sync": 0.50,
    "sync_batch100_orders_vs_pgbench_sync": 2.50,
    "stock_get_vs_pgbench_stock_read": 0.06,
    "p99_single_c8_vs_pgbench": 2.5,
    "rss_mb_per_worker": 200.0,
}
# The single-order concurrencies also measured with an Idempotency-Key on every request.
KEYED_CONCURRENCY = (8, 32)
# Phases that may be left out (--skip, BENCH_SKIP), each with its pgbench twin and its ratio.
SKIPPABLE = ("sync", "sync_batch", "stock")


@dataclass
class Plan:
    quick: bool
    duration_s: int
    skus: int
    orders: int
    workers: int
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    batch_concurrency: int = 8
    big_batch_concurrency: int = 2
    sync_concurrency: int = 8
    sync_batch_concurrency: int = 4
    stock_concurrency: int = 16
    skip: tuple[str, ...] = ()


@dataclass
class Phase:
    name: str
    tool: str
    concurrency: int
    orders_per_request: int
    requests: int
    seconds: float
    rps: float
    orders_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    route: str = ""  # what was measured: the service's route, or the pgbench script


def sh(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


# --- the databases -------------------------------------------------------------------------


def pgbench_schema(quick: bool) -> str:
    sql = (SHARED_BENCH / "pgbench_schema.sql").read_text()
    if quick:  # the same shape, a hundredth of the rows
        sql = sql.replace("generate_series(1,1000000)", "generate_series(1,10000)")
        sql = sql.replace("generate_series(1,100000)", "generate_series(1,10000)")
    return sql


async def seed_service(dsn: str, plan: Plan) -> None:
    """Skus and synced orders, written straight into the migrated schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"""
            INSERT INTO stock (merchant_id, sku, quantity, created_at, updated_at)
              SELECT 'default', 'SKU-' || g, 1000000, now(), now()
              FROM generate_series(1, {plan.skus}) g;
            INSERT INTO stock_movements
                (merchant_id, sku, delta, quantity_after, reason, at, txid)
              SELECT 'default', 'SKU-' || g, 1000000, 1000000, 'set', now(), 0
              FROM generate_series(1, {plan.skus}) g;
            INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)
              SELECT 'default', '{ORDER_PREFIX}' || lpad(g::text, 10, '0'), 'rakuten', now(),
                     now()
              FROM generate_series(1, {plan.orders}) g;
            INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
              SELECT 'default', '{ORDER_PREFIX}' || lpad(g::text, 10, '0'),
                     'SKU-' || (1 + (g * 7) % {plan.skus}), 0, 1 + g % 3
              FROM generate_series(1, {plan.orders}) g;
            INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
              SELECT 'default', '{ORDER_PREFIX}' || lpad(g::text, 10, '0'),
                     'SKU-' || (1 + (g * 13 + 5) % {plan.skus}), 1, 1
              FROM generate_series(1, {plan.orders}) g
            ON CONFLICT DO NOTHING;
            """
        )
    finally:
        await conn.close()


# The tables seed_service loads. The service's own (restocks, restock_lines) stay as a new
# install leaves them, never analyzed: the planner then assumes they hold some rows. Analyzed
# while empty, they would make each hot-pool connection plan its statements for empty tables
# and keep those plans until autovacuum's first ANALYZE, a minute into the run.
SEEDED = "stock, stock_movements, sync_executions, sync_execution_lines"


async def settle(service_dsn: str, pgbench_dsn: str) -> None:
    """After loading: vacuum (hint bits, visibility map, statistics) and checkpoint, so the
    first phases measure the service and pgbench, not the aftermath of the bulk load."""
    for dsn, tables in ((service_dsn, SEEDED), (pgbench_dsn, "")):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"VACUUM (ANALYZE) {tables}")
        finally:
            await conn.close()
    conn = await asyncpg.connect(service_dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# --- the load ------------------------------------------------------------------------------


class OrderRanges:
    """Hands out disjoint ranges of order numbers, so no request repeats an order: seeded
    ones for the restock phases, fresh ones (any below 10**10) for the sync phases."""

    def __init__(self, total: int) -> None:
        self.next = 1
        self.total = total

    def take(self, count: int) -> int:
        start = self.next
        self.next += count
        if self.next > self.total + 1:
            raise RuntimeError(f"not enough seeded orders: need {self.next - 1}, have {self.total}")
        return start


def wrk(
    url: str,
    plan: Plan,
    name: str,
    *,
    concurrency: int,
    mode: str,
    route: str,
    start: int = 1,
    span: int = 1,
    batch: int = 1,
    prefix: str = ORDER_PREFIX,
    orders_file: Path | None = None,
    keyed: bool = False,
) -> Phase:
    threads = min(2, concurrency)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {
            **os.environ,
            "MODE": mode,
            "START": str(start),
            "SPAN": str(span),
            "BATCH": str(batch),
            "PREFIX": prefix,
            "SKUS": str(plan.skus),
            "OUT": out.name,
            "ORDERS": str(orders_file or ""),
            "KEYED": "1" if keyed else "",
        }
        sh(
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{plan.duration_s}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            env=env,
        )
        result = json.loads(Path(out.name).read_text())
    requests = result["requests"]
    errors = result["errors"]
    if mode in ("post", "sync", "sync_batch") and requests * batch > span * threads:
        # Past its range a thread repeats orders of the next range: a failure of the run,
        # reported with the phase's answers (a phase answered with quick 4xx runs past it).
        errors["range_exceeded"] = requests * batch - span * threads
    seconds = result["duration_us"] / 1e6
    latency = result["latency_us"]
    return Phase(
        name=name,
        tool="wrk",
        concurrency=concurrency,
        orders_per_request=batch,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds,
        orders_per_s=requests * batch / seconds,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        errors=errors,
        route=route,
    )


def pgbench(
    cluster: Cluster,
    plan: Plan,
    name: str,
    script: str,
    concurrency: int,
    *,
    prepared: bool = False,
) -> Phase:
    with tempfile.TemporaryDirectory() as logs:
        os.chmod(logs, 0o777)
        args = [
            str(cluster.bindir / "pgbench"),
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-f",
            str(SHARED_BENCH / script),
            "-c",
            str(concurrency),
            "-j",
            str(min(2, concurrency)),
            "-T",
            str(plan.duration_s),
            "-l",
            "--log-prefix",
            f"{logs}/tx",
        ]
        if prepared:
            args += ["-M", "prepared"]
        output = sh(*args, "bench_pgbench")
        latencies = sorted(
            int(line.split()[2])
            for log in Path(logs).glob("tx*")
            for line in log.read_text().splitlines()
            if line
        )
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", output)
    return Phase(
        name=name,
        tool="pgbench",
        concurrency=concurrency,
        orders_per_request=1,
        requests=len(latencies),
        seconds=float(plan.duration_s),
        rps=tps,
        orders_per_s=tps,
        p50_ms=_percentile(latencies, 50) / 1000,
        p99_ms=_percentile(latencies, 99) / 1000,
        errors={"failed": int(failed.group(1)) if failed else 0},
        route=script,
    )


def _percentile(values: list[int], pct: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, round(pct / 100 * (len(values) - 1)))
    return float(values[index])


def worker_rss_mb(master: subprocess.Popen[bytes]) -> list[float]:
    """Resident memory of each uvicorn worker (the master's children), or the master alone."""
    children = sh("ps", "-o", "pid=", "--ppid", str(master.pid)).split()
    pids = [int(p) for p in children] or [master.pid]
    sizes = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match and "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text():
            sizes.append(int(match.group(1)) / 1024)
    return sizes


# --- the run -------------------------------------------------------------------------------


def run(plan: Plan) -> dict[str, object]:
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"bench: `{tool}` is missing; `make bench` installs it (apt-get)")
    # Default durability (the yardstick's own settings); room for pgbench's 64 clients beside
    # the service's idle pooled connections.
    cluster = Cluster(options="-c max_connections=200")
    server: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        service_dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/bench_service"
        asyncio.run(_create_databases(admin))
        print(f"bench: loading the pgbench yardstick ({'quick' if plan.quick else 'full'})")
        sh(
            str(cluster.bindir / "psql"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            "bench_pgbench",
            "-c",
            pgbench_schema(plan.quick),
        )
        env = {**os.environ, "RESTOCK_DATABASE_URL": service_dsn, "RESTOCK_LOG_LEVEL": "INFO"}
        env.pop("RESTOCK_API_KEYS", None)
        sh(sys.executable, "-m", "restock_service", "migrate", env=env)
        print(f"bench: seeding {plan.skus} skus and {plan.orders} synced orders")
        asyncio.run(seed_service(service_dsn, plan))
        asyncio.run(settle(service_dsn, service_dsn.replace("bench_service", "bench_pgbench")))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(RESULTS / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "restock_service",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(plan.workers),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        _wait_ready(url)

        orders = OrderRanges(plan.orders)
        fresh = OrderRanges(10**10 - 1)  # the sync phases' orders: no seeding, any number fits
        phases: list[Phase] = []
        rss: list[list[float]] = []

        def post(
            name: str,
            concurrency: int,
            orders_per_s: int,
            batch: int = 1,
            *,
            mode: str = "post",
            route: str = "POST /restocks",
            keyed: bool = False,
        ) -> Phase:
            """A POST phase over fresh orders: a range of its own for each wrk thread."""
            threads = min(2, concurrency)
            span = _span(plan, orders_per_s, threads)
            ranges, prefix = (orders, ORDER_PREFIX) if mode == "post" else (fresh, SYNC_PREFIX)
            start = ranges.take(span * threads)
            return wrk(
                url,
                plan,
                name,
                concurrency=concurrency,
                mode=mode,
                route=route,
                start=start,
                span=span,
                batch=batch,
                prefix=prefix,
                keyed=keyed,
            )

        for round_ in (1, 2):
            suffix = "" if round_ == 1 else " (second run)"
            # Each service phase is followed at once by its pgbench twin, so that the two
            # meet the same machine: these shared cores are noisy from minute to minute.
            for c in plan.concurrency:
                phases.append(post(f"POST single c={c}{suffix}", c, 1000 if c == 1 else 4000))
                if c in KEYED_CONCURRENCY:  # the same load with keys, right after
                    phases.append(post(f"POST single keyed c={c}{suffix}", c, 4000, keyed=True))
                phases.append(
                    pgbench(
                        cluster, plan, f"pgbench restock c={c}{suffix}", "pgbench_restock.sql", c
                    )
                )
            for size, c in ((100, plan.batch_concurrency), (1000, plan.big_batch_concurrency)):
                phases.append(post(f"POST batch{size}{suffix}", c, 15000, batch=size))
            restored = RESULTS / "restored-orders.txt"
            restored.write_text("\n".join(asyncio.run(_restored_orders(service_dsn))) + "\n")
            phases.append(
                wrk(
                    url,
                    plan,
                    f"GET restock c=32{suffix}",
                    concurrency=32,
                    mode="get",
                    route="GET /restocks/{order_no}",
                    orders_file=restored,
                )
            )
            phases.append(
                pgbench(
                    cluster, plan, f"pgbench read c=8{suffix}", "pgbench_read.sql", 8, prepared=True
                )
            )
            # The sync phases send fresh orders, which cost no seeding: their ranges are
            # generous (10,000 and 50,000 orders a second).
            c = plan.sync_concurrency
            if "sync" not in plan.skip:
                phases.append(
                    post(
                        f"POST sync c={c}{suffix}",
                        c,
                        10000,
                        mode="sync",
                        route="POST /sync-executions",
                    )
                )
                phases.append(
                    pgbench(cluster, plan, f"pgbench sync c={c}{suffix}", "pgbench_sync.sql", c)
                )
            if "sync_batch" not in plan.skip:
                phases.append(
                    post(
                        f"POST sync batch100 c={plan.sync_batch_concurrency}{suffix}",
                        plan.sync_batch_concurrency,
                        50000,
                        batch=100,
                        mode="sync_batch",
                        route="POST /sync-executions/batch",
                    )
                )
                phases.append(
                    pgbench(
                        cluster,
                        plan,
                        f"pgbench sync c={c}, batch twin{suffix}",
                        "pgbench_sync.sql",
                        c,
                    )
                )
            if "stock" not in plan.skip:
                c = plan.stock_concurrency
                phases.append(
                    wrk(
                        url,
                        plan,
                        f"GET stock c={c}{suffix}",
                        concurrency=c,
                        mode="stock",
                        route="GET /stock/{sku}",
                    )
                )
                phases.append(
                    pgbench(
                        cluster,
                        plan,
                        f"pgbench stock read c={c}{suffix}",
                        "pgbench_stock_read.sql",
                        c,
                        prepared=True,
                    )
                )
            rss.append(worker_rss_mb(server))
            if plan.quick:
                break

        restored_count = asyncio.run(_count_restored(service_dsn))
        synced_count = asyncio.run(_count_synced(service_dsn))
        return _report(
            plan,
            phases,
            rss,
            sent=orders.next - 1,
            restored=restored_count,
            synced=synced_count,
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        cluster.destroy()


def _span(plan: Plan, orders_per_s: int, threads: int) -> int:
    """Orders one wrk thread may need in a phase expected to run at ``orders_per_s``."""
    return orders_per_s * plan.duration_s * 2 // threads


async def _create_databases(admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("CREATE DATABASE bench_service")
        await conn.execute("CREATE DATABASE bench_pgbench")
    finally:
        await conn.close()


async def _restored_orders(dsn: str, limit: int = 50_000) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT order_no FROM restocks WHERE status = 'restored' ORDER BY random() LIMIT $1",
            limit,
        )
    finally:
        await conn.close()
    return [row["order_no"] for row in rows]


async def _count_restored(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        counts = await conn.fetch("SELECT status, count(*) FROM restocks GROUP BY status")
    finally:
        await conn.close()
    by_status = {row["status"]: row["count"] for row in counts}
    if set(by_status) - {"restored"}:
        raise RuntimeError(f"bench: restocks other than restored: {by_status}")
    return int(by_status.get("restored", 0))


async def _count_synced(dsn: str) -> int:
    """Sync executions the sync phases recorded (the seeded ones have another prefix)."""
    conn = await asyncpg.connect(dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM sync_executions WHERE order_no LIKE $1", SYNC_PREFIX + "%"
        )
    finally:
        await conn.close()
    return int(count)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready")


def _report(
    plan: Plan,
    phases: list[Phase],
    rss: list[list[float]],
    *,
    sent: int,
    restored: int,
    synced: int,
) -> dict[str, object]:
    by_name = {p.name: p for p in phases}
    bad = {p.name: p.errors for p in phases if any(p.errors.values())}
    suffixes = ["", " (second run)"][: len(rss)]
    rounds = [_round_ratios(plan, by_name, suffix) for suffix in suffixes]
    # Each ratio is measured side by side within one round; of the rounds, the better one
    # counts (as with timeit, the slower one measured the machine's noise, not the code).
    ratios = {
        key: (min if key.startswith("p99") else max)(r[key] for r in rounds) for key in rounds[0]
    }
    ratios["rss_mb_per_worker"] = max(rss[-1]) if rss[-1] else 0.0
    result: dict[str, object] = {
        "mode": "quick" if plan.quick else "full",
        "plan": asdict(plan),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "phases": [asdict(p) for p in phases],
        "ratios": ratios,
        "ratios_by_round": rounds,
        "targets": TARGETS,
        "rss_mb_per_worker": rss,
        "orders_sent": sent,
        "orders_restored": restored,
        "restock_orders_answered": _answered(phases, "POST /restocks"),
        "sync_orders_recorded": synced,
        "sync_orders_answered": (
            _answered(phases, "POST /sync-executions")
            + _answered(phases, "POST /sync-executions/batch")
        ),
        "skipped": list(plan.skip),
        "errors": bad,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick.json" if plan.quick else "latest.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    _print_table(phases, ratios, plan)
    _chart(phases, plan, RESULTS / ("quick.png" if plan.quick else "latest.png"))
    return result


def _answered(phases: list[Phase], route: str) -> int:
    """Orders the service answered in the phases of one route."""
    return sum(p.requests * p.orders_per_request for p in phases if p.route == route)


def _round_ratios(plan: Plan, by_name: dict[str, Phase], suffix: str) -> dict[str, float]:
    """Each measure of one round, over its pgbench twin of the same round. A skipped phase
    has no ratio."""
    pg8 = by_name[f"pgbench restock c=8{suffix}"]
    single = max(
        by_name[f"POST single c={c}{suffix}"].rps for c in (8, 32) if c in plan.concurrency
    )
    single8 = by_name[f"POST single c=8{suffix}"]
    keyed = max(
        by_name[f"POST single keyed c={c}{suffix}"].rps
        for c in KEYED_CONCURRENCY
        if c in plan.concurrency
    )
    ratios = {
        "single_vs_pgbench": single / pg8.rps,
        "keyed_single_vs_single": keyed / single,
        "batch100_orders_vs_pgbench": by_name[f"POST batch100{suffix}"].orders_per_s / pg8.rps,
        "get_vs_pgbench_read": (
            by_name[f"GET restock c=32{suffix}"].rps / by_name[f"pgbench read c=8{suffix}"].rps
        ),
    }
    c = plan.sync_concurrency
    if "sync" not in plan.skip:
        ratios["sync_single_vs_pgbench_sync"] = (
            by_name[f"POST sync c={c}{suffix}"].rps / by_name[f"pgbench sync c={c}{suffix}"].rps
        )
    if "sync_batch" not in plan.skip:
        batch = by_name[f"POST sync batch100 c={plan.sync_batch_concurrency}{suffix}"]
        twin = by_name[f"pgbench sync c={c}, batch twin{suffix}"]
        ratios["sync_batch100_orders_vs_pgbench_sync"] = batch.orders_per_s / twin.rps
    if "stock" not in plan.skip:
        c = plan.stock_concurrency
        ratios["stock_get_vs_pgbench_stock_read"] = (
            by_name[f"GET stock c={c}{suffix}"].rps
            / by_name[f"pgbench stock read c={c}{suffix}"].rps
        )
    ratios["p99_single_c8_vs_pgbench"] = single8.p99_ms / pg8.p99_ms
    return ratios


def _print_table(phases: list[Phase], ratios: dict[str, float], plan: Plan) -> None:
    print(f"\n{'phase':<44}{'req/s':>10}{'orders/s':>11}{'p50 ms':>9}{'p99 ms':>9}  errors")
    for p in phases:
        errors = ",".join(f"{k}={v}" for k, v in p.errors.items() if v) or "-"
        print(
            f"{p.name:<44}{p.rps:>10.0f}{p.orders_per_s:>11.0f}{p.p50_ms:>9.2f}"
            f"{p.p99_ms:>9.2f}  {errors}"
        )
    print(f"\n{'measure':<44}{'measured':>10}{'target':>10}  ")
    for key, target in TARGETS.items():
        if key not in ratios:
            print(f"{key:<44}{'-':>10}{'':>10}  skipped")
            continue
        value = ratios[key]
        ok = value <= target if key.startswith(("p99", "rss")) else value >= target
        if key.startswith("p99"):
            shown, want = f"{value:.2f}x", f"<= {target:g}x"
        elif key.startswith("rss"):
            shown, want = f"{value:.1f}", f"<= {target:g}"
        else:
            shown, want = f"{value:.0%}", f">= {target:.0%}"
        print(f"{key:<44}{shown:>10}{want:>10}  {'ok' if ok else 'MISSED'}")
    if plan.skip:
        print(f"(skipped: {', '.join(plan.skip)}; the full run measures every phase)")
    if plan.quick:
        print("(quick mode: too short to judge speed; it checks that every phase completes)")


def _chart(phases: list[Phase], plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(prefix: str) -> tuple[list[int], list[Phase]]:
        chosen = [p for p in phases if p.name.startswith(f"{prefix} c=") and "second" not in p.name]
        return [p.concurrency for p in chosen], chosen

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, prefix, style in (
        ("restock-service POST /restocks (1 order)", "POST single", "o-"),
        ("pgbench restock transaction", "pgbench restock", "s--"),
    ):
        xs, chosen = series(prefix)
        left.plot(xs, [p.rps for p in chosen], style, label=label)
        right.plot(xs, [p.p50_ms for p in chosen], style, label=f"{label} p50")
        right.plot(xs, [p.p99_ms for p in chosen], style, alpha=0.5, label=f"{label} p99")
    for ax, title, unit in ((left, "Throughput", "per second"), (right, "Latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(plan.concurrency), [str(c) for c in plan.concurrency])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"restock-service beside pgbench ({'quick' if plan.quick else 'full'} run, "
        f"{plan.workers} workers, {os.cpu_count()} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="brief phases, for CI")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument("--duration", type=int, default=None, help="seconds per phase")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PHASE",
        help=f"leave out a phase and its pgbench twin, one of {', '.join(SKIPPABLE)} "
        "(repeat or comma-separate; also BENCH_SKIP)",
    )
    args = parser.parse_args()
    skip = [
        name.strip()
        for value in [os.environ.get("BENCH_SKIP", ""), *args.skip]
        for name in value.split(",")
        if name.strip()
    ]
    unknown = set(skip) - set(SKIPPABLE)
    if unknown:
        parser.error(f"cannot skip {', '.join(sorted(unknown))}: one of {', '.join(SKIPPABLE)}")
    duration = args.duration or (1 if args.quick else 10)
    rounds = 1 if args.quick else 2
    # What the restock phases' order ranges add up to (see the loop in run()); the sync
    # phases send fresh orders, which need no seeding.
    per_round = 2 * duration * (1000 + (3 + len(KEYED_CONCURRENCY)) * 4000 + 2 * 15000)
    plan = Plan(
        quick=args.quick,
        duration_s=duration,
        skus=10_000 if args.quick else 100_000,  # as many as the yardstick's stock
        orders=per_round * rounds + 1000,
        workers=args.workers,
        skip=tuple(sorted(set(skip))),
    )
    result = run(plan)
    if result["errors"]:
        print(f"bench: unexpected answers or failures: {result['errors']}", file=sys.stderr)
        return 1
    if int(result["orders_restored"]) < int(result["restock_orders_answered"]):  # type: ignore[call-overload]
        print("bench: fewer orders restored than answered", file=sys.stderr)
        return 1
    if int(result["sync_orders_recorded"]) < int(result["sync_orders_answered"]):  # type: ignore[call-overload]
        print("bench: fewer sync executions recorded than answered", file=sys.stderr)
        return 1
    print(
        f"bench: {result['orders_restored']} orders restored, "
        f"{result['sync_orders_recorded']} sync executions recorded; results in {RESULTS}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
