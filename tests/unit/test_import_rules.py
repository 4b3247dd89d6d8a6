"""The arrows that must never exist (ARCHITECTURE.md), checked on every import, lazy ones included.

- ``gateway/`` (the core) imports no connector, simulator, benchmark or test module: plug-ins are found
  through entry points.
- ``connectors/`` imports no simulator, benchmark or test module.
- The benchmark harness (``bench/``) is installed beside them but nothing in production imports it; the
  simulators import no benchmark or test module either.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "gateway": ("connectors", "simulators", "bench", "tests"),
    "connectors": ("simulators", "bench", "tests"),
    "simulators": ("bench", "tests"),
}


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            out.add(str(node.args[0].value))
    return out


def test_no_forbidden_imports() -> None:
    found = set()
    for top, banned in FORBIDDEN.items():
        for path in sorted((ROOT / top).rglob("*.py")):
            for module in imports(path):
                if module.split(".")[0] in banned:
                    found.add((str(path.relative_to(ROOT)), module))
    assert found == set(), "forbidden imports (see ARCHITECTURE.md)"
