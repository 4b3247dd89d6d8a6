"""How the e2e scenario splits its tags over simulator processes, and the files it writes for them and the gateway.

Half the tags are Modbus float32 holding registers (devices of at most ``MODBUS_DEVICE_TAGS`` tags, one
gateway source and TCP connection each, at most ``modbus_per_sim`` tags per simulator process); the other
half OPC-UA Double variables (machines of at most ``UA_MACHINE_VARS``, since asyncua slows with many
children; at most ``ua_per_sim`` changing values per server process, one gateway session each). Every
value is a ramp rising by 1 per second, so each poll and each notification carries a new value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODBUS_DEVICE_TAGS = 1000
UA_MACHINE_VARS = 500
NS = "urn:edge-gateway:e2e"
# A rising ramp of 1 per second that stays exact in float32 for the hour it spans.
_RAMP = {"signal": "ramp", "start": 0, "end": 3600, "period": 3600}


def _split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal positive shares."""
    base, extra = divmod(total, parts)
    return [base + (k < extra) for k in range(parts)]


@dataclass(frozen=True)
class Layout:
    tags: int
    modbus_devices: list[list[int]]  # per simulator process: tags of each device
    ua_machines: list[list[int]]  # per server process: variables of each machine

    @classmethod
    def plan(cls, tags: int, modbus_per_sim: int = 10_000, ua_per_sim: int = 2_500,
             opcua_max: int | None = None) -> Layout:
        ua = tags - tags // 2 if opcua_max is None else min(tags - tags // 2, opcua_max)
        mb = tags - ua
        devices = _split(mb, math.ceil(mb / MODBUS_DEVICE_TAGS)) if mb else []
        sims = min(len(devices), math.ceil(mb / modbus_per_sim)) if devices else 0
        per_sim = [devices[k::sims] for k in range(sims)]
        machines = _split(ua, math.ceil(ua / UA_MACHINE_VARS)) if ua else []
        servers = math.ceil(ua / ua_per_sim) if ua else 0
        per_server = [machines[k::servers] for k in range(servers)]
        return cls(tags, per_sim, per_server)

    @property
    def modbus_tags(self) -> int:
        return sum(sum(d) for d in self.modbus_devices)

    @property
    def opcua_tags(self) -> int:
        return sum(sum(m) for m in self.ua_machines)

    def tag_keys(self) -> list[str]:
        """``device/tag`` of every tag, as the subscriber counts them."""
        keys = [f"{dev}/t{t}" for dev, n in self._modbus() for t in range(n)]
        keys += [f"ua{k}/m{m}_v{i}" for k, m, n in self._machines() for i in range(n)]
        return keys

    def _modbus(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for devices in self.modbus_devices:
            out += [(f"mb{len(out) + j}", n) for j, n in enumerate(devices)]
        return out

    def _machines(self) -> list[tuple[int, int, int]]:
        """(server, global machine index, variables)."""
        out: list[tuple[int, int, int]] = []
        for k, machines in enumerate(self.ua_machines):
            out += [(k, len(out) + j, n) for j, n in enumerate(machines)]
        return out

    def write(self, tmp: Path, modbus_ports: list[int], ua_ports: list[int], mqtt_port: int, vm_port: int,
              publishing: float, sampling: float, queue: int,
              linger: float | None = None) -> tuple[list[Path], list[Path], Path]:
        """Simulator descriptions (Modbus, OPC-UA) and the gateway config, as JSON (which is YAML, and cheap)."""
        sources: dict[str, Any] = {}
        mb_files: list[Path] = []
        index = 0
        for k, (devices, port) in enumerate(zip(self.modbus_devices, modbus_ports, strict=True)):
            sim: dict[str, Any] = {}
            for unit, n in enumerate(devices, start=1):
                name = f"mb{index}"
                index += 1
                sim[name] = {"unit": unit, "tags": [
                    {"name": f"t{t}", "address": 2 * t, "type": "float32", **_RAMP} for t in range(n)]}
                sources[name] = {
                    "type": "modbus", "host": "127.0.0.1", "port": port, "interval": "1s", "timeout": "2s",
                    "devices": {name: {"unit": unit, "tags": [
                        {"name": f"t{t}", "address": 2 * t, "type": "float32"} for t in range(n)]}}}
            path = tmp / f"modbus{k}.json"
            path.write_text(json.dumps({"seed": 1, "devices": sim}))
            mb_files.append(path)
        ua_files: list[Path] = []
        ua_devices: dict[str, Any] = {}
        machines = self._machines()
        for k, port in enumerate(ua_ports):
            mine = [(m, n) for srv, m, n in machines if srv == k]
            sim = {f"m{m}": {"variables": [{"name": f"v{i}", "type": "Double", **_RAMP} for i in range(n)]}
                   for m, n in mine}
            path = tmp / f"opcua{k}.json"
            path.write_text(json.dumps({"seed": 1, "namespace": NS, "update_interval": "1s", "devices": sim}))
            ua_files.append(path)
            ua_devices[f"ua{k}"] = {
                "endpoint": f"opc.tcp://127.0.0.1:{port}/sim", "publishing_interval": f"{publishing * 1000:g}ms",
                # Sampling 0: each write is reported as it happens. Queue size 1 (the connector's default): a
                # publish carries one tick, so a device's values share one timestamp and one MQTT message. With
                # a deeper queue a late publish interleaves several ticks item by item and the per-device
                # payload degenerates into one message per value (see the e2e report).
                "sampling_interval": f"{sampling * 1000:g}ms", "queue_size": queue, "timeout": "30s",
                "watchdog": "60s",
                "tags": [{"name": f"m{m}_v{i}", "node": f"nsu={NS};s=m{m}.v{i}"} for m, n in mine for i in range(n)],
            }
        if ua_devices:
            sources["ua"] = {"type": "opcua", "queue_max": 1000, "devices": ua_devices}
        sinks: dict[str, dict[str, Any]] = {
            "mqtt": {"type": "mqtt", "port": mqtt_port, "qos": 1, "layout": "device"},
            "tsdb": {"type": "influxdb", "url": f"http://127.0.0.1:{vm_port}"},
        }
        if linger is not None:  # else the sinks' default
            for sink in sinks.values():
                sink["linger"] = f"{linger * 1000:g}ms"
        cfg = {
            "data_dir": str(tmp / "data"),
            "log": {"level": "warning", "format": "json"},
            "http": {"enabled": False},
            "sources": sources,
            "sinks": sinks,
        }
        cfg_path = tmp / "gateway.json"
        cfg_path.write_text(json.dumps(cfg))
        return mb_files, ua_files, cfg_path
