"""moto's S3 server as the local stack's object store, with both dataset buckets and a demo dataset.

In-process (tests)::

    with LocalS3Server() as server:
        client = server.client()
        paths = seed_demo_datasets(client)

As its own process (`make dev`)::

    python -m infra.local.s3 --port 9000 --seed

moto accepts any credentials; the local ones below only have to match what the runner is given.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Any, Final

from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from shared.storage import ARTIFACTS_BUCKET, KNOWN_BUCKETS, create_s3_client

HOST: Final = "127.0.0.1"
LOCAL_REGION: Final = "us-east-1"
LOCAL_ACCESS_KEY_ID: Final = "lora-local"
LOCAL_SECRET_ACCESS_KEY: Final = "lora-local-secret"  # noqa: S105  (moto checks no credentials)

DEMO_PAIR_COUNT: Final = 200
# Different paths per bucket, so a URL signed for the wrong bucket cannot find the file.
DEMO_DATASET_PATHS: Final = {
    "lora-datasets": "demo/lora-demo-200.jsonl",
    "training-files": "imports/lora-demo-200.jsonl",
}


class LocalS3Server:
    """moto's S3 API served over HTTP on 127.0.0.1, from a background thread of this process.

    moto's own ThreadedMotoServer binds inside its thread and waits forever when the port is
    taken; binding here first turns that into an immediate OSError.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the S3 server is not running; call start() first")
        return f"http://{HOST}:{self._server.port}"

    def start(self) -> str:
        """Start serving and return the endpoint URL (`port=0` picks a free port)."""
        with socket.create_server((HOST, self._port)) as listener:
            # werkzeug serves on a duplicate of the descriptor, so ours can close right away.
            self._server = make_server(
                HOST,
                self._port,
                DomainDispatcherApplication(create_backend_app),
                threaded=True,
                request_handler=MotoRequestHandler,
                fd=listener.fileno(),
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-s3", daemon=True
        )
        self._thread.start()
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        self._server = self._thread = None

    def client(self, *, max_attempts: int = 1) -> Any:
        """A boto3 S3 client for this server with the local credentials.

        One attempt by default: nothing here is worth retrying, and a test of "storage down"
        should fail at once.
        """
        return create_s3_client(
            endpoint_url=self.endpoint_url,
            region=LOCAL_REGION,
            access_key_id=LOCAL_ACCESS_KEY_ID,
            secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            max_attempts=max_attempts,
        )

    def __enter__(self) -> LocalS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def create_buckets(client: Any) -> None:
    """Create every bucket the runner knows (the dataset buckets and the artifacts bucket);
    buckets that already exist are kept as they are."""
    for bucket in (*KNOWN_BUCKETS, ARTIFACTS_BUCKET):
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise


def demo_dataset_jsonl(pairs: int = DEMO_PAIR_COUNT) -> bytes:
    """A small instruction-tuning dataset, one JSON object per line, the same on every call.

    The answers are computed, not canned, so the file is correct data a LoRA demo can train on.
    """
    words = ["adapter", "gradient", "tensor", "epoch", "optimizer", "dataset", "lora", "rank"]
    lines = []
    for i in range(pairs):
        kind = i % 4
        if kind == 0:
            celsius = (i * 7) % 120 - 20
            instruction = f"Convert {celsius} °C to Fahrenheit."
            response = f"{celsius} °C is {celsius * 9 / 5 + 32:.1f} °F."
        elif kind == 1:
            a, b = 3 + i % 17, 11 + i % 29
            instruction = f"What is {a} multiplied by {b}?"
            response = f"{a} times {b} is {a * b}."
        elif kind == 2:
            word = words[i % len(words)]
            instruction = f"Spell the word '{word}' backwards."
            response = f"'{word}' spelled backwards is '{word[::-1]}'."
        else:
            numbers = [(i * k * 37) % 100 for k in range(1, 6)]
            instruction = f"Sort these numbers in ascending order: {numbers}."
            response = f"In ascending order: {sorted(numbers)}."
        record = {"instruction": instruction, "response": response}
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def seed_demo_datasets(client: Any) -> dict[str, str]:
    """Create both buckets and upload the demo dataset into each; return each bucket's path."""
    create_buckets(client)
    body = demo_dataset_jsonl()
    for bucket, path in DEMO_DATASET_PATHS.items():
        client.put_object(Bucket=bucket, Key=path, Body=body, ContentType="application/x-ndjson")
    return dict(DEMO_DATASET_PATHS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.s3", description="Serve moto's S3 API on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument(
        "--seed", action="store_true", help="create both buckets and upload the demo dataset"
    )
    args = parser.parse_args(argv)

    # Taken by sigwait below, never by a handler: a handler that sets an Event the main thread
    # waits on can deadlock on the Event's lock. Blocked before the server's threads start, so
    # they inherit the mask and the main thread alone receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    with LocalS3Server(args.port) as server:
        # The first line is the contract with whoever started us: it carries the endpoint.
        print(f"S3 endpoint {server.endpoint_url}", flush=True)
        if args.seed:
            for bucket, path in seed_demo_datasets(server.client()).items():
                print(f"seeded s3://{bucket}/{path}", flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
