"""Broker failover on a real cluster: a gateway collecting 10,000 samples/s publishes at QoS 1 through node A
of a 3-node nats-server cluster (``hosts: [A, B, C]``, MQTT 3.1.1) while a subscriber on node C counts what
arrives, per tag. Node A is SIGKILLed, later restarted, then node B is SIGKILLed.

Every sample committed to the spool must reach the subscriber: the gateway also writes the embedded SQLite
store, which never goes down and reads the same spool, so it is the record of what was committed. Each tag's
samples arrive in order on first arrival (a sample is named by its counter value: two ticks can share a
millisecond); a sample may arrive twice (at-least-once) only around a cluster event: re-sent to the next
node after the killed one had stored it but not acknowledged it, or delivered again by JetStream while its
leaders moved. Duplicates are counted and printed. The longest pause in deliveries stays under the reconnect
window: the sink moves to the next node at once, and what it waits for is the cluster electing new
JetStream leaders for the streams and consumers the killed node led.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime import Runtime
from tests.gateways import StartGateway
from tests.mqtt_subscriber import Subscriber
from tests.servers import NatsCluster
from tests.waiting import until

DEVICES, TAGS, INTERVAL_MS = 2, 50, 10
RATE = DEVICES * TAGS * 1000 // INTERVAL_MS  # samples/s
PHASE_S = 6.0
"""Steady delivery between two events (kill, restart, kill)."""
RECONNECT_WINDOW_S = 20.0
"""The longest a failover may pause deliveries. The sink tries the next node at once, but a node serves MQTT
again only once JetStream has a leader for each stream and consumer the killed node led: followers elect one
after an election timeout of 4 to 9 s (nats-server 2.9's fixed raft timeouts), and meanwhile nats holds a
CONNECT or a QoS 1 publish for its 4 s JetStream request timeout and then closes the connection, which makes
the sink move on (a whole round of failures waits ``reconnect_max``, 2 s). Then paho re-sends what was not
acknowledged. Measured here: pauses of 1 to 10 s."""
IN_FLIGHT_S = 5.0
"""How long before a cluster event a sample may have been sent and not yet acknowledged (at 10 ms ticks,
delivery lags collection by well under a second). The at-least-once window of an event (a node killed or
back) runs from this long before it until the reconnect window after it."""


def iso_ms(ts: str) -> int:
    secs = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + int(ts[20:23])


def config(tmp_path: Path, cluster: NatsCluster, site: str) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "site": {"enterprise": "acme", "site": site, "area": "a1", "line": "l1"},
        "sources": {"line": {"type": "synthetic", "interval": f"{INTERVAL_MS}ms", "devices": {
            f"m{d}": {"tags": [{"name": f"t{i}", "signal": "counter"} for i in range(TAGS)]}
            for d in range(1, DEVICES + 1)}}},
        "sinks": {
            "store": {"type": "sqlite"},
            "cluster": {"type": "mqtt", "hosts": cluster.hosts, "protocol": "3.1.1", "qos": 1,
                        "client_id": f"gw-{site}", "reconnect_min": "1s", "reconnect_max": "2s",
                        "retry_max": "1s"},
        },
    }


Sample = tuple[str, str, int]
"""(device, tag, counter value): each tag counts its ticks, so a value names one sample (two ticks can share a
millisecond when the source catches up)."""


class Tally:
    """What reached the subscriber, sample by sample, parsed as it comes (the gateway shares this event loop:
    nothing here may hold it long)."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.read = 0
        self.arrivals: list[tuple[float, Sample, int, bool]] = []
        """(arrival time, sample, its timestamp in ms, the broker's DUP flag), in arrival order."""
        self.seen: set[Sample] = set()

    def update(self) -> None:
        messages = self.sub.snapshot()[self.read:]
        self.read += len(messages)
        for m in messages:
            if m.topic.endswith("/status"):
                continue
            doc = json.loads(m.payload)
            ms = iso_ms(doc["ts"])
            for tag, value in doc["values"].items():
                sample = (doc["device"], tag, value)
                self.arrivals.append((m.arrived, sample, ms, m.dup))
                self.seen.add(sample)


def committed(db_path: Path, before_ns: int) -> set[Sample]:
    """Every sample the store holds stamped before ``before_ns``."""
    db = sqlite3.connect(db_path)
    try:
        return set(db.execute(
            "SELECT s.device, s.tag, p.value FROM points p JOIN series s ON s.id = p.series_id WHERE p.ts_ns < ?",
            (before_ns,)))
    finally:
        db.close()


@pytest.mark.timeout(150)
async def test_failover_across_a_nats_cluster_loses_nothing(tmp_path: Path, nats_cluster: NatsCluster,
                                                            gateway: StartGateway) -> None:
    a, b, c = nats_cluster.nodes
    site = f"fo{uuid.uuid4().hex[:6]}"  # JetStream keeps sessions and streams across tests: our own topics
    events: list[tuple[str, float]] = []  # (what, wall time)
    with Subscriber(c.mqtt_port, [f"acme/{site}/#"], client_id=f"sub-{site}", protocol="3.1.1") as sub:
        tally = Tally(sub)
        runtime: Runtime = await gateway(config(tmp_path, nats_cluster, site))
        link = runtime.sinks["cluster"].link  # type: ignore[attr-defined]
        mqtt_loop, store_loop = runtime.deliveries["cluster"], runtime.deliveries["store"]
        await until(lambda: link.connected and link.endpoint == a.host, 15, "connected to node A")
        await until(lambda: len(sub.snapshot()) > 50, 15, "first messages on node C")

        async def fail(node: str, expect_not: str) -> None:
            """SIGKILL ``node``; until the sink is on another node and delivering again."""
            before = mqtt_loop.delivered
            t0 = time.monotonic()
            events.append((f"kill {node}", time.time()))
            await asyncio.to_thread(nats_cluster.kill, node)  # off the loop: the gateway runs on it
            await until(lambda: link.connected and link.endpoint != expect_not, 30, f"reconnected after {node}")
            print(f"kill {node}: the sink is on {link.endpoint} {time.monotonic() - t0:.2f} s later")
            await until(lambda: mqtt_loop.delivered > before + RATE, 30, f"delivering after {node}")

        t_start = time.time()
        await _steady(PHASE_S, tally)
        await fail("n1", a.host)
        await _steady(PHASE_S, tally)
        events.append(("restart n1", time.time()))
        await asyncio.to_thread(nats_cluster.restart, "n1")  # waits until node A is ready again
        await _steady(PHASE_S, tally)
        on_at_b_kill = link.endpoint
        await fail("n2", b.host)
        await _steady(PHASE_S, tally)

        # Drained: both sinks hold less than a second of collection, and a little later than the cut-off, so
        # everything appended before it is delivered to both (each sink delivers in order).
        t_cut = time.time_ns()
        await until(lambda: time.time_ns() > t_cut + 2_000_000_000 and mqtt_loop.reader is not None
                    and store_loop.reader is not None and mqtt_loop.reader.oldest_pending_age() < 1.0
                    and store_loop.reader.oldest_pending_age() < 1.0, 60, "both sinks drained")
        expected = await asyncio.to_thread(committed, tmp_path / "data" / "store.db", t_cut)

        def complete() -> bool:
            tally.update()
            return expected <= tally.seen

        await until(complete, 30, "every committed sample at the subscriber", every=0.2)
        got = tally.arrivals
        uplink = runtime.board.sinks()
        failovers = link.failovers
        endpoint = link.endpoint

    # what was collected: the whole run at 10,000 samples/s (the spool held it all)
    run_s = (t_cut / 1e9) - t_start
    assert len(expected) > RATE * run_s * 0.9, (len(expected), run_s)
    copies: Counter[Sample] = Counter()
    last: dict[tuple[str, str], int] = {}
    again: list[tuple[float, Sample, int, bool]] = []  # second and later arrivals of a sample
    for arrival in got:
        sample = arrival[1]
        copies[sample] += 1
        if copies[sample] > 1:
            again.append(arrival)
            continue
        device, tag, value = sample
        assert value > last.get((device, tag), -1), f"{device}.{tag}: {value} arrived after a later value"
        last[(device, tag)] = value
    missing = expected - set(copies)
    assert not missing, f"{len(missing)} of {len(expected)} committed samples never arrived: {sorted(missing)[:5]}"
    # duplicates: counted, printed, and only within the at-least-once window of a cluster event
    print(f"{len(expected)} samples committed in {run_s:.1f} s, {len(got)} arrivals, {len(again)} duplicates "
          f"of {sum(1 for n in copies.values() if n > 1)} samples; events: "
          + ", ".join(f"{what} {_utc(int(t * 1000))}" for what, t in events))
    for (stamp, dup), n in sorted(Counter((ms, dup) for _, _, ms, dup in again).items()):
        arrived = [a for a, _, ms, _ in again if ms == stamp]
        print(f"  {n} duplicates of samples stamped {_utc(stamp)}, DUP flag {dup}, arrived "
              f"{_utc(int(min(arrived) * 1000))} .. {_utc(int(max(arrived) * 1000))}")
    for _, sample, ms, _ in again:
        assert any(e - IN_FLIGHT_S <= ms / 1000 <= e + RECONNECT_WINDOW_S for _, e in events), \
            f"duplicate of {sample} stamped {_utc(ms)}: outside the at-least-once window of every cluster event"
    # deliveries never paused longer than the reconnect window
    times = sorted(arrival[0] for arrival in got if arrival[0] >= t_start)
    gap, at = max((b2 - b1, b1) for b1, b2 in itertools.pairwise(times))
    resumed = {what: min(a for a, _, ms, _ in got if ms / 1000 > t) - t for what, t in events}
    print(f"longest pause in deliveries: {gap:.2f} s at {_utc(int(at * 1000))}; first sample stamped after "
          + ", ".join(f"{what}: at the subscriber {s:.2f} s later" for what, s in resumed.items())
          + f"; the sink was on {on_at_b_kill} when B was killed; {failovers} failovers")
    assert gap < RECONNECT_WINDOW_S, f"deliveries paused {gap:.1f} s"
    assert max(resumed.values()) < RECONNECT_WINDOW_S, resumed
    # The sink says where it is: on a node that is up, having moved away from A, and from B if it was on B
    # when B was killed (a node that cannot serve while JetStream elects leaders makes it move on sooner).
    assert failovers >= 1 + (on_at_b_kill == b.host)
    assert endpoint in (a.host, c.host)
    status = next(s for s in uplink if s["name"] == "cluster")["uplink"]
    assert status == {"endpoint": endpoint, "connected": True, "endpoints": 3, "failovers": failovers}


async def _steady(seconds: float, tally: Tally) -> None:
    """Collection and delivery running: the phase itself, not a synchronisation; what arrives is tallied."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(min(0.5, end - time.monotonic()))
        tally.update()


def _utc(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"
