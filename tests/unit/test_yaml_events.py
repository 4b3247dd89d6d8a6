"""The event-driven YAML loader gives exactly what ``yaml.safe_load`` gives, and refuses what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import yaml_events
from tests import REPO

SNIPPETS = [
    "",
    "# only a comment\n",
    "a: 1\nb: -2.5e3\nc: 0x1F\nd: 0o17\ne: 017\nf: 1_000\ng: 1:30\nh: .inf\ni: -.inf\nj: .nan\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: true\nf: ~\ng: null\nh:\ni: 'yes'\nj: \"1\"\n",
    "t: 2026-12-05\nu: 2026-12-05T10:20:30Z\nv: 2026-12-05 10:20:30.5 +01:00\n",
    "s: !!str 123\nn: !!int '7'\nf: !!float '2'\nx: ! 12\nb: !!binary aGVsbG8=\n",
    "list: [1, two, {three: 3}, [4]]\nblock:\n  - a\n  - b: c\n    d: e\n",
    "base: &b {unit: 1, timeout: 2s}\nother: *b\ndev: {<<: *b, unit: 2}\n",
    "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc: {<<: [*a, *b], w: 0}\nd:\n  <<: *b\n  <<: *a\n",
    "multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\nquoted: 'it''s'\n",
    "? complex key\n: value\n",
    "s: &s scalar\nt: *s\nseq: &q [1, 2]\nu: *q\n",
    "- just\n- a list\n",
    "plain scalar\n",
    "key with spaces: v\n'quoted key': w\n1: int key\n",
]


@pytest.mark.parametrize("text", SNIPPETS)
def test_same_as_safe_load(text: str) -> None:
    assert _same(yaml_events.load(text), yaml.safe_load(text))


def test_every_shipped_config_loads_the_same() -> None:
    files = [*REPO.glob("configs/**/*.yaml"), *REPO.glob("connectors/*/sample.yaml"), REPO / "gateway/default.yaml",
             *REPO.glob("simulators/**/*.yaml")]
    assert len(files) >= 8
    for path in files:
        text = Path(path).read_text()
        assert _same(yaml_events.load(text), yaml.safe_load(text)), path


@pytest.mark.parametrize(("text", "error", "line"), [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a'", 3),
    ("a: *nowhere\n", "found undefined alias 'nowhere'", 1),
    ("a: 1\n---\nb: 2\n", "but found another document", 2),
    ("a: [1, 2\nb: 3\n", "", 2),
    ("a: !!python/object:os.system x\n", "could not determine a constructor", 1),
    ("k: v\n? {a: 1}\n: w\n", "found unhashable key", 2),
    ("a: {<<: [1, 2]}\n", "expected a mapping for merging", 1),
])
def test_refused_like_safe_load_with_the_line(text: str, error: str, line: int) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as got:
        yaml_events.load(text)
    assert error in str(got.value)
    mark = got.value.problem_mark or got.value.context_mark
    assert mark is not None and mark.line + 1 == line
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text.replace("a: 3\n", "a: 3\n---\n")) if "duplicate" in error else yaml.safe_load(text)


def test_an_anchored_mapping_with_a_merge_is_the_merged_one() -> None:
    text = "base: &b {x: 1}\nmid: &m {<<: *b, y: 2}\nuse: *m\n"
    assert yaml_events.load(text)["use"] == {"x": 1, "y": 2} == yaml.safe_load(text)["use"]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False), st.text(max_size=20))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(trees, st.booleans())
def test_whatever_pyyaml_dumps_loads_back_the_same(tree: object, flow: bool) -> None:
    text = yaml.safe_dump({"root": tree}, default_flow_style=flow, allow_unicode=True)
    assert _same(yaml_events.load(text), yaml.safe_load(text))


def _same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and key order and types compared too."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
