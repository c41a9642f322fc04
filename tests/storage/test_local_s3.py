"""The local stack's S3 server: moto on 127.0.0.1 with both buckets and a demo dataset."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local.s3 import (
    DEMO_PAIR_COUNT,
    LOCAL_REGION,
    LocalS3Server,
    demo_dataset_jsonl,
    seed_demo_datasets,
)
from shared.storage import KNOWN_BUCKETS, S3DatasetStorage, create_s3_client

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_dataset_is_200_instruction_response_pairs() -> None:
    """Every line of the demo dataset is a JSON object with a non-empty instruction and response."""
    lines = demo_dataset_jsonl().decode().splitlines()

    assert len(lines) == DEMO_PAIR_COUNT == 200
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"instruction", "response"}
        assert record["instruction"]
        assert record["response"]


def test_demo_dataset_is_the_same_on_every_call() -> None:
    """The demo file is deterministic, so every run of the stack trains on the same data."""
    assert demo_dataset_jsonl() == demo_dataset_jsonl()


def test_seeding_puts_the_demo_dataset_in_both_buckets(s3_client: Any) -> None:
    """After seeding, each known bucket serves the demo dataset through a signed URL."""
    paths = seed_demo_datasets(s3_client)

    assert set(paths) == set(KNOWN_BUCKETS)
    storage = S3DatasetStorage(s3_client)
    for bucket, path in paths.items():
        assert httpx.get(storage.signed_url(bucket, path)).content == demo_dataset_jsonl()


def test_seeding_twice_is_harmless(s3_client: Any) -> None:
    """Seeding an already seeded store keeps its buckets and rewrites the same files."""
    assert seed_demo_datasets(s3_client) == seed_demo_datasets(s3_client)


def test_a_busy_port_fails_at_once() -> None:
    """Starting on a port that is taken raises OSError instead of hanging."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = LocalS3Server(taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            server.start()


def test_runs_as_its_own_process_and_stops_on_sigterm() -> None:
    """`python -m infra.local.s3 --seed` prints its endpoint, serves the demo, exits 0 on TERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "infra.local.s3", "--port", "0", "--seed"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline().split()
            assert first[:2] == ["S3", "endpoint"]
            endpoint = first[2]
            seeded = [process.stdout.readline().strip() for _ in KNOWN_BUCKETS]
            assert seeded == [
                "seeded s3://lora-datasets/demo/lora-demo-200.jsonl",
                "seeded s3://training-files/imports/lora-demo-200.jsonl",
            ]

            client = create_s3_client(
                endpoint_url=endpoint,
                region=LOCAL_REGION,
                access_key_id="key",
                secret_access_key="secret",
                max_attempts=1,
            )
            url = S3DatasetStorage(client).signed_url(None, "demo/lora-demo-200.jsonl")
            assert httpx.get(url).content == demo_dataset_jsonl()
        finally:
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=10)
    assert returncode == 0
