"""Closed config schemas: the keys a config may hold, and the refusal that names an unknown one.

A Hydra config is composed from YAML files and the command line, and ``+key=value`` adds a key no file
defines (so does a user's own experiment file). A key nothing reads is worse than an error: the run
goes on with the default and the stored config claims a setting that was never used. So every key
must be known to a *schema*: a tree of ``{key: sub-schema}`` whose leaves are :data:`LEAF` (a value)
or :data:`OPEN` (a mapping whose keys are data, such as speaker names or keyword options), built from
the dataclass a section is validated into (:func:`dataclass_schema`) and from the CLI's own YAML file
(:func:`yaml_schema`). A sub-schema may also be a function of the section's content (a codec section's
fields depend on its ``name``). :func:`unknown_keys` walks a config against a schema and
:func:`unknown_key_message` names each unknown key with the nearest known one, so a misspelling
reads as one (``trainer.max_step`` → ``trainer.max_steps``).

The Hydra entry point of every CLI checks the whole composed config this way
(:mod:`soundstorm.cli._hydra`); :func:`soundstorm.builders.strict` checks each section the same way
for the Python API.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import typing
from typing import Any, Callable, Union

LEAF = None  # a value: nothing below it to check


class _Open:
    """A mapping whose keys are data, not settings (speaker names, keyword options of a plug-in)."""

    def __repr__(self) -> str:
        return "OPEN"


OPEN = _Open()
Schema = Union[dict, _Open, None, Callable[[Any], Any]]


def _strip_optional(tp):
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def type_schema(tp) -> Schema:
    """The schema of a field typed ``tp``: a nested dataclass is walked, a mapping (or ``Any``) is
    :data:`OPEN`, anything else is a :data:`LEAF`."""
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        return dataclass_schema(tp)
    origin = typing.get_origin(tp) or tp
    if tp is Any or origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return OPEN
    return LEAF


def dataclass_schema(cls, **extra: Schema) -> dict:
    """``{field: schema}`` of the dataclass ``cls`` (nested dataclasses included), plus ``extra`` keys
    (selectors such as ``name`` that a builder takes off before validating)."""
    hints = typing.get_type_hints(cls)
    return {**{f.name: type_schema(hints.get(f.name, Any)) for f in dataclasses.fields(cls)}, **extra}


def yaml_schema(data) -> Schema:
    """The schema a plain YAML mapping describes: its own keys, recursively (an empty mapping: OPEN)."""
    if isinstance(data, dict):
        return {str(k): yaml_schema(v) for k, v in data.items()} if data else OPEN
    return LEAF


def union(*schemas: Schema) -> Schema:
    """A schema that knows every key any of ``schemas`` knows (OPEN and functions of the content win)."""
    known = [s for s in schemas if s is not LEAF]
    if not known:
        return LEAF
    for s in known:
        if s is OPEN or callable(s):
            return s
    merged: dict = {}
    for s in known:
        for key, sub in s.items():
            merged[key] = union(merged[key], sub) if key in merged else sub
    return merged


def nearest(key: str, known) -> str | None:
    """The known key most like ``key`` (difflib's ratio; None when nothing is known)."""
    known = sorted(map(str, known))
    if not known:
        return None
    return max(known, key=lambda k: (difflib.SequenceMatcher(None, key.lower(), k.lower()).ratio(), -len(k)))


def unknown_keys(data, schema: Schema, prefix: str = "") -> list[tuple[str, str | None, list[str]]]:
    """``(dotted key, nearest known key (dotted), the known keys at that level)`` for every key of the
    plain mapping ``data`` that ``schema`` does not know (in the order of ``data``)."""
    if callable(schema):
        schema = schema(data)
    if not isinstance(data, dict) or not isinstance(schema, dict):
        return []
    found = []
    for key, value in data.items():
        key = str(key)
        if key not in schema:
            close = nearest(key, schema)
            found.append((prefix + key, None if close is None else prefix + close, sorted(schema)))
        else:
            found.extend(unknown_keys(value, schema[key], f"{prefix}{key}."))
    return found


def unknown_key_message(found: list[tuple[str, str | None, list[str]]], owner: str) -> str:
    """One sentence naming the first unknown key, its nearest known key and what is known there."""
    key, close, known = found[0]
    shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
    text = f"unknown config key {key!r}: {owner} has no such setting"
    if close is not None:
        text += f" (the nearest known key is {close!r}; known here: {shown})"
    if len(found) > 1:
        text += f"; also unknown: {', '.join(repr(k) for k, _, _ in found[1:6])}"
    return text + "; check the spelling (a key added with + must be one the config knows)"


def check_keys(data, schema: Schema, owner: str) -> None:
    """Refuse (``ValueError``) a plain mapping holding a key ``schema`` does not know."""
    found = unknown_keys(data, schema)
    if found:
        raise ValueError(unknown_key_message(found, owner))
