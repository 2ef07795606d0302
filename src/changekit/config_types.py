"""Small validators for config values: each returns the value (normalised) or raises a one-line ConfigError.

A validator is called as ``validator(key, value)``; its error names the dotted ``key``, the value as the user
wrote it in YAML, and what is expected (``data.batch_size: -4 must be >= 1``), and carries the key as
``exc.key`` so that the loader can add the file or ``--set`` the value came from. The table that applies them
to every config key is :data:`changekit.config_schema.SCHEMA`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, suggest

Validator = Callable[[str, Any], Any]


def config_error(key: str, message: str) -> ConfigError:
    """A :class:`ConfigError` whose message starts with ``key`` and that remembers the key (``exc.key``)."""
    exc = ConfigError(f"{key}: {message}")
    exc.key = key  # type: ignore[attr-defined]
    return exc


def show(value: Any) -> str:
    """A value as the user wrote it in YAML: ``'abc'``, ``-4``, ``null``, ``true``, ``[1, 2]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    return repr(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Number:
    """An int or float (``integer=True``: an int, or a float with an integral value) within bounds.

    ``special`` values are accepted besides the range (e.g. ``-1`` = no limit); ``optional`` accepts null.
    """

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    special: tuple[Any, ...] = ()

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        what = "an integer" if self.integer else "a number"
        null = " or null" if self.optional else ""
        if self.integer and isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not (is_int(value) if self.integer else _is_number(value)):
            raise config_error(key, f"{show(value)} is not {what}{null}")
        if isinstance(value, float) and not math.isfinite(value):
            raise config_error(key, f"{show(value)} is not a finite number")
        if value in self.special:
            return value
        bad_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        bad_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if bad_low or bad_high:
            also = "".join(f" or {show(s)}" for s in self.special)
            raise config_error(key, f"{show(value)} must be "
                                    f"{_bounds_text(self.low, self.high, self.low_open, self.high_open)}{also}")
        return value


def Int(low: int | None = None, high: int | None = None, *, optional: bool = False,  # noqa: N802 - a type
        special: tuple[int, ...] = ()) -> Number:
    """An integer in ``low..high``."""
    return Number(integer=True, low=low, high=high, optional=optional, special=special)


@dataclass(frozen=True)
class Bool:
    """``true`` or ``false`` (plus any ``special`` values, e.g. Lightning's ``"warn"``)."""

    special: tuple[Any, ...] = ()

    def __call__(self, key: str, value: Any) -> Any:
        if isinstance(value, bool) or value in self.special:
            return value
        extra = "".join(f" or {show(s)}" for s in self.special)
        raise config_error(key, f"{show(value)} is not true or false{extra}")


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (strings compare case-insensitively when ``fold_case``); ``optional`` accepts null."""

    choices: tuple[Any, ...]
    optional: bool = False
    fold_case: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        probe = value.lower() if self.fold_case and isinstance(value, str) else value
        if any(type(c) is type(probe) and c == probe for c in self.choices):  # 1 is not True, "16" is not 16
            return value
        names = ", ".join(dict.fromkeys(c if isinstance(c, str) else show(c) for c in self.choices))
        hint = suggest(str(value), [str(c) for c in self.choices]) if isinstance(value, str) else ""
        raise config_error(key, f"{show(value)} is not one of {names}{' or null' if self.optional else ''}{hint}")


@dataclass(frozen=True)
class Text:
    """A non-empty string (``path=True`` also accepts ``pathlib.Path``); ``optional`` accepts null."""

    optional: bool = False
    path: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if self.path and isinstance(value, os.PathLike):
            value = os.fspath(value)
        what = "a path" if self.path else "a string"
        if not isinstance(value, str):
            raise config_error(key, f"{show(value)} is not {what}{' or null' if self.optional else ''}")
        if not value.strip():
            raise config_error(key, f"{show(value)} is empty; expected {what}{' or null' if self.optional else ''}")
        return value


@dataclass(frozen=True)
class ListOf:
    """A list whose items all pass ``item`` (checked as ``key[i]``), of ``min_len``..``max_len`` items."""

    item: Validator
    what: str
    min_len: int = 0
    max_len: int | None = None

    def __call__(self, key: str, value: Any) -> Any:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise config_error(key, f"{show(value)} is not {self.what}")
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            count = (str(self.min_len) if self.max_len == self.min_len
                     else f"{self.min_len}..{self.max_len}" if self.max_len is not None else f"at least {self.min_len}")
            raise config_error(key, f"{show(value)} has {len(value)} item(s); expected {count}")
        return [self.item(f"{key}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class MappingOf:
    """A mapping of non-empty string keys to values that pass ``item`` (checked as ``key.name``)."""

    item: Validator
    what: str
    optional: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, Mapping):
            raise config_error(key, f"{show(value)} is not {self.what}{' or null' if self.optional else ''}")
        for name in value:
            if not isinstance(name, str) or not name:
                raise config_error(key, f"key {show(name)} is not a non-empty string ({self.what})")
        return {name: self.item(f"{key}.{name}", v) for name, v in value.items()}


def inferred(default: Any) -> Validator | None:
    """A validator for a key that has a default but no schema entry yet: the default's type (or ``None``)."""
    if isinstance(default, bool):
        return Bool()
    if isinstance(default, int):
        return Int()
    if isinstance(default, float):
        return Number()
    if isinstance(default, str):
        return Text()
    return None
