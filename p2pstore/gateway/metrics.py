"""The gateway's metrics, in Prometheus' format on its admin endpoint: requests by operation
and status, bytes in and out, latency by operation.  Each gateway owns its registry (no global
state, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "p2pstore_gateway_requests",
            "S3 requests answered, by operation and HTTP status",
            ["operation", "status"],
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "p2pstore_gateway_received_bytes", "Request body bytes read", registry=self.registry
        )
        self.bytes_out = Counter(
            "p2pstore_gateway_sent_bytes", "Response body bytes sent", registry=self.registry
        )
        self.latency = Histogram(
            "p2pstore_gateway_request_seconds",
            "Seconds from a request's head to the end of its answer, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def answered(self, operation: str, status: int) -> None:
        self.requests.labels(operation=operation, status=str(status)).inc()

    def count(self, operation: str, status: int) -> float:
        """How many requests got this answer (for tests)."""
        value = self.registry.get_sample_value(
            "p2pstore_gateway_requests_total", {"operation": operation, "status": str(status)}
        )
        return value or 0.0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
