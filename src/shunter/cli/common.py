"""What every ``shunter`` command shares: exit codes, the ``--redis`` option, durations,
JSON arguments, and turning any failure into one line on stderr."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import traceback
from collections.abc import Callable, Coroutine
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import click
import redis.exceptions
from rich.console import Console

from ..errors import InvalidInput, JobNotFound, ShunterError
from ..storage.connection import resolve_url

__all__ = [
    "ExitCode", "console", "duration", "fail", "json_value", "redis_option", "report_error",
    "resolve", "run",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: stdout; wide when it is not a terminal, so piped tables are not squeezed to 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class ExitCode(IntEnum):
    """The exit statuses of ``shunter`` (docs/cli.md lists them)."""

    #: The command did what was asked.
    OK = 0
    #: It failed: Redis unreachable, a transition refused, a worker crashed, ...
    ERROR = 1
    #: Bad usage: unknown command or option, invalid value, malformed JSON or id.
    USAGE = 2
    #: What was named does not exist: a job id, or (``server status``) a running server.
    NOT_FOUND = 3
    #: Interrupted by Ctrl-C before it finished.
    INTERRUPTED = 130


class CommandFailed(Exception):
    """Raised by commands to end with a message and an exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: ExitCode = ExitCode.ERROR) -> NoReturn:
    raise CommandFailed(message, code)


_URL: list[str] = []  # the URL the current command talks to, for error messages


def resolve(url: str | None) -> str:
    """The server URL for a command: ``--redis``, ``$SHUNTER_REDIS_URL``, else the
    embedded server (started if needed)."""
    chosen = resolve_url(url)
    _URL.append(chosen)
    return chosen


def redis_option(fn: F) -> F:
    return click.option(
        "--redis", "redis_url", metavar="URL", default=None,
        help="Redis/Valkey URL (default: $SHUNTER_REDIS_URL, else the embedded server of "
             "$SHUNTER_DATA_DIR or ./.shunter, started if needed).")(fn)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class Duration(click.ParamType[float]):
    """Seconds, or a duration such as ``500ms``, ``30s``, ``5m``, ``1h30m``, ``7d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                self.fail(f"{value!r} is not a duration (e.g. 90, 30s, 5m, 1h30m, 7d)", param, ctx)
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return seconds


duration = Duration()


class JsonValue(click.ParamType[Any]):
    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import orjson

        if not isinstance(value, str):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc})", param, ctx)


json_value = JsonValue()


def _line(message: str) -> str:
    return " ".join(str(message).split())  # one line, whatever the message held


def report_error(exc: BaseException) -> int:
    """Print one line for ``exc`` on stderr and return the exit code it maps to."""
    err = sys.stderr
    if isinstance(exc, click.exceptions.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "shunter"
        print(f"{where}: usage: {_line(exc.format_message())} (see --help)", file=err)
        return ExitCode.USAGE
    if isinstance(exc, click.ClickException):
        print(f"shunter: error: {_line(exc.format_message())}", file=err)
        return exc.exit_code
    if isinstance(exc, CommandFailed):
        print(f"shunter: {_line(str(exc))}", file=err)
        return exc.code
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        print("shunter: interrupted", file=err)
        return ExitCode.INTERRUPTED
    if isinstance(exc, JobNotFound):
        print(f"shunter: error: {_line(str(exc))}", file=err)
        return ExitCode.NOT_FOUND
    if isinstance(exc, InvalidInput):
        print(f"shunter: invalid input: {_line(str(exc))}", file=err)
        return ExitCode.USAGE
    if isinstance(exc, ShunterError):
        print(f"shunter: error: {_line(str(exc))}", file=err)
        return ExitCode.ERROR
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        where = f" at {_URL[-1]}" if _URL else ""
        print(f"shunter: error: cannot reach Redis{where}: {_line(str(exc))}", file=err)
        return ExitCode.ERROR
    if isinstance(exc, redis.exceptions.RedisError):
        print(f"shunter: error: Redis answered: {_line(str(exc))}", file=err)
        return ExitCode.ERROR
    if os.environ.get("SHUNTER_DEBUG"):
        traceback.print_exception(exc, file=err)
    print(f"shunter: unexpected error: {type(exc).__name__}: {_line(str(exc))} "
          "(SHUNTER_DEBUG=1 shows the traceback)", file=err)
    return ExitCode.ERROR
