"""`make dev`: the local system, started in the foreground until Ctrl-C.

Starts a PostgreSQL with the Supabase bootstrap, the migrations and the seed in a fresh database,
prints how to connect, and stops everything it started on Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from infra.local import postgres

DEV_ROOT = Path(tempfile.gettempdir()) / "lora-runner-dev"
DBNAME = "lora_dev"


def main() -> int:
    port = int(os.environ.get("PG_PORT", "54329"))
    server = postgres.LocalPostgres(data_dir=DEV_ROOT / "pgdata", port=port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # A server left behind by a killed earlier run would hold the port: stop it first.
    server.stop()
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        postgres.drop_database(server.conninfo(), DBNAME)
        postgres.create_database(server.conninfo(), DBNAME)
        postgres.apply_schema(server.conninfo(DBNAME), seed=True)
        print(
            f"\nPostgreSQL is ready on 127.0.0.1:{port} with the migrations and the seed.\n"
            f"  psql:         psql '{server.url(DBNAME)}'\n"
            f"  DATABASE_URL: {server.url(DBNAME, postgres.APP_USER)}\n"
            "\nPress Ctrl-C to stop.",
            flush=True,
        )
        stop.wait()
    finally:
        print("\nStopping PostgreSQL...", flush=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
