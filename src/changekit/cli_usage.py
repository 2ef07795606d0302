"""How the command line answers a slip: usage errors, bare command groups and ``--set`` pairs.

Used by :func:`changekit.cli.main`. A usage error prints the usage line and one ``error:`` line on stderr (exit
code 2); a command group called without a command prints its help, the usage line and ``error: missing command``
on stderr (exit code 2); a user error (:class:`~changekit.errors.ChangekitError`) prints one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Any

import typer


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker wrapped it with a traceback."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else exc.__class__.__name__
    if len(lines) > 1 and ": " in last and last.split(": ", 1)[0].rsplit(".", 1)[-1].endswith("Error"):
        last = last.split(": ", 1)[1]
    return last


_SET_PAIR = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")


def expand_set_pairs(args: list[str]) -> list[str]:
    """``--set a=1 b=2`` -> ``--set a=1 --set b=2``: several ``key=value`` pairs may follow one ``--set``.

    Typer options take one value each, so the pairs after the first are given their own ``--set``; the run of
    pairs ends at the first token that is not ``key=value`` (an option or a positional argument such as a
    config file). Repeating ``--set`` keeps working.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + args[i:]
        out.append(tok)
        i += 1
        if tok == "--set" or tok.startswith("--set="):
            if tok == "--set" and i < len(args):
                out.append(args[i])  # the first value, whatever it looks like (parse_override judges it)
                i += 1
            while i < len(args) and _SET_PAIR.match(args[i]):
                out += ["--set", args[i]]
                i += 1
    return out


def click_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """``(usage errors, other click errors)`` of typer's bundled click copy (typer >= 0.22) and of click itself.

    Typer raises its own vendored click classes (``typer._click.exceptions``), which are not
    ``click.exceptions.UsageError``; they are found through the public ``typer.BadParameter``'s bases so that
    this keeps working whichever copy a typer version uses.
    """
    usage: set[type[BaseException]] = {c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"}
    other: set[type[BaseException]] = {c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"}
    try:
        import click

        usage.add(click.exceptions.UsageError)
        other.add(click.exceptions.ClickException)
    except ImportError:  # pragma: no cover - click is a typer dependency up to 0.21
        pass
    return tuple(usage), tuple(other)


_PYDANTIC_PROBLEMS = {"int_parsing": "is not an integer", "int_from_float": "is not an integer",
                      "float_parsing": "is not a number", "bool_parsing": "is not true or false"}


def usage_message(exc: BaseException) -> str:
    """Click's message of a usage error, with the value found where typer's type check hid it."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    cause = exc.__cause__
    errors = cause.errors() if cause is not None and hasattr(cause, "errors") else None
    param = getattr(exc, "param", None)
    if errors and param is not None:
        first = errors[0]
        hint = "'" + "' / '".join(getattr(param, "opts", None) or [param.name]) + "'"
        problem = _PYDANTIC_PROBLEMS.get(first.get("type"), str(first.get("msg", "")).lower())
        message = f"Invalid value for {hint}: {first.get('input')!r} {problem}"
    return " ".join(message.split())


def context_for(app: typer.Typer, args: list[str]) -> tuple[Any, bool]:
    """The click context of the (sub)command that ``args`` name, and whether every argument was a group name.

    Used for the usage line of errors raised before click attached a context, and to answer a bare command
    group (``changekit``, ``changekit data``) before typer prints its help to stdout.
    """
    try:
        cmd = typer.main.get_command(app)
        ctx = cmd.make_context("changekit", [], resilient_parsing=True)
        only_groups = True
        for tok in args:
            sub = cmd.get_command(ctx, tok) if hasattr(cmd, "get_command") else None
            if sub is None:
                only_groups = False
                if not tok.startswith("-"):
                    break
                continue
            ctx = sub.make_context(tok, [], parent=ctx, resilient_parsing=True)
            cmd = sub
        return ctx, only_groups and hasattr(cmd, "list_commands")
    except Exception:  # noqa: BLE001 - only a nicer usage line is lost
        return None, False


def show_missing_command(ctx: Any) -> int:
    """A command group called without a command: its help, the usage line and one ``error:`` line, on stderr."""
    with contextlib.redirect_stdout(sys.stderr):  # typer's rich help prints itself (to stdout) and returns ""
        text = ctx.get_help()
    if text:
        typer.echo(text, err=True)
    typer.echo(ctx.get_usage(), err=True)
    typer.echo(f"error: missing command (one of: {', '.join(ctx.command.list_commands(ctx))})", err=True)
    return 2


def show_usage_error(exc: BaseException, app: typer.Typer, args: list[str]) -> int:
    """Print the usage line and one ``error:`` line."""
    ctx = getattr(exc, "ctx", None) or context_for(app, args)[0]
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None and hasattr(ctx.command, "list_commands"):
        return show_missing_command(ctx)
    hint = ""
    if ctx is not None:
        typer.echo(ctx.get_usage(), err=True)
        hint = f" (see '{ctx.command_path} --help')"
    typer.echo(f"error: {usage_message(exc)}{hint}", err=True)
    return 2
