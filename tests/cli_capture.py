"""Run ``changekit`` in-process and capture what it prints, for the CLI tests."""

from __future__ import annotations

import pytest

from changekit.cli import main


def run_main(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """``changekit ARGS`` (arguments turned into strings): exit code, stdout, stderr."""
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err
