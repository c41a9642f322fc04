"""Which bucket a dataset's file is read from."""

from __future__ import annotations

import pytest

from shared.errors import DatasetFileMissing, UnknownBucket
from shared.storage import DEFAULT_BUCKET, KNOWN_BUCKETS, resolve_bucket
from shared.storage.base import validate_path


def test_null_bucket_means_lora_datasets() -> None:
    """A dataset with no bucket recorded lives in `lora-datasets`."""
    assert resolve_bucket(None) == DEFAULT_BUCKET == "lora-datasets"


@pytest.mark.parametrize("bucket", ["lora-datasets", "training-files"])
def test_known_buckets_are_kept(bucket: str) -> None:
    """Both known buckets are used as recorded."""
    assert resolve_bucket(bucket) == bucket


def test_known_buckets_are_exactly_the_two() -> None:
    """The runner knows the app's upload bucket and the data bridge's bucket, nothing else."""
    assert KNOWN_BUCKETS == ("lora-datasets", "training-files")


@pytest.mark.parametrize("bucket", ["avatars", "", "LORA-DATASETS", "lora-datasets/"])
def test_unknown_bucket_is_refused_with_a_message_naming_it(bucket: str) -> None:
    """Any other bucket is refused, and the message names it and the buckets that are allowed."""
    with pytest.raises(UnknownBucket) as caught:
        resolve_bucket(bucket)
    assert f"{bucket!r}" in caught.value.message
    assert "'lora-datasets'" in caught.value.message
    assert "'training-files'" in caught.value.message


def test_leading_slash_is_dropped_from_a_path() -> None:
    """`/a/b.jsonl` and `a/b.jsonl` name the same object on every backend."""
    assert validate_path("lora-datasets", "/user/data.jsonl") == "user/data.jsonl"


@pytest.mark.parametrize("path", ["", "/", "  ", "user/../secrets.jsonl", "./data.jsonl"])
def test_empty_or_dotted_paths_are_refused(path: str) -> None:
    """A path that no upload could have produced fails as a missing file naming bucket and path."""
    with pytest.raises(DatasetFileMissing) as caught:
        validate_path("training-files", path)
    assert "'training-files'" in caught.value.message
    assert repr(path) in caught.value.message
