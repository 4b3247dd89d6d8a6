"""YAML to Python objects straight from the parser's events, without PyYAML's node graph.

``yaml.load`` first composes the whole document into nodes (each with two position marks), then
constructs the objects: for a 100,000-tag config that graph peaks at ~350 MB, and the freed nodes leave
the heap so fragmented that the process keeps most of it. Building the objects event by event keeps
only the result (plus one event at a time): the same values, duplicate keys refused, anchors, aliases
and merge keys (``<<``) supported, scalars resolved and constructed by PyYAML's safe resolver and
constructor (YAML 1.1, as ``yaml.safe_load``). libyaml's parser is used when PyYAML has it.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class DuplicateKey(yaml.MarkedYAMLError):
    """A key given twice in one mapping (YAML would silently keep the last one)."""


class _Scalars(SafeConstructor):
    """PyYAML's safe constructors for single scalar nodes (ints, floats, bools, nulls, timestamps...)."""

    def scalar(self, tag: str, value: str, mark: Any) -> Any:
        if tag == _STR:
            # keys and words like "float32" repeat on every tag: one object each, not one per occurrence
            return sys.intern(value) if len(value) <= 64 else value
        ctor = self.yaml_constructors.get(tag)
        if ctor is None:
            raise ConstructorError(None, None, f"could not determine a constructor for the tag {tag!r}", mark)
        return ctor(self, yaml.ScalarNode(tag, value, mark, mark))


_RESOLVER = Resolver()
_CONSTRUCT = _Scalars()


def _resolve(value: str, implicit: tuple[bool, bool]) -> str:
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
    return tag


def _events(text: str) -> Any:
    if _CParser is not None:
        parser = _CParser(text)
        try:
            while True:
                event = parser.get_event()
                if event is None:
                    return
                yield event
                if isinstance(event, yaml.StreamEndEvent):
                    return
        finally:
            parser.dispose()
    yield from yaml.parse(text, Loader=yaml.SafeLoader)


class _Mapping:
    __slots__ = ("anchor", "key", "keys_at", "merges", "obj")

    def __init__(self, anchor: str | None) -> None:
        self.obj: dict[Any, Any] = {}
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.merges: list[tuple[Any, Any]] = []  # (value, mark) of `<<` entries, applied at the end
        self.keys_at: dict[Any, Any] = {}


class _Sequence:
    __slots__ = ("anchor", "obj")

    def __init__(self, anchor: str | None) -> None:
        self.obj: list[Any] = []
        self.anchor = anchor


_NO_KEY = object()
_MERGE_KEY = object()


def load(text: str) -> Any:
    """The single document in ``text`` as Python objects (``None`` when empty), like ``yaml.safe_load``."""
    anchors: dict[str, Any] = {}
    stack: list[_Mapping | _Sequence] = []
    result: Any = None
    documents = 0

    def add(value: Any, mark: Any, is_merge: bool = False) -> None:
        nonlocal result
        if not stack:
            result = value
            return
        top = stack[-1]
        if isinstance(top, _Sequence):
            top.obj.append(value)
        elif top.key is _NO_KEY:
            top.key = _MERGE_KEY if is_merge else value
            if not is_merge:
                try:
                    hash(value)
                except TypeError:
                    raise ConstructorError("while constructing a mapping", None, "found unhashable key",
                                           mark) from None
                if value in top.keys_at:
                    raise DuplicateKey(problem=f"duplicate key {value!r}", problem_mark=mark)
                top.keys_at[value] = mark
        else:
            if top.key is _MERGE_KEY:
                top.merges.append((value, mark))
            else:
                top.obj[top.key] = value
            top.key = _NO_KEY

    for event in _events(text):
        kind = type(event)
        if kind is yaml.ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":  # as PyYAML's composer: "!" is resolved like no tag
                tag = _resolve(event.value, event.implicit)
            is_merge = tag == _MERGE
            value = event.value if is_merge else _CONSTRUCT.scalar(tag, event.value, event.start_mark)
            if event.anchor is not None:
                anchors[event.anchor] = value
            add(value, event.start_mark, is_merge and isinstance(stack[-1], _Mapping) if stack else False)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            is_map = kind is yaml.MappingStartEvent
            if event.tag not in (None, "!", _MAP if is_map else _SEQ):
                what = "mapping" if is_map else "sequence"
                raise ConstructorError(None, None, f"unsupported tag {event.tag!r} on a {what}", event.start_mark)
            frame: _Mapping | _Sequence = _Mapping(event.anchor) if is_map else _Sequence(event.anchor)
            if event.anchor is not None:  # registered now: an alias inside the collection refers to it
                anchors[event.anchor] = frame.obj
            stack.append(frame)
        elif kind is yaml.MappingEndEvent:
            done = stack.pop()
            assert isinstance(done, _Mapping)
            if done.merges:
                _merge(done)
            add(done.obj, event.start_mark)
        elif kind is yaml.SequenceEndEvent:
            add(stack.pop().obj, event.start_mark)
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            add(anchors[event.anchor], event.start_mark)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise ComposerError("expected a single document in the stream", None,
                                    "but found another document", event.start_mark)
    return result


def _merge(frame: _Mapping) -> None:
    """``<<: *base`` (or a list of them), as PyYAML and the merge-key spec do it: merged keys come first, in
    order; of mappings merged earlier (in a list, or by an earlier ``<<``) the first one wins; the
    mapping's own keys win over all of them."""
    merged: dict[Any, Any] = {}
    for value, mark in frame.merges:
        for src in value if isinstance(value, list) else [value]:
            if not isinstance(src, dict):
                raise ConstructorError("while constructing a mapping", None,
                                       f"expected a mapping for merging, but found {type(src).__name__}", mark)
            for k, v in src.items():
                merged.setdefault(k, v)
    own = list(frame.obj.items())
    frame.obj.clear()  # in place: an anchor on this mapping refers to this very dict
    frame.obj.update(merged)
    frame.obj.update(own)
