"""Record, durations, backoff, plug-in registry, write conversion, CLI tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import plugins
from gateway.backoff import Backoff
from gateway.cli.main import build_parser, main
from gateway.config.base import TagBase, parse_duration
from gateway.errors import WriteError
from gateway.model import Quality, Sample
from gateway.writes import BOOL, WriteKind, coerce, int_kind


def test_sample_is_slotted_immutable_and_defaults() -> None:
    s = Sample("filler", "temperature", 21.5, source_ts=1, gateway_ts=2, unit="degC")
    assert s.quality is Quality.GOOD and s.status == 0
    assert s.quality.label == "good" and Quality.BAD.label == "bad"
    with pytest.raises(AttributeError):
        s.value = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.__dict__  # noqa: B018


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("5m", 300.0), ("1.5h", 5400.0), ("7d", 604800.0), (2, 2.0), ("10", 10.0),
     (" 250 ms ", 0.25), ("100us", 1e-4)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "1 sec", "-1s", -3, True, "1s2"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 4.0)
    delays = [b.next() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for d, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= d <= cap
    b.reset()
    assert b.next() <= 0.5


def test_unknown_plugin_kind_lists_installed() -> None:
    with pytest.raises(plugins.PluginError) as err:
        plugins.source_plugin("profinet")
    assert "unknown source type 'profinet'" in str(err.value)
    assert "synthetic" in str(err.value)
    assert set(plugins.installed_kinds(plugins.SINKS_GROUP)) >= {"sqlite", "discard"}


def test_plugins_import_no_protocol_library() -> None:
    # nor aiohttp (~8 MB of RSS): the HTTP endpoint imports it when it is enabled
    code = (
        "import sys; from gateway import plugins; "
        "[plugins.source_plugin(k) for k in plugins.installed_kinds(plugins.SOURCES_GROUP)]; "
        "[plugins.sink_plugin(k) for k in plugins.installed_kinds(plugins.SINKS_GROUP)]; "
        "import gateway.runtime, gateway.cli.main; gateway.cli.main.build_parser(); "
        "print(sorted(m for m in ('asyncua', 'pymodbus', 'paho', 'influxdb_client', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_coerce_inverts_scale_and_checks_limits() -> None:
    tag = TagBase(name="sp", scale=0.1, offset=-5.0, min=0, max=100, writable=True)
    real = WriteKind("float")
    assert coerce(tag, real, 20.0) == pytest.approx(250.0)
    assert coerce(tag, int_kind(16, False), 20) == 250 and isinstance(coerce(tag, int_kind(16, False), 20), int)
    with pytest.raises(WriteError, match="above the tag's maximum 100"):
        coerce(tag, real, 100.5)
    with pytest.raises(WriteError, match="below the tag's minimum 0"):
        coerce(tag, real, -1)
    with pytest.raises(WriteError, match="not a finite"):
        coerce(tag, real, float("nan"))
    with pytest.raises(WriteError, match="not writable"):
        coerce(TagBase(name="ro"), real, 1)
    assert coerce(TagBase(name="b", writable=True), BOOL, True) is True
    with pytest.raises(WriteError, match="scale 0"):
        coerce(TagBase(name="z", scale=0.0, writable=True), real, 1.0)


def test_cli_tree_has_the_product_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)  # type: ignore[arg-type]
    assert {"run", "validate", "schema", "query", "write", "scan", "browse", "pki", "simulate", "record",
            "bench"} <= names


def test_a_command_comes_only_from_its_plugin(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # no hard-coded command table: a build without the recording connector has no `record` command
    installed = [p for p in plugins.command_plugins() if p.name != "record"]
    monkeypatch.setattr("gateway.cli.main.command_plugins", lambda: installed)
    with pytest.raises(SystemExit) as exit_info:
        main(["record", "-c", "x.yaml"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'record'" in capsys.readouterr().err


def test_gateway_imports_no_protocol_library() -> None:
    """House rule: protocol libraries belong to the plug-ins in connectors/ (and the simulators)."""
    import ast
    from pathlib import Path

    protocol = {"asyncua", "pymodbus", "paho", "influxdb_client"}
    root = Path(__file__).resolve().parents[2] / "gateway"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(root.parent)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in protocol]
    assert not offenders, offenders
