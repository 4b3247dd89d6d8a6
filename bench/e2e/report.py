"""The e2e figures as Markdown (``e2e.md``, appended to ``RESULTS.md``) and as a plot (``e2e.svg``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from bench.plot import Panel, Series, svg_panels
from bench.result import BenchResult, machine

HEADER = (
    "| tags (Modbus + OPC-UA) | offered values/s | produced (read by the gateway) /s | delivered values/s | "
    "gateway CPU % of one core | "
    "gateway peak RSS MB | latency p50 / p99 ms | gateway-added p50 / p99 ms | p99 Modbus / OPC-UA ms | "
    "loss MQTT / Influx | "
    "simulators CPU % (Modbus + OPC-UA) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
_MB = 1.048576  # MiB -> MB: the targets are in MB


def _n(r: BenchResult, key: str) -> float:
    v = r.notes.get(key, math.nan)
    return float(v) if isinstance(v, int | float) else math.nan


def row(r: BenchResult) -> str:
    n = r.notes
    return (f"| {int(_n(r, 'tags')):,} ({n.get('modbus')} + {n.get('opcua')}) | {int(_n(r, 'offered/s')):,} "
            f"| {int(_n(r, 'produced/s')):,} | {int(_n(r, 'delivered/s')):,} | {r.cpu_pct:.1f} "
            f"| {r.peak_rss_mib * _MB:.0f} "
            f"| {n.get('p50_ms')} / {n.get('p99_ms')} | {n.get('gateway_p50_ms')} / {n.get('gateway_p99_ms')} "
            f"| {n.get('modbus_p99_ms')} / {n.get('opcua_p99_ms')} "
            f"| {n.get('loss_mqtt')} / {n.get('loss_influx')} "
            f"| {n.get('cpu_modbus_sim_%')} + {n.get('cpu_opcua_sim_%')} |")


def verdicts(results: list[BenchResult]) -> list[str]:
    """The issue's targets, each against the point it is about (when that point was run)."""
    out: list[str] = []
    by_tags = {int(_n(r, "tags")): r for r in results}
    r10 = by_tags.get(10_000)
    if r10 is not None:
        cpu, rss = r10.cpu_pct, r10.peak_rss_mib * _MB
        out.append(f"- 10,000 tags at 1 s: gateway {cpu:.1f} % of one core (target ≤ 20 %: "
                   f"{'met' if cpu <= 20 else 'MISSED'}), peak RSS {rss:.0f} MB (target ≤ 100 MB: "
                   f"{'met' if rss <= 100 else 'MISSED'}).")
        p99, added = _n(r10, "p99_ms"), _n(r10, "gateway_p99_ms")
        out.append(f"- Gateway-added latency at 10,000 values/s (the gateway's receipt of a value -> arrival at the "
                   f"subscriber): p99 {added:g} ms (target ≤ 100 ms: {'met' if added <= 100 else 'MISSED'}); "
                   f"end to end (source timestamp -> arrival) p99 {p99:g} ms: Modbus "
                   f"{r10.notes.get('modbus_p99_ms')} ms, OPC-UA {r10.notes.get('opcua_p99_ms')} ms, of which "
                   f"source timestamp -> gateway (simulator and a value's wait for the "
                   f"{r10.notes.get('publishing_ms')} ms publishing interval) p99 "
                   f"{r10.notes.get('upstream_opcua_p99_ms')} ms.")
    r50 = by_tags.get(50_000)
    if r50 is not None:
        held = (_n(r50, "loss_mqtt") == 0 and _n(r50, "loss_influx") == 0
                and _n(r50, "produced/s") >= 0.99 * _n(r50, "offered/s"))
        out.append(f"- 50,000 tags at 1 s: produced {int(_n(r50, 'produced/s')):,}/s of 50,000 offered, delivered "
                   f"{int(_n(r50, 'delivered/s')):,}/s, loss MQTT {r50.notes.get('loss_mqtt')} / Influx "
                   f"{r50.notes.get('loss_influx')}, gateway {r50.cpu_pct:.0f} % of one core, simulators "
                   f"{r50.notes.get('cpu_modbus_sim_%')} + {r50.notes.get('cpu_opcua_sim_%')} % (target: held "
                   f"without loss: {'met' if held else 'MISSED'}).")
    return out


def markdown(results: list[BenchResult], command: str, failures: list[str]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# End-to-end benchmark: simulators → gateway → MQTT + time-series store", "",
        f"Produced {stamp} by `{command}`.", "",
        f"Machine: {machine()}.", "",
        "Half the tags are Modbus float32 registers (devices of ≤ 1,000 tags, one connection each), half OPC-UA "
        "variables (machines of ≤ 500, one session per simulator process); every value changes every second "
        "and is read/notified every second. Simulators, mosquitto, VictoriaMetrics and the test subscriber run "
        "in their own processes; the gateway publishes to MQTT (QoS 1, per-device payloads) and writes InfluxDB "
        "line protocol to VictoriaMetrics. CPU = the gateway process's user+sys time over the measured window's "
        "wall time; RSS = its peak. Latency = arrival at the subscriber - the sample's source timestamp "
        "(ms resolution); gateway-added latency = arrival - the moment the gateway received the value (for "
        "OPC-UA the publish response, after decoding; for Modbus the answer, which is the source timestamp). "
        "Loss = samples with a source timestamp in the window that the gateway's sources "
        "produced minus those that reached the subscriber / VictoriaMetrics after the drain.", "",
        HEADER, *(row(r) for r in results), "",
        *verdicts(results), *(f"- failed: {f}" for f in failures), "",
        "<details><summary>all figures</summary>", "",
        *(f"- {r.scenario}: " + ", ".join(f"{k}={v}" for k, v in r.notes.items()) for r in results), "",
        "</details>", "",
    ]
    return "\n".join(lines)


def plot(results: list[BenchResult]) -> str:
    rs = sorted(results, key=lambda r: _n(r, "tags"))
    xs = [_n(r, "tags") for r in rs]

    def pts(values: list[float]) -> list[tuple[float, float]]:
        return list(zip(xs, values, strict=True))

    panels = [
        Panel("values/s", [Series("offered", pts([_n(r, "offered/s") for r in rs])),
                           Series("produced", pts([_n(r, "produced/s") for r in rs])),
                           Series("delivered (MQTT)", pts([_n(r, "delivered/s") for r in rs]))]),
        Panel("gateway CPU, % of one core", [Series("CPU", pts([r.cpu_pct for r in rs]))],
              [("20 % (10k tags)", 20.0)]),
        Panel("gateway peak RSS, MB", [Series("RSS", pts([r.peak_rss_mib * _MB for r in rs]))],
              [("100 MB (10k tags)", 100.0)]),
        Panel("latency, ms", [Series("end-to-end p99", pts([_n(r, "p99_ms") for r in rs])),
                              Series("gateway-added p99", pts([_n(r, "gateway_p99_ms") for r in rs])),
                              Series("gateway-added p50", pts([_n(r, "gateway_p50_ms") for r in rs]))],
              [("p99 100 ms (10k/s)", 100.0)]),
    ]
    return svg_panels("edge-gateway e2e: Modbus + OPC-UA → MQTT + VictoriaMetrics", panels, "tags (1 s cycle)", xs)


def write_report(out: Path, results: list[BenchResult], command: str, failures: list[str] | None = None,
                 *, append_results: bool = True) -> None:
    """``out``/e2e.md and ``out``/e2e.svg; with ``append_results`` the table also goes to ``out``/RESULTS.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.md").write_text(markdown(results, command, failures or []), encoding="utf-8")
    (out / "e2e.svg").write_text(plot(results), encoding="utf-8")
    if append_results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (out / "RESULTS.md").open("a", encoding="utf-8") as f:
            f.write(f"\n### {stamp}: `{command}` (end-to-end; plot: e2e.svg, details: e2e.md)\n\n{HEADER}\n"
                    + "\n".join(row(r) for r in results) + "\n\n" + "\n".join(verdicts(results)) + "\n")
