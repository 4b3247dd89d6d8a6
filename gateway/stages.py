"""The stages a sample passes from its read to the uplink's ack, timed into ``edgegw_stage_seconds{stage}``.

Each is observed once per unit of work, for the oldest sample of it (per-sample timing would cost more
than some stages take):

- ``read_emit``: the source read it (its source timestamp) -> the source emitted its batch (per batch);
- ``emit_commit``: emitted (appended) -> the spool commit holding it is done (per commit);
- ``commit_sink``: committed -> a sink's delivery loop took it from the spool's in-memory tail (per write;
  a sink that is behind reads from the file and is not timed here: its backlog shows as the sink's age);
- ``sink_publish``: handed to the sink -> the sink's last message of the write went out (per write; a sink
  that does not report that moment, see ``gateway.contracts.PublishClock``, counts its whole write here);
- ``publish_ack``: published -> the uplink acknowledged all of it, i.e. the write returned (per write).

``read_emit`` compares wall clocks (a device's own timestamp may be skewed; negative values count as 0),
the others monotonic time.
"""

from __future__ import annotations

from typing import Any

from gateway.metrics import Metrics

READ_EMIT = "read_emit"
EMIT_COMMIT = "emit_commit"
COMMIT_SINK = "commit_sink"
SINK_PUBLISH = "sink_publish"
PUBLISH_ACK = "publish_ack"
STAGES = (READ_EMIT, EMIT_COMMIT, COMMIT_SINK, SINK_PUBLISH, PUBLISH_ACK)


def stage(metrics: Metrics, name: str) -> Any:
    """The histogram child of one stage (resolve once, observe many times)."""
    return metrics.stage_seconds.labels(name)
