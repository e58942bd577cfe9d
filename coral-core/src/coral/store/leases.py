"""Named locks over an object store: lease objects that expire unless their holder renews them.

An exclusive holder owns ``<base>/exclusive``, created only if absent (a conditional write; an expired lease
is taken over by a replace that must match its token). A shared holder writes its own ``<base>/shared-<id>``
and backs off while a live exclusive lease exists; the exclusive holder waits until no live shared lease is
left. Each side writes before it looks at the other, so with read-after-write consistency (S3 has it) at
least one of two racing takers sees the other. A background heartbeat renews held leases; a holder that died
stops renewing and its lease expires after ``ttl`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from ..errors import LockTimeoutError
from .fsspec_files import FsspecFiles

log = logging.getLogger(__name__)

#: seconds a lease lives without renewal; renewed every third of it
LEASE_TTL = 60.0


def lease_body(owner: str, ttl: float) -> bytes:
    return json.dumps({"owner": owner, "expires": time.time() + ttl}).encode()


def lease_expired(data: bytes) -> bool:
    """True for a lease past its expiry; a body that does not parse (being written) counts as live."""
    try:
        return float(json.loads(data)["expires"]) < time.time()
    except (ValueError, KeyError, TypeError):
        return not data  # an empty file is a crashed writer's; anything else may still be in flight


class Heartbeat:
    """One daemon thread that calls every registered renewal function every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._jobs: dict[str, Callable[[], None]] = {}
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job_id: str, job: Callable[[], None]) -> None:
        with self._mutex:
            self._jobs[job_id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="coral-lease-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, job_id: str) -> None:
        with self._mutex:
            self._jobs.pop(job_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._mutex:
                jobs = list(self._jobs.values())
                if not jobs:
                    self._thread = None
                    return
            for job in jobs:
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next beat
                    log.warning("could not renew a lease: %s", exc)


class LeaseLocks:
    """Shared/exclusive named locks made of lease objects under ``locks/<name>/`` of ``files``."""

    def __init__(self, files: FsspecFiles, describe: str, ttl: float = LEASE_TTL) -> None:
        self.files = files
        self.describe = describe
        self.ttl = ttl
        self.heartbeat = Heartbeat(ttl / 3)

    @contextlib.contextmanager
    def hold(self, name: str, *, exclusive: bool, timeout: float) -> Iterator[None]:
        """Take lock ``name`` (LockTimeoutError after ``timeout`` seconds); release it on exit."""
        base = f"locks/{name}"
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + max(0.0, timeout)
        release = self._take_exclusive(base, owner, deadline, name) if exclusive else self._take_shared(
            base, owner, deadline, name
        )
        try:
            yield
        finally:
            release()

    def _timeout(self, name: str, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise LockTimeoutError(f"could not take lock {name!r} on {self.describe} in time (held by another writer)")

    @staticmethod
    def _pause(attempt: int) -> None:
        time.sleep(min(0.2, 0.005 * (1.5**attempt)) * (0.5 + random.random()))

    def _take_exclusive(self, base: str, owner: str, deadline: float, name: str) -> Callable[[], None]:
        key = f"{base}/exclusive"
        attempt = 0
        while True:
            token = self.files.create_only(key, lease_body(owner, self.ttl))
            if token is None:
                cur = self.files.read_versioned(key)
                if cur is not None and lease_expired(cur.data):
                    log.warning("taking over the expired lease of lock %r on %s", name, self.describe)
                    token = self.files.replace_if(key, lease_body(owner, self.ttl), cur.token)
            if token is not None:
                break
            self._timeout(name, deadline)
            self._pause(attempt)
            attempt += 1
        state = {"token": token}
        lock = threading.Lock()

        def renew() -> None:
            with lock:
                if state["token"]:
                    state["token"] = self.files.replace_if(key, lease_body(owner, self.ttl), state["token"])
                    if state["token"] is None:
                        log.error("lost the lease of lock %r on %s (expired, taken over)", name, self.describe)

        def release() -> None:
            self.heartbeat.remove(owner)
            with lock:
                cur = self.files.read_versioned(key)
                if cur is not None and cur.token == state["token"]:
                    self.files.delete(key)
                state["token"] = None

        self.heartbeat.add(owner, renew)
        try:
            attempt = 0
            while self._live_shared(base):  # writers that came first finish; new ones back off
                self._timeout(name, deadline)
                self._pause(attempt)
                attempt += 1
        except BaseException:
            release()
            raise
        return release

    def _live_shared(self, base: str) -> bool:
        keys = [k for k in self.files.list(f"{base}/shared-")]
        for key, data in self.files.read_many(keys).items():
            if not lease_expired(data):
                return True
            self.files.delete(key)  # a dead holder's
        return False

    def _take_shared(self, base: str, owner: str, deadline: float, name: str) -> Callable[[], None]:
        key = f"{base}/shared-{owner}"
        attempt = 0
        while True:
            self.files.write(key, lease_body(owner, self.ttl))
            cur = self.files.read_versioned(f"{base}/exclusive")
            if cur is None or lease_expired(cur.data):
                break
            self.files.delete(key)  # an exclusive holder (gc) is in: wait outside
            self._timeout(name, deadline)
            self._pause(attempt)
            attempt += 1

        held = [True]
        lock = threading.Lock()

        def renew() -> None:
            with lock:
                if held[0]:
                    self.files.write(key, lease_body(owner, self.ttl))

        def release() -> None:
            self.heartbeat.remove(owner)
            with lock:
                held[0] = False
                self.files.delete(key)

        self.heartbeat.add(owner, renew)
        return release
