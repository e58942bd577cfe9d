"""A real S3-compatible server on loopback for tests: moto's server mode on a free port (needs ``moto[server]``).

``tests/conftest.py`` wraps these in the ``moto_server``, ``s3_env`` and ``s3_bucket`` fixtures; a backend
or plugin author can use them the same way::

    with moto_endpoint() as endpoint:          # "http://127.0.0.1:PORT"
        bucket = create_bucket(endpoint)       # a fresh, empty bucket

``moto_process()`` runs the same server as a separate process (its work does not compete with the caller's
threads for the interpreter: benchmarks use it; so do tests that start it with other settings).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping

#: the environment that points boto3/s3fs at a test server (moto accepts any key pair)
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_environment(endpoint: str) -> dict[str, str]:
    """The variables that point every AWS client (boto3, s3fs) at ``endpoint`` with test credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, **TEST_CREDENTIALS}


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """Run moto's S3 server in this process on 127.0.0.1 and a free port; yield its URL; stop it after."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def moto_process(env: Mapping[str, str] | None = None, start_timeout: float = 60.0) -> Iterator[str]:
    """Run moto's S3 server as a child process on 127.0.0.1 and a free port (``env``: its environment, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT=0`` to check credentials); yield its URL; stop it after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ if env is None else env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start on 127.0.0.1:{port} (exit code {proc.poll()})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a bucket (a fresh unique name by default) on the server at ``endpoint``; return its name."""
    import boto3

    name = name or f"coral-test-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=name)
    return name
