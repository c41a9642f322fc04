"""`make dev`'s stack, run in this process until a stop is asked for (``--serve``).

A stop is SIGINT or SIGTERM (see :mod:`infra.local.dev_signals`), or our parent going away. One
that comes while the stack starts is honoured between two pieces; one that comes while it
stops changes nothing, as everything is being stopped anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from infra.local.dev_monitor_link import print_welcome
from infra.local.dev_settings import DevSettings
from infra.local.dev_signals import StopSignals
from infra.local.dev_stack import DevStack, StartInterrupted
from infra.local.dev_stores import DBNAME
from shared.config import load
from shared.errors import ConfigurationError

# How often a running stack looks at its child servers, and at a stop request.
_WATCH_SECONDS = 0.5


def serve() -> int:
    """Run the stack in this process until SIGTERM or SIGINT, or until our parent goes away."""
    with StopSignals() as signals:
        try:
            settings = load(DevSettings)
        except ConfigurationError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        parent = os.getppid()

        def stop_requested(timeout: float = 0) -> bool:
            return signals.wait(timeout) or os.getppid() != parent

        stack = DevStack(settings)
        try:
            stack.start(interrupted=stop_requested)
        except (RuntimeError, OSError) as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        except StartInterrupted:
            started = False
        else:
            started = True
        try:
            return _watch(stack, stop_requested) if started else 0
        finally:
            print("\nStopping...", flush=True)
            stack.stop()
            print("Stopped.", flush=True)


def _watch(stack: DevStack, stop_requested: Callable[[float], bool]) -> int:
    """Print the URL, then watch the child servers until a stop is asked for; the exit status."""
    first, *others = stack.demo_job_ids
    print_welcome(
        sys.stdout,
        logs_dir=stack.logs_dir,
        psql_url=stack.postgres.url(DBNAME),
        url=stack.monitor_url(first),
        other_job_ids=others,
    )
    while not stop_requested(_WATCH_SECONDS):
        crashed = stack.exited()
        if crashed is not None:
            print(
                f"\nerror: {crashed.name} stopped unexpectedly; its log is in "
                f"{stack.logs_dir} (or above, for the cluster simulator)",
                file=sys.stderr,
            )
            return 1
    return 0
