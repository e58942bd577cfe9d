"""The S3 and fsspec backends against real servers: moto's S3 server on loopback, and a local folder.

The store contract, repositories living on S3 end to end, lazy reads that fetch only the named tensors'
chunks, the conditional-write probe, and one clear line for each kind of bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import boto3
import numpy as np
import pytest
from coral import Repository
from coral.errors import (
    ConditionalWritesUnsupportedError,
    PluginError,
    RepositoryNotFoundError,
    StoreUnavailableError,
)
from coral.objects.tensors import chunk_key
from coral.store import FsspecStore, S3Store, open_store
from coral.testing import StoreContract
from coral.testing.s3 import free_port, moto_process


def _client(endpoint: str):
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


def _keys(endpoint: str, bucket: str) -> list[str]:
    resp = _client(endpoint).list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


class TestS3StoreContract(StoreContract):
    """The whole store contract on moto's real S3 server (conditional writes on)."""

    @pytest.fixture(autouse=True)
    def _bucket(self, s3_bucket: str) -> None:
        self.bucket = s3_bucket

    def make_store(self, tmp_path):
        store = open_store(f"s3://{self.bucket}/contract")
        assert isinstance(store, S3Store)
        return store

    def reopen(self, store):
        return S3Store.from_url(store.url)

    def url(self, store):
        return store.url


class TestFsspecLocalFolderContract(StoreContract):
    """The generic fsspec store on a local folder (exclusive create + leases instead of conditional writes)."""

    def make_store(self, tmp_path):
        store = open_store(f"fsspec+file://{tmp_path}/store")
        assert type(store) is FsspecStore
        return store

    def reopen(self, store):
        return FsspecStore.from_url(store.url)

    def url(self, store):
        return store.url


# ---- repositories on S3 ----------------------------------------------------------------------------------


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "big.a": rng.standard_normal((1100, 1024)).astype(np.float32),  # two chunks
        "big.b": rng.standard_normal((300, 1024)).astype(np.float32),
        "small.bias": rng.standard_normal(16).astype(np.float32),
        "small.scale": rng.standard_normal(8).astype(np.float32),
        "step": np.array(seed, dtype=np.int64),
    }


def test_repository_on_s3_end_to_end(s3_url, s3_env, s3_bucket):
    with Repository(s3_url, init=True) as repo:
        first = repo.commit_weights(_weights(1), "first")
        repo.stage_weights(_weights(2))
        second = repo.commit("second")
        assert [c.hash for c in repo.log()][0] == second
        got = repo.get_weights(second)
        for name, arr in _weights(2).items():
            np.testing.assert_array_equal(np.asarray(got[name].data), arr)
            assert np.asarray(got[name].data).tobytes() == arr.tobytes()
        repo.create_branch("side")
        assert set(repo.list_branches()) == {"main", "side"}
        report = repo.fsck()
        assert not report.get("corrupt") and not report.get("missing"), report
        repo.gc()
    assert any(k.startswith("repo/objects/") for k in _keys(s3_env, s3_bucket))
    with Repository(s3_url) as again:  # a second handle (as on another machine) sees the same history
        assert again.head_commit() == second
        old = again.get_weights(first)
        assert np.asarray(old["big.a"].data).tobytes() == _weights(1)["big.a"].tobytes()


def _count_reads(store) -> list[tuple[str, str, int]]:
    """Record (method, key, bytes asked) of every read through the real store (a counting wrapper, no mock)."""
    touched: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    for method in ("get", "get_range", "get_into", "size", "has"):
        real = getattr(store, method)

        def counting(key, *args, _real=real, _method=method, **kwargs):
            asked = args[1] if _method == "get_range" else len(args[1]) if _method == "get_into" else -1
            with lock:
                touched.append((_method, key, asked))
            return _real(key, *args, **kwargs)

        setattr(store, method, counting)
    return touched


def test_get_weights_by_name_fetches_only_those_tensors_chunks(s3_url, s3_env):
    with Repository(s3_url, init=True) as repo:
        repo.stage_weights(_weights(3))
        head = repo.commit("three")
        tree = repo.get_commit(head).tree
    reader = Repository(s3_url)
    touched = _count_reads(reader.store)
    try:
        got = reader.get_weights(head, names=["big.b"])
        assert set(got) == {"big.b"}
        assert np.asarray(got["big.b"].data).tobytes() == _weights(3)["big.b"].tobytes()
    finally:
        reader.close()
    chunk_keys = {key for _m, key, _n in touched if key.startswith("chunks/")}
    assert chunk_keys, "no chunk was read"
    wanted = {chunk_key(c) for c in tree["big.b"].chunks}
    assert chunk_keys == wanted, "fetched chunks other than those of the named tensor"
    # raw chunks are read with ranged GETs straight into the tensor, never as whole objects
    assert {m for m, k, _n in touched if k.startswith("chunks/")} <= {"get_range", "get_into", "size"}


def test_a_packed_small_tensor_is_read_alone_by_range(s3_url, s3_env):
    with Repository(s3_url, init=True) as repo:
        head = repo.commit_weights(_weights(4), "four")
        entry = repo.get_commit(head).tree["small.scale"]
    assert entry.packed  # it shares one pack chunk with the other small tensors
    reader = Repository(s3_url)
    touched = _count_reads(reader.store)
    try:
        got = reader.get_weights(head, names=["small.scale"])["small.scale"]
        assert np.asarray(got.data).tobytes() == _weights(4)["small.scale"].tobytes()
    finally:
        reader.close()
    reads = [(m, n) for m, k, n in touched if k == chunk_key(entry.chunks[0])]
    assert reads and all(m in ("get_range", "get_into") for m, _n in reads), reads
    assert max(n for _m, n in reads) <= max(64, entry.nbytes)  # its own bytes and the header, not the pack


# ---- conditional writes: the probe and the refusal ---------------------------------------------------------


def _ignore_conditions(store: S3Store) -> None:
    """Make the real server see no If-None-Match/If-Match headers (as a server that ignores them would)."""

    def strip(params, **_kwargs):
        params.pop("IfNoneMatch", None)
        params.pop("IfMatch", None)

    store.files.client.meta.events.register("before-parameter-build.s3.PutObject", strip)


def test_probe_finds_conditional_writes_on_moto(s3_url, s3_env):
    store = open_store(s3_url)
    assert store.conditional_writes is True
    assert store.compare_and_swap("heads/main", None, "a")
    assert not store.compare_and_swap("heads/main", None, "b")


def test_server_ignoring_conditions_is_detected_and_racing_ref_updates_refused(s3_url, s3_env):
    store = open_store(s3_url)
    _ignore_conditions(store)
    assert store.conditional_writes is False
    assert store.compare_and_swap("heads/main", None, "base")  # a lone writer still works
    assert store.get_ref("heads/main") == "base"
    outcomes: list[object] = []
    barrier = threading.Barrier(6)

    def race(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(store.compare_and_swap("heads/main", "base", f"w{i}"))
        except ConditionalWritesUnsupportedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(1 for o in outcomes if o is True) <= 1, outcomes
    final = store.get_ref("heads/main")
    if any(o is True for o in outcomes):
        assert final != "base"
    refused = [o for o in outcomes if isinstance(o, ConditionalWritesUnsupportedError)]
    for exc in refused:
        assert "conditional writes" in str(exc) and "heads/main" in str(exc)


# ---- bad input: one clear line, fast, nothing written --------------------------------------------------------


@pytest.mark.timeout(120)
def test_unreachable_endpoint_fails_fast_with_one_line(monkeypatch, s3_env):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(StoreUnavailableError) as err:
        Repository("s3://bucket/runs/exp1")
    msg = str(err.value)
    assert "cannot reach" in msg and dead in msg and "\n" not in msg
    with pytest.raises(StoreUnavailableError, match="cannot reach"):
        Repository("s3://bucket/runs/exp1", init=True)


def test_missing_bucket_is_named(s3_env):
    with pytest.raises(StoreUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        Repository("s3://no-such-bucket/x")


def test_a_prefix_that_is_not_a_repository_is_refused_and_left_untouched(s3_env, s3_bucket):
    _client(s3_env).put_object(Bucket=s3_bucket, Key="other/data.bin", Body=b"not coral")
    with pytest.raises(RepositoryNotFoundError, match="not a Coral repository"):
        Repository(f"s3://{s3_bucket}/other")
    with pytest.raises(RepositoryNotFoundError):
        Repository(f"s3://{s3_bucket}/empty")
    assert _keys(s3_env, s3_bucket) == ["other/data.bin"]


@pytest.fixture(scope="module")
def auth_moto():
    """A second moto server that checks credentials (it knows no keys, so every request is refused)."""
    with moto_process(env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")) as endpoint:
        yield endpoint


def test_refused_credentials_give_one_clear_line(auth_moto, s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", auth_moto)
    with pytest.raises(StoreUnavailableError, match="credentials refused") as err:
        Repository("s3://bucket/runs/exp1", init=True)
    assert "AWS_ACCESS_KEY_ID" in str(err.value) and "\n" not in str(err.value)


def test_s3_without_the_extra_names_it():
    script = (
        "import sys; sys.modules['s3fs'] = None; sys.modules['boto3'] = None\n"
        "from coral import Repository\n"
        "try:\n    Repository('s3://bucket/runs/exp1', init=True)\n"
        "except Exception as exc:\n    print(type(exc).__name__ + ': ' + str(exc))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("PluginError") and "pip install 'coral-core[s3]'" in out, out


def test_unknown_fsspec_protocol_is_refused_naming_the_extra():
    with pytest.raises(PluginError, match=r"coral-core\[s3\]"):
        open_store("fsspec+nosuchprotocol://x")


def test_core_without_s3_urls_imports_no_aws_library(tmp_path):
    script = f"""
import json, sys
import numpy as np
from coral import Repository
from coral.store import storage_backends
assert "s3" in storage_backends()
with Repository({str(tmp_path / 'r')!r}, init=True) as r:
    r.stage_weights({{"w": np.zeros(4, dtype=np.float32)}})
    r.commit("one")
print(json.dumps([m for m in ("s3fs", "boto3", "botocore", "aiobotocore", "aiohttp") if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_processes_bumping_one_ref_lose_no_update(s3_url, s3_env):
    """Separate processes (separate clients, as on separate machines) racing on one ref through conditional writes."""
    script = f"""
from coral.store import open_store
store = open_store({s3_url!r})
for _ in range(8):
    while True:
        cur = store.get_ref("counter")
        if store.compare_and_swap("counter", cur, str(int(cur or "0") + 1)):
            break
"""
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(300) for p in procs] == [0, 0, 0]
    assert open_store(s3_url).get_ref("counter") == "24"
