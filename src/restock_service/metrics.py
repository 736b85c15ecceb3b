"""Prometheus metrics, one registry per application (per server process)."""

import collections
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

from restock_service.db import Database
from restock_service.rules import BatchResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _PoolCollector(Collector):
    """The connection pools' figures, read at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pool = db.engine.sync_engine.pool

    def collect(self) -> Iterator[Metric]:
        hot = self.db.hot_pool_figures()
        if hot is not None:
            for name, doc, value in (
                ("restock_db_hot_pool_open", "Hot path connections open.", hot[0]),
                ("restock_db_hot_pool_idle", "Hot path connections idle.", hot[1]),
            ):
                yield GaugeMetricFamily(name, doc, value=value)
        if not isinstance(self.pool, QueuePool):
            return
        for name, doc, value in (
            ("restock_db_pool_size", "Connections the pool keeps.", self.pool.size()),
            ("restock_db_pool_checked_out", "Connections in use.", self.pool.checkedout()),
            ("restock_db_pool_checked_in", "Idle connections.", self.pool.checkedin()),
            ("restock_db_pool_overflow", "Connections beyond the pool size.", self.pool.overflow()),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.orders = Counter(
            "restock_orders",
            "Orders of restock requests, by mall and outcome code.",
            ["mall", "code"],
            registry=self.registry,
        )
        self.requests = Counter(
            "restock_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "restock_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def watch_pool(self, db: Database) -> None:
        self.registry.register(_PoolCollector(db))

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
