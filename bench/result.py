"""What a scenario measures, and how the harness prints it."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(slots=True)
class BenchResult:
    scenario: str
    wall_s: float
    cpu_s: float
    samples_in: int
    samples_out: int
    peak_rss_mib: float
    target: str = ""
    notes: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def in_rate(self) -> float:
        return self.samples_in / self.wall_s if self.wall_s else 0.0

    @property
    def out_rate(self) -> float:
        return self.samples_out / self.wall_s if self.wall_s else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        return cls(**json.loads(text))


class ProcessMeter:
    """CPU time (user+sys) and wall time of this process over a window; peak RSS of its whole life."""

    def __enter__(self) -> ProcessMeter:
        self._cpu0 = _cpu()
        self._threads0 = _thread_cpu()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = _cpu() - self._cpu0
        self.wall_s = time.perf_counter() - self._wall0
        self.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.threads_cpu_s: dict[str, float] = {}
        self.threads_wakes: dict[str, int] = {}
        for ident, (name, cpu, wakes) in _thread_cpu().items():
            kind = re.sub(r"[-_]?\d+(_\d+)?$", "", name)  # worker threads of one kind count together
            _, cpu0, wakes0 = self._threads0.get(ident, (name, 0.0, 0))
            self.threads_cpu_s[kind] = self.threads_cpu_s.get(kind, 0.0) + cpu - cpu0
            self.threads_wakes[kind] = self.threads_wakes.get(kind, 0) + wakes - wakes0

    def threads_pct(self) -> str:
        """Where the process's CPU went, by thread kind, and how often each slept and woke up (its voluntary
        context switches): on a VM one idle wake-up of a thread costs tens of µs, so which hop to chase."""
        busy = sorted(self.threads_cpu_s.items(), key=lambda kv: -kv[1])
        return " ".join(f"{k} {100 * v / self.wall_s:.1f} ({self.threads_wakes.get(k, 0) / self.wall_s:.0f} wakes/s)"
                        for k, v in busy if v > 0.0005 * self.wall_s)


def _thread_cpu() -> dict[int, tuple[str, float, int]]:
    """CPU seconds (the thread's own CPU clock) and voluntary context switches of each live thread of this
    process, by ident."""
    out: dict[int, tuple[str, float, int]] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        with contextlib.suppress(OSError, ProcessLookupError, IndexError, ValueError):  # a thread that just ended
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
            wakes = int(status.split("voluntary_ctxt_switches:", 1)[1].split(None, 1)[0])
            out[t.ident] = (t.name, cpu, wakes)
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


HEADER = (
    "| scenario | samples in/s | samples out/s | CPU % of one core | peak RSS MiB | wall s | target | notes |\n"
    "|---|---:|---:|---:|---:|---:|---|---|"
)


def markdown_row(r: BenchResult) -> str:
    notes = ", ".join(f"{k}={v}" for k, v in r.notes.items())
    return (
        f"| {r.scenario} | {r.in_rate:,.0f} | {r.out_rate:,.0f} | {r.cpu_pct:.1f} | {r.peak_rss_mib:.0f} "
        f"| {r.wall_s:.1f} | {r.target} | {notes} |"
    )


def machine() -> str:
    """The machine a table was measured on: CPUs and their model, memory, OS, Python, and the load average
    (other work sharing the machine shows there)."""
    model, mem_kib = "", 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    memory = f", {mem_kib / 2**20:.0f} GiB" if mem_kib else ""
    return (f"{os.cpu_count()} CPUs ({model or platform.machine()}){memory}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; load average {load}")
