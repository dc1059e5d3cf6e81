"""The ``shunter`` command line: run workers, enqueue and inspect jobs, operate queues and
their groups, manage the embedded server, and run the demo. ``main`` is the console-script entry point.

Every command accepts ``--redis URL``; without it, ``$SHUNTER_REDIS_URL``, else the
embedded server. Failures print one line on stderr and exit with a code from
:class:`~shunter.cli.common.ExitCode` (0 ok, 1 error, 2 usage, 3 not found, 130 Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from .. import __version__
from .common import ExitCode, report_error
from .demo_cmd import demo
from .groups import groups
from .jobs import COMMANDS as JOB_COMMANDS
from .server_cmd import server
from .status import status
from .worker_cmd import worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="shunter")
def cli() -> None:
    """shunter: reliable background jobs on Redis or Valkey.

    With no --redis URL and no SHUNTER_REDIS_URL, commands use the project's embedded
    server (./.shunter, or SHUNTER_DATA_DIR), starting it if needed.

    Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 130 interrupted.
    """


for command in (*JOB_COMMANDS, groups, status, worker, server, demo):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line and exit with its status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="shunter",
                          standalone_mode=False)
    except BaseException as exc:  # every failure becomes one line and an exit code
        if isinstance(exc, SystemExit):
            raise
        sys.exit(report_error(exc))
    sys.exit(result if isinstance(result, int) else ExitCode.OK)
