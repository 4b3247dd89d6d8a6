"""Turn validation failures into one ``SOURCE: dotted.path: message`` line per problem.

``SOURCE`` is the config file, or the environment variable that supplied the failing value. Paths are
the user's own keys: pydantic's union labels (the ``type``/``signal`` tag it inserts for discriminated
unions, the member name for plain unions) and its ``[key]`` marker are dropped. Input values are never
printed: pydantic keeps them out of ``msg`` and a ``SecretStr`` must not leak through a message.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.config.base import NAME_PATTERN

PathElem = int | str

ConfigClass = type[Any]
"""A config model: a ``BaseModel``, or a pydantic dataclass (the tags, see ``config_dataclass``)."""

_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")  # a BaseModel's, a dataclass's

_NAME_HINT = "invalid name: use lowercase letters, digits and single underscores, e.g. filler_plc"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where config values came from: one file (or the embedded default), overridden by variables."""

    file: str
    data: Mapping[str, Any]
    """The parsed file."""
    env: Mapping[tuple[str, ...], tuple[str, str]]
    """Config path a variable sets (lower-cased, below the prefix) -> the variable's name and value."""

    @classmethod
    def of(
        cls, file: str, data: Mapping[str, Any], environ: Mapping[str, str], prefix: str, delimiter: str
    ) -> Origin:
        # Mirrors pydantic-settings (case-insensitive names, split on every delimiter).
        lowered = prefix.lower()
        env = {
            tuple(name.lower()[len(lowered):].split(delimiter)): (name, value)
            for name, value in environ.items()
            if name.lower().startswith(lowered) and len(name) > len(lowered)
        }
        return cls(file, data, env)

    def source_of(self, path: Sequence[PathElem]) -> str:
        """The variable that set ``path`` or one of its parents (env wins over the file), else the file."""
        keys = tuple(str(p) for p in path)
        for n in range(len(keys), 0, -1):
            hit = self.env.get(keys[:n])
            if hit is not None and _holds(hit[1], path[n:]):
                return hit[0]
        # Nothing at `path` came from a variable, but its entry may exist only in the environment
        # (e.g. a sink added by EDGEGW_SINKS__NEW__TYPE and missing a required field).
        depth = _depth_in(self.data, path)
        if depth < len(keys):
            for env_path, (name, _) in self.env.items():
                if env_path[: depth + 1] == keys[: depth + 1]:
                    return name
        elif not isinstance(_get(self.data, path), Mapping | list):
            # A variable below a scalar of the file (EDGEGW_SITE__LINE__X) replaced it with a mapping.
            for env_path, (name, _) in self.env.items():
                if len(env_path) > len(keys) and env_path[: len(keys)] == keys:
                    return name
        return self.file

    def line(self, path: Sequence[PathElem], message: str) -> str:
        dotted = ".".join(str(p) for p in path)
        where = self.source_of(path)
        return f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}"


def _holds(value: str, rest: Sequence[PathElem]) -> bool:
    """Whether a variable's value reaches ``rest`` below its own path. A JSON mapping is deep-merged
    with the file, so a key it lacks still comes from the file; a scalar replaces all below it."""
    try:
        node: Any = json.loads(value)
    except ValueError:
        return True
    depth = _depth_in(node, rest)
    return depth == len(rest) or not isinstance(_get(node, rest[:depth]), Mapping | list)


def _get(node: Any, path: Sequence[PathElem]) -> Any:
    for elem in path:
        node = node[elem]
    return node


def _depth_in(node: Any, path: Sequence[PathElem]) -> int:
    """How many leading elements of ``path`` exist in the nested mappings/lists ``node``."""
    for depth, elem in enumerate(path):
        in_list = isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node)
        if not (in_list or (isinstance(node, Mapping) and elem in node)):
            return depth
        node = node[elem]
    return len(path)


def format_errors(errors: Iterable[ErrorDetails], root: type[BaseModel], origin: Origin) -> list[str]:
    """One line per error (duplicates, e.g. from the members of a plain union, printed once)."""
    lines: list[str] = []
    for err in errors:
        path, owner, is_key = user_path(root, err["loc"])
        line = origin.line(path, _message(err, owner, path, is_key))
        if line not in lines:
            lines.append(line)
    return lines


def _message(err: ErrorDetails, owner: ConfigClass | None, path: list[PathElem], is_key: bool) -> str:
    kind, msg = err["type"], err["msg"]
    if is_key:
        ctx = err.get("ctx") or {}
        if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
            return _NAME_HINT
        return f"invalid name: {msg}"
    if kind in _UNKNOWN_KEY:
        return _unknown_key(owner, path[-1] if path else "")
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "assertion_error":
        msg = msg.removeprefix("Assertion failed, ")
    return msg


def _unknown_key(owner: ConfigClass | None, key: PathElem) -> str:
    if owner is None:
        return "unknown key"
    known = sorted(set(_fields(owner)) | _aliases(owner))
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of: {', '.join(known)}"


def _aliases(model: ConfigClass) -> set[str]:
    return {f.alias for f in _fields(model).values() if f.alias}


# --- mapping pydantic's loc onto the user's path -----------------------------------------------------


def user_path(root: type[BaseModel], loc: tuple[PathElem, ...]) -> tuple[list[PathElem], ConfigClass | None, bool]:
    """Walk the annotations along ``loc``: the user's path, the model owning its last key, and whether the
    error is about a mapping key itself (a bad name) rather than its value."""
    path: list[PathElem] = []
    owner: ConfigClass | None = None
    tp: Any = root
    disc: Any = None
    is_key = False
    for elem in loc:
        if elem == "[key]":
            is_key = True
            continue
        if tp is not None:
            tp, disc = _unwrap(tp, disc)
            members = _union_members(tp)
            if disc is not None or len(members) > 1:
                # Pydantic inserted a label here (the tag, or the member's name): not a user key.
                tp = _pick_member(members, disc, elem) if members else tp
                disc = None
                continue
        path.append(elem)
        owner = tp if _is_model(tp) else None
        tp, disc = _child(tp, elem)
    return path, owner, is_key


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, BaseModel) or is_pydantic_dataclass(tp))


def _fields(model: ConfigClass) -> Mapping[str, FieldInfo]:
    """A model's fields by name, whichever kind of config model it is."""
    if issubclass(model, BaseModel):
        return model.model_fields
    fields: dict[str, FieldInfo] = model.__pydantic_fields__
    return fields


def _union_members(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return []


def _unwrap(tp: Any, disc: Any) -> tuple[Any, Any]:
    """Strip ``Annotated`` and ``Optional``, keeping any discriminator found in the metadata."""
    while True:
        if get_origin(tp) is Annotated:
            tp, *meta = get_args(tp)
            for m in meta:
                if isinstance(m, Discriminator):
                    disc = m
                elif isinstance(m, FieldInfo) and m.discriminator is not None:
                    disc = m.discriminator
            continue
        members = _union_members(tp)
        if len(members) == 1:
            tp = members[0]
            continue
        return tp, disc


def _pick_member(members: list[Any], disc: Any, label: PathElem) -> Any:
    for member in members:
        if get_origin(member) is Annotated and any(
            isinstance(m, Tag) and m.tag == label for m in get_args(member)[1:]
        ):
            return member
        inner, _ = _unwrap(member, None)
        if not _is_model(inner):
            continue
        if isinstance(disc, str):
            field = _fields(inner).get(disc)
            if field is not None and get_origin(field.annotation) is Literal and label in get_args(field.annotation):
                return member
        if inner.__name__ == label:
            return member
    return None


def _child(tp: Any, elem: PathElem) -> tuple[Any, Any]:
    """The annotation (and field discriminator) one level below ``tp`` at key/index ``elem``."""
    if _is_model(tp):
        for name, field in _fields(tp).items():
            if elem in (name, field.alias):
                return field.annotation, field.discriminator
        return None, None
    origin = get_origin(tp)
    args = get_args(tp)
    if not isinstance(origin, type) or not args:
        return None, None
    if issubclass(origin, Mapping):
        return args[-1], None
    if issubclass(origin, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], None
        return (args[elem], None) if isinstance(elem, int) and 0 <= elem < len(args) else (None, None)
    if issubclass(origin, Sequence | AbstractSet):
        return args[0], None
    return None, None
