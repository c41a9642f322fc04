"""`make dev`: the whole system on this machine, in the foreground until Ctrl-C.

``python -m infra.local.dev`` starts the local stack, prints one URL that opens the monitor on a
demo job, and stops the stack on Ctrl-C or SIGTERM, whenever it comes (also while starting). The
pieces live in modules of their own:

- :mod:`infra.local.dev_settings`: the settings (every port is one) and the port checks;
- :mod:`infra.local.dev_stores`: PostgreSQL with the seed, and S3 with the demo dataset;
- :mod:`infra.local.dev_servers`: the cluster simulator, the functions and the monitor page;
- :mod:`infra.local.dev_scheduler`: the stand-in for Cloud Scheduler;
- :mod:`infra.local.dev_stack`: :class:`DevStack`, all of them started in order and stopped in
  reverse;
- :mod:`infra.local.dev_monitor_link`: the printed URL and its access token;
- :mod:`infra.local.dev_serve`: the stack run until a stop is asked for;
- :mod:`infra.local.dev_signals`: Ctrl-C and SIGTERM, received without a lock;
- this module: the command, which runs the stack in a child process (see :func:`supervise`).

This module imports only what the supervisor needs, so that it takes Ctrl-C within milliseconds
of starting; the stack's modules take a second to import. The names it has always offered
(``DevStack``, ``DevSettings``, ...) are imported from their modules on first use.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.dev_signals import StopSignals, blocked

if TYPE_CHECKING:
    from infra.local.dev_monitor_link import mint_access_token
    from infra.local.dev_settings import DevSettings, PortInUse
    from infra.local.dev_stack import DevStack
    from infra.local.dev_stores import DEMO_USER_EMAIL, DEMO_USER_ID

__all__ = [
    "DEMO_USER_EMAIL",
    "DEMO_USER_ID",
    "DevSettings",
    "DevStack",
    "PortInUse",
    "main",
    "mint_access_token",
]

REPO = Path(__file__).resolve().parents[2]
_MODULE_OF = {
    "DEMO_USER_EMAIL": "infra.local.dev_stores",
    "DEMO_USER_ID": "infra.local.dev_stores",
    "DevSettings": "infra.local.dev_settings",
    "DevStack": "infra.local.dev_stack",
    "PortInUse": "infra.local.dev_settings",
    "mint_access_token": "infra.local.dev_monitor_link",
}
# How soon the supervisor notices that the stack's process has exited.
_SUPERVISOR_POLL_SECONDS = 0.1


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def supervise() -> int:
    """Run the stack in a child process of its own session; pass Ctrl-C on to it as one SIGTERM.

    A terminal sends Ctrl-C's SIGINT to every process of its foreground group: the servers would
    each shut down on their own while the stack stops them too, which leaves tracebacks and, at
    worst, orphaned workers. Out of that group, only the stack stops them, in order.

    The child starts with both signals blocked, so a SIGTERM that reaches it before it can note
    one waits for it instead of killing it half-way. Another Ctrl-C is not passed on: the child
    is stopping everything already.
    """
    with StopSignals() as signals:
        print("Starting the LoRA runner locally...", flush=True)
        with blocked():
            child = subprocess.Popen(
                [sys.executable, "-m", "infra.local.dev", "--serve"],
                cwd=REPO,
                start_new_session=True,
            )
        while not signals.wait(_SUPERVISOR_POLL_SECONDS):
            if child.poll() is not None:
                return child.returncode
        child.send_signal(signal.SIGTERM)
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
    if args.serve:
        # Imported here, not above: see the module's docstring.
        from infra.local.dev_serve import serve

        return serve()
    return supervise()


if __name__ == "__main__":
    sys.exit(main())
