"""Prometheus metrics: one registry per application, or, under ``serve --workers N``, the
files that every worker writes and every scrape reads (prometheus_client's multiprocess
mode)."""

import collections
import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from restock_service.rules import BatchResult
from restock_service.store import PoolWatch

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# prometheus_client reads it when it is first imported: set, every value lives in a file of
# the process in that directory.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client writes there: counter_<pid>.db, gauge_livesum_<pid>.db, …
_METRIC_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_\d+\.db")

POOL_OPEN = "restock_db_pool_size"
POOL_IN_USE = "restock_db_pool_checked_out"
POOL_IDLE = "restock_db_pool_checked_in"


class _Instruments:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.orders = Counter(
            "restock_orders",
            "Orders of restock requests, by mall and outcome code.",
            ["mall", "code"],
            registry=registry,
        )
        self.requests = Counter(
            "restock_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.idempotency = Counter(
            "restock_idempotent_requests",
            "Keyed writes not run (again): replayed, mismatch (422), in_flight (409).",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "restock_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Each worker counts its own pool in its own file; a scrape adds up the files of the
        # workers still running ("livesum").
        self.pool = PoolWatch(
            open=Gauge(
                POOL_OPEN,
                "Connections the pool holds open.",
                multiprocess_mode="livesum",
                registry=registry,
            ),
            in_use=Gauge(
                POOL_IN_USE, "Connections in use.", multiprocess_mode="livesum", registry=registry
            ),
        )


# In multiprocess mode a value is an entry in this process's file: two instruments of the
# same name in one process would overwrite each other's counts, so the process has one set.
_shared: _Instruments | None = None


def _process_instruments() -> _Instruments:
    global _shared
    if _shared is None:
        _shared = _Instruments(None)
    return _shared


class _Exposition(Collector):
    """What a scrape shows: the instruments, and the idle connections as open less in use
    (one figure fewer to write on the request path)."""

    def __init__(self, source: Collector, directory: str | None) -> None:
        self.source = source
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        if self.directory is not None:
            _forget_dead_workers(self.directory)
        pool = {POOL_OPEN: 0.0, POOL_IN_USE: 0.0}
        for metric in self.source.collect():
            if metric.name in pool:
                pool[metric.name] = sum(sample.value for sample in metric.samples)
            yield metric
        idle = max(0.0, pool[POOL_OPEN] - pool[POOL_IN_USE])  # not below 0 mid-release
        yield GaugeMetricFamily(POOL_IDLE, "Idle connections.", value=idle)


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that no longer run (killed, or died): a worker that
    ends cleanly drops its own (``Metrics.retire``), uvicorn offers no hook when it replaces
    one. Their counters stay: what they counted did happen."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(Path(path).stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # running, as another user
            pass


class Metrics:
    """The service's metrics and their exposition.

    Without ``PROMETHEUS_MULTIPROC_DIR`` (one worker; the tests, which build many apps in
    one process) the instruments live in this app's own registry, and a scrape reads them.

    With it (``serve --workers N`` sets it for its workers), prometheus_client keeps every
    value in a file of the process in that directory, and a scrape of any worker merges
    the files of all of them (``MultiProcessCollector``): counters and histograms are summed
    over every worker that ever ran in this serve, dead ones included; the pool gauges over
    the workers still running (``livesum``). Each worker counts its own pool, in its own
    file, as it changes (``Store.watch_pool``: a connection opened or closed, one taken or
    given back): a worker answering a scrape cannot read another's pool, and figures written
    now and then, or at a scrape of that worker, would be stale in every other worker's
    share of the sum. In that mode an increment is a write into a memory-mapped file, not
    a locked float: a request makes three (its count, its latency's sum and bucket), a unit
    of database work two (in use, then not), and the idle figure is derived at the scrape
    rather than written.
    """

    def __init__(self) -> None:
        self.directory = os.environ.get(MULTIPROC_DIR) or None
        source: Collector
        if self.directory is None:
            registry = CollectorRegistry()
            instruments = _Instruments(registry)
            source = registry
        else:
            if values.ValueClass is values.MutexValue:
                raise RuntimeError(
                    f"{MULTIPROC_DIR} was set after prometheus_client was imported: "
                    "set it before the process starts"
                )
            instruments = _process_instruments()
            source = multiprocess.MultiProcessCollector(None, self.directory)  # type: ignore[no-untyped-call]
        self.orders = instruments.orders
        self.requests = instruments.requests
        self.idempotency = instruments.idempotency
        self.latency = instruments.latency
        self.pool = instruments.pool
        self.registry = CollectorRegistry()
        self.registry.register(_Exposition(source, self.directory))

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def retire(self) -> None:
        """At the end of a worker: its pool is no longer part of the sum."""
        if self.directory is not None:
            multiprocess.mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    def count_orders(self, batch: BatchResult) -> None:
        counts = collections.Counter(result.decision.code.value for result in batch.results)
        for code, count in counts.items():
            self.orders.labels(batch.mall.value, code).inc(count)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() locks and builds a key each time: look it up once
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@contextlib.contextmanager
def shared_by_workers(workers: int) -> Iterator[None]:
    """The directory where the workers of one ``serve`` keep their metrics, empty at start.

    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it: it must be set before start, so
    prometheus_client reads it even with one worker; the files of an earlier run are
    removed, and anything else there stops the start. Otherwise, with more than one worker,
    a fresh private directory, removed at the end. The workers inherit the variable.
    """
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        _empty(Path(given))
        yield
        return
    if workers <= 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="restock-metrics-")
    os.environ[MULTIPROC_DIR] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_DIR, None)
        shutil.rmtree(directory, ignore_errors=True)


def _empty(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    others = []
    for path in directory.iterdir():
        if path.is_file() and _METRIC_FILE.fullmatch(path.name):
            path.unlink()
        else:
            others.append(path.name)
    if others:
        raise SystemExit(
            f"restock-service: {MULTIPROC_DIR}={directory} holds more than metrics "
            f"({', '.join(sorted(others)[:3])}): give the metrics a directory of their own"
        )
