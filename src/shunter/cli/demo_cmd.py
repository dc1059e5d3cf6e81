"""``shunter demo``: the product's scenarios, live, on a throwaway embedded server."""

from __future__ import annotations

import click

from .common import console, redis_option

__all__ = ["demo"]


@click.command()
@click.option("--speed", type=click.FloatRange(0.1, 100), default=1.0, show_default=True,
              help="Run this many times faster than the default compressed timing.")
@redis_option
def demo(speed: float, redis_url: str | None) -> int:
    """Run scenarios 1-3 of the product brief (plan pipeline with live progress, webhooks
    with retries and dead letters, staggered engagement jobs limited to 3 per post per
    hour) on an owned embedded server
    that stops when the demo ends. Takes about 15 seconds.

    With --redis URL it runs on that server instead, on fresh queues it deletes afterwards.
    """
    from .demo import run_demo  # imports rich's live machinery only when needed

    return run_demo(console, speed=speed, redis_url=redis_url)
