"""Prometheus metrics, one registry per application (per server process)."""

import collections
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from restock_service.rules import BatchResult
from restock_service.store import Store

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _PoolCollector(Collector):
    """The connection pool's figures, read at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        figures = self.store.pool_figures()
        if figures is None:
            return
        for name, doc, value in (
            ("restock_db_pool_size", "Connections the pool holds open.", figures.size),
            ("restock_db_pool_checked_out", "Connections in use.", figures.checked_out),
            ("restock_db_pool_checked_in", "Idle connections.", figures.idle),
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
        self.idempotency = Counter(
            "restock_idempotent_requests",
            "Keyed writes not run (again): replayed, mismatch (422), in_flight (409).",
            ["outcome"],
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

    def watch_pool(self, store: Store) -> None:
        self.registry.register(_PoolCollector(store))

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
