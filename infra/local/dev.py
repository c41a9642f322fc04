"""`make dev`: the whole system on this machine, in the foreground until Ctrl-C.

:class:`~infra.local.dev_stack.DevStack` starts each piece, waits until it is healthy, and stops
them all in reverse order; this module is the command around it (``python -m infra.local.dev``):
it starts the stack, prints one URL that opens the monitor on a demo job, and stops the stack on
Ctrl-C or SIGTERM. The pieces live in modules of their own:

- :mod:`infra.local.dev_settings`: the settings (every port is one) and the port checks;
- :mod:`infra.local.dev_stores`: PostgreSQL with the seed, and S3 with the demo dataset;
- :mod:`infra.local.dev_servers`: the cluster simulator, the functions and the monitor page;
- :mod:`infra.local.dev_scheduler`: the stand-in for Cloud Scheduler;
- :mod:`infra.local.dev_monitor_link`: the printed URL and its access token;
- :mod:`infra.local.dev_stack`: all of them in order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from infra.local.dev_monitor_link import mint_access_token, print_welcome
from infra.local.dev_settings import REPO, DevSettings, PortInUse
from infra.local.dev_stack import DevStack
from infra.local.dev_stores import DBNAME, DEMO_USER_EMAIL, DEMO_USER_ID
from shared.config import load
from shared.errors import ConfigurationError

__all__ = [
    "DEMO_USER_EMAIL",
    "DEMO_USER_ID",
    "DevSettings",
    "DevStack",
    "PortInUse",
    "main",
    "mint_access_token",
]


@contextlib.contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, for as long as the block runs."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve() -> int:
    """Run the stack in this process until SIGTERM or SIGINT, or until our parent goes away."""
    try:
        settings = load(DevSettings)
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    parent = os.getppid()
    print("Starting the LoRA runner locally...", flush=True)
    stack = DevStack(settings)
    with _stop_requested() as stop:
        try:
            stack.start()
        except (RuntimeError, OSError) as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        try:
            first, *others = stack.demo_job_ids
            print_welcome(
                sys.stdout,
                logs_dir=stack.logs_dir,
                psql_url=stack.postgres.url(DBNAME),
                url=stack.monitor_url(first),
                other_job_ids=others,
            )
            while not stop.wait(0.5) and os.getppid() == parent:
                crashed = stack.exited()
                if crashed is not None:
                    print(
                        f"\nerror: {crashed.name} stopped unexpectedly; its log is in "
                        f"{stack.logs_dir} (or above, for the cluster simulator)",
                        file=sys.stderr,
                    )
                    return 1
        finally:
            print("\nStopping...", flush=True)
            stack.stop()
            print("Stopped.", flush=True)
    return 0


def supervise() -> int:
    """Run :func:`serve` in a session of its own and pass Ctrl-C on to it as one SIGTERM.

    A terminal sends Ctrl-C's SIGINT to every process of its foreground group: the servers would
    each shut down on their own while the stack stops them too, which leaves tracebacks and, at
    worst, orphaned workers. Out of that group, only the stack stops them, in order.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "infra.local.dev", "--serve"], cwd=REPO, start_new_session=True
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.dev",
        description="Run the LoRA runner locally: settings come from the environment "
        "(PG_PORT, DEV_*_PORT, DEV_SCHEDULER_INTERVAL_SECONDS, DEV_STEPS_PER_SECOND, ...).",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run the stack in this process, in the caller's process group",
    )
    args = parser.parse_args(argv)
    return serve() if args.serve else supervise()


if __name__ == "__main__":
    sys.exit(main())
