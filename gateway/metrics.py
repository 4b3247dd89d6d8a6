"""The one metrics registry every component records into (prometheus-client).

A ``Metrics`` instance owns its own ``CollectorRegistry`` so tests and hot reloads never collide on
the process-global default registry. Components take the families they need and cache ``.labels()``
children once, outside the hot path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from gateway.health import HealthRegistry

NS = "edgegw"
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # process: RSS, CPU seconds, open fds (Linux /proc), and the pipeline's rates
        ProcessCollector(registry=r)
        self.rate_in = Gauge(f"{NS}_samples_in_per_second", "Samples taken in over the last second", registry=r)
        self.rate_out = Gauge(f"{NS}_samples_out_per_second", "Samples delivered (all sinks) over the last second",
                              registry=r)
        # pipeline
        self.samples_in = Counter(f"{NS}_samples_in", "Samples emitted by sources", ["source"], registry=r)
        self.samples_filtered = Counter(
            f"{NS}_samples_filtered", "Samples suppressed by deadband / report-on-change", ["source"], registry=r
        )
        self.samples_out = Counter(f"{NS}_samples_out", "Samples accepted by a sink's uplink", ["sink"], registry=r)
        self.skipped_ticks = Counter(
            f"{NS}_source_skipped_ticks", "Poll/generation ticks skipped because the previous one overran",
            ["source", "device"], registry=r,
        )
        # devices and supervised components: their state is read from what the sources and supervisors
        # report (`gateway.health`), when scraped; `code` is a Modbus exception code or an OPC-UA status name
        self.health = HealthRegistry()
        r.register(self.health)
        self.device_reads = Counter(
            f"{NS}_device_reads", "Read requests (or notifications) completed", ["source", "device"], registry=r
        )
        self.device_request_seconds = Histogram(
            f"{NS}_device_request_seconds", "Round-trip time of one device request", ["source", "device"],
            registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        # sinks
        self.sink_failures = Counter(
            f"{NS}_sink_failures", "Failed sink writes", ["sink", "kind"], registry=r
        )
        self.sink_dead_lettered = Counter(
            f"{NS}_sink_dead_lettered_samples", "Samples a sink rejected permanently", ["sink"], registry=r
        )
        self.sink_write_seconds = Histogram(
            f"{NS}_sink_write_seconds", "Time one sink write took", ["sink"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
        )
        self.sink_pending = Gauge(
            f"{NS}_sink_pending_samples", "Spooled samples a sink has not delivered yet", ["sink"], registry=r
        )
        self.sink_oldest_pending_age = Gauge(
            f"{NS}_sink_oldest_pending_age_seconds", "Age of the oldest sample a sink has not delivered",
            ["sink"], registry=r,
        )
        self.sink_last_delivery = Gauge(
            f"{NS}_sink_last_delivery_timestamp_seconds", "Wall time of the last accepted write", ["sink"],
            registry=r,
        )
        # spool
        self.spool_appended = Counter(f"{NS}_spool_appended_samples", "Samples appended to the spool", registry=r)
        self.spool_dropped = Counter(
            f"{NS}_spool_dropped_samples", "Samples dropped by the spool before every sink had them",
            ["reason"], registry=r,
        )
        self.sink_dropped = Counter(
            f"{NS}_sink_dropped_samples", "Samples a sink will never get: the spool dropped or skipped them"
            " before the sink delivered them", ["sink", "reason"], registry=r,
        )
        self.spool_bytes = Gauge(f"{NS}_spool_bytes", "Payload bytes held by the spool", registry=r)
        self.spool_batches = Gauge(f"{NS}_spool_batches", "Batches held by the spool", registry=r)
        self.spool_commit_seconds = Histogram(
            f"{NS}_spool_commit_seconds", "Time one spool commit took", registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        )
        self.spool_errors = Counter(f"{NS}_spool_errors", "Spool I/O errors", ["kind"], registry=r)
        # where the latency goes, read -> uplink ack (``gateway.stages``): observed once per unit of work
        # (a source batch, a commit, a sink write) for its oldest sample, never per sample
        self.stage_seconds = Histogram(
            f"{NS}_stage_seconds", "Time the oldest sample of a batch, commit or write spent in one stage from "
            "its read to the uplink's ack", ["stage"], registry=r, buckets=STAGE_BUCKETS,
        )
