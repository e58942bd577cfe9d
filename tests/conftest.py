"""Fixtures shared by every test folder: a real S3 server (moto, on loopback) and fresh buckets on it.

``moto_server`` (session): the server's URL, started once per test process and stopped after.
``s3_env``: points boto3/s3fs at it (AWS_ENDPOINT_URL + test credentials) for one test.
``s3_bucket``: a fresh, empty bucket on it (implies ``s3_env``); ``s3_url``: ``s3://<fresh bucket>/repo``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from coral.testing.s3 import moto_endpoint

    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from coral.testing.s3 import s3_environment

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):  # a developer's ~/.aws stays out of it
        monkeypatch.setenv(var, os.devnull)
    for var, value in s3_environment(moto_server).items():
        monkeypatch.setenv(var, value)
    return moto_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    from coral.testing.s3 import create_bucket

    return create_bucket(s3_env)


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/repo"
