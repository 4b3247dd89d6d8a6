"""The committed ``sparkplug_b_pb2.py(i)`` are what protoc makes of the vendored ``sparkplug_b.proto`` today."""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

from grpc_tools import protoc

from connectors.sparkplug import codec
from connectors.sparkplug.config import Datatype

ROOT = Path(__file__).resolve().parents[4]
PACKAGE = "connectors/sparkplug"


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    (tmp_path / PACKAGE).mkdir(parents=True)
    shutil.copy(ROOT / PACKAGE / "sparkplug_b.proto", tmp_path / PACKAGE)
    # the same relative path as the committed build, so the descriptor's file name is the same too
    rc = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                      f"{tmp_path}/{PACKAGE}/sparkplug_b.proto"])
    assert rc == 0
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        fresh = (tmp_path / PACKAGE / name).read_bytes()
        assert fresh == (ROOT / PACKAGE / name).read_bytes(), (
            f"{PACKAGE}/{name} is stale: regenerate it with python -m grpc_tools.protoc -I. --python_out=. "
            f"--pyi_out=. {PACKAGE}/sparkplug_b.proto")


def test_config_names_every_datatype_the_codec_encodes() -> None:
    assert set(typing.get_args(Datatype)) == set(codec.NAMES)
    assert {name: getattr(codec.pb, name) for name in codec.NAMES} == codec.NAMES  # the proto's own numbers
