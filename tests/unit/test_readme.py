"""The README's commands are real: every ``edge-gateway`` and ``./dev`` command line in its shell blocks and
inline code parses with the gateway's own argument parser (no unknown command, option or benchmark
scenario), every ``./dev`` verb is one ``./dev --help`` lists, and the quick ones run."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys

import pytest

from bench.scenarios import SCENARIOS
from gateway.cli.main import build_parser
from tests import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
DEV_VERBS = {"run", "test", "lint", "bench", "--help"}
"""``./dev``'s own verbs; any other word is an ``edge-gateway`` command."""
_ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")


def _shell_lines() -> list[str]:
    lines = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S):
        if lang not in ("sh", "bash", "console", "shell"):
            continue
        for line in body.splitlines():
            line = _ENV.sub("", line.split(" #")[0].strip().rstrip("\\").strip())
            if line.startswith(("edge-gateway ", "./dev ")):
                lines.append(line)
    return lines


def _inline() -> list[str]:
    found = re.findall(r"`((?:edge-gateway|\./dev) [^`]+)`", README.replace("\n", " "))
    return [c for c in found if not c.endswith("...") and "SCENARIO" not in c and "CMD" not in c]


def _commands() -> list[str]:
    """Each command once; ``a | b`` alternatives and ``[optional]`` parts written out as the first choice."""
    out: list[str] = []
    for line in [*_shell_lines(), *_inline()]:
        line = re.sub(r"\[([^\]|]*?)\s*(?:\|[^\]]*)?\]", r"\1", line)  # [--x | --y] -> --x
        for part in line.split(" | "):
            part = re.split(r"\s[<>]", part)[0].strip()  # a shell redirection is not an argument
            if part.startswith(("edge-gateway ", "./dev ")) and part not in out:
                out.append(part)
    return out


COMMANDS = _commands()


def test_the_readme_has_commands_to_check() -> None:
    assert len(COMMANDS) >= 30
    assert "./dev run" in COMMANDS and any(c.startswith("edge-gateway bench ") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_every_readme_command_parses(line: str) -> None:
    argv = shlex.split(line)
    if argv[0] == "./dev":
        if argv[1] in ("test", "lint", "--help"):
            return  # ./dev's own verbs (checked below); pytest parses `./dev test` arguments itself
        argv = argv[1:]  # ./dev run|bench|CMD -> edge-gateway run|bench|CMD
    else:
        argv = argv[1:]
    parser = build_parser()
    if len(argv) == 1 and line in _inline():  # prose naming a command: it exists
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert argv[0] in commands.choices, f"README names a command that does not exist: {line!r}"
        return
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse: {line!r} (exit {exc.code})")
    assert not extra or getattr(args, "takes_any_arguments", False), f"{line!r}: unknown arguments {extra}"
    if argv[0] == "bench":
        unknown = [s for s in args.scenario if s not in SCENARIOS and s != "all"]
        assert not unknown, f"{line!r}: no benchmark scenario {unknown}"


def test_every_dev_verb_in_the_readme_is_one_dev_lists() -> None:
    helped = subprocess.run(["bash", str(REPO / "dev"), "--help"], capture_output=True, text=True, timeout=60,
                            check=False, env={"PATH": "/usr/bin:/bin", "EDGEGW_VENV": "/nonexistent"})
    assert helped.returncode == 0, helped.stderr
    used = {shlex.split(c)[1] for c in COMMANDS if c.startswith("./dev ")}
    for verb in used & DEV_VERBS - {"--help"}:
        assert f"./dev {verb}" in helped.stdout, verb
    assert {"run", "test", "lint", "bench"} <= {line.split()[1] for line in helped.stdout.splitlines()
                                               if line.strip().startswith("./dev ")}


@pytest.mark.timeout(120)
def test_the_quick_readme_commands_run() -> None:
    """The ones that need no device, broker or running gateway, as the README writes them."""
    for line in ("edge-gateway validate -c configs/example.yaml", "edge-gateway schema"):
        assert line.split(" -c ")[0] in " ".join(COMMANDS) or line in README, line
        done = subprocess.run([sys.executable, "-m", "gateway.cli.main", *shlex.split(line)[1:]], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (line, done.stderr[-2000:])
        assert done.stdout.strip(), line
