"""``shunter server start|stop|status``: the embedded server of a data directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
import redis
from rich.table import Table

from .. import embedded as launcher
from .common import ExitCode, console, redis_option, resolve

__all__ = ["server"]

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The server's data directory (default: $SHUNTER_DATA_DIR, else ./.shunter).")


def _describe(url: str) -> dict[str, Any]:
    """What the server at ``url`` says about itself (INFO), for status."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        info: dict[str, Any] = client.info()
        keys = client.dbsize()
    finally:
        client.close()
    flavour = "valkey" if "valkey_version" in info else "redis"
    return {
        "server": f"{flavour} {info.get(flavour + '_version')}",
        "used_memory": info.get("used_memory_human"), "keys": keys,
        "aof": bool(info.get("aof_enabled")), "maxmemory_policy": info.get("maxmemory_policy"),
        "uptime_seconds": info.get("uptime_in_seconds"),
    }


@click.group()
def server() -> None:
    """Manage the embedded server (a Valkey/Redis shared by the project's processes)."""


@server.command()
@data_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Also listen on 127.0.0.1:PORT.")
def start(data_dir: Path | None, port: int | None) -> None:
    """Start the server as a daemon (it runs until `shunter server stop`)."""
    info = launcher.start(data_dir, port=port)
    verb = "started" if info.started else "already running:"
    console.print(f"{verb} {Path(info.binary).name or 'server'} pid {info.pid} in {info.data_dir}")
    console.print(f"url: {info.url}" + (f"  tcp: {info.tcp_url}" if info.tcp_url else ""))


@server.command()
@data_dir_option
def stop(data_dir: Path | None) -> None:
    """Stop the server of the data directory (it saves its data first)."""
    directory = launcher.data_dir(data_dir)
    running = launcher.find(directory)
    if launcher.stop(directory):
        console.print(f"stopped server pid {running.pid if running else '?'} in {directory}")
    else:
        console.print(f"no server running in {directory}")


@server.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@redis_option
def status(data_dir: Path | None, as_json: bool, redis_url: str | None) -> int:
    """Is the embedded server running, and how is it doing? With --redis, describe that
    server instead. Exits 3 when no server runs."""
    out: dict[str, Any]
    if redis_url:
        out = {"url": resolve(redis_url), **_describe(redis_url)}
    else:
        directory = launcher.data_dir(data_dir)
        info = launcher.find(directory)
        if info is None:
            if as_json:
                sys.stdout.write(orjson.dumps({"running": False, "data_dir": str(directory)}).decode()
                                 + "\n")
            else:
                console.print(f"no server running in {directory}")
            return ExitCode.NOT_FOUND
        out = {"running": True, "data_dir": str(info.data_dir), "pid": info.pid, "mode": info.mode,
               "url": info.url, "tcp_url": info.tcp_url, "binary": info.binary,
               **_describe(info.url)}
    if as_json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return ExitCode.OK
    table = Table.grid(padding=(0, 2))
    for key, value in out.items():
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)
    return ExitCode.OK
