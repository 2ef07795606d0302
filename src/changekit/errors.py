"""Typed errors for bad input.

Every error a user can cause by pointing changekit at the wrong files or writing a wrong config is a
``ChangekitError``. The CLI prints such an error as one line (``error: <message>``) and exits with code 2;
anything else is a bug and keeps its traceback. Messages name the file or key and the problem, and where
possible the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class ChangekitError(Exception):
    """Base class of all user-facing errors (one line, exit code 2 on the CLI)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class DatasetNotFoundError(ChangekitError, FileNotFoundError):
    """A data folder, list file or image is missing."""


class PairingError(ChangekitError, ValueError):
    """A file has no partner in another date's or the label folder."""


class LabelValueError(ChangekitError, ValueError):
    """A label image holds values outside the allowed set."""


class ImageReadError(ChangekitError, ValueError):
    """An image could not be decoded (corrupt, truncated or not an image)."""


class SizeMismatchError(ChangekitError, ValueError):
    """Images of one pair (or image and label) differ in size, channels or georeferencing."""


class ConfigError(ChangekitError, ValueError):
    """A config key or value is wrong."""


class CheckpointError(ChangekitError, ValueError):
    """A checkpoint is unreadable or belongs to another model."""


class UnknownModelError(ChangekitError, KeyError):
    """A model name is not in the registry."""


class OutputError(ChangekitError, ValueError):
    """An output path would overwrite an input or existing results, or cannot be written."""


class RunLockedError(ChangekitError, RuntimeError):
    """Another live process owns the run folder."""


class NonFiniteError(ChangekitError, FloatingPointError):
    """Training produced a NaN or infinite loss or weights (it stops; nothing non-finite is saved)."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
