"""Line scenarios shipped with the simulators (``<name>.yaml`` next to this file)."""

from __future__ import annotations

from pathlib import Path

BUILTIN = ("bottling-line", "cnc-cell")


def scenario_path(name_or_path: str) -> Path:
    """A built-in scenario's packaged file for its name (``bottling-line``); otherwise the path as given."""
    if name_or_path in BUILTIN:
        return Path(__file__).with_name(f"{name_or_path}.yaml")
    return Path(name_or_path)
