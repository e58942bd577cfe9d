"""Push checkpoints to a remote in a background thread while training goes on.

``request()`` returns at once; one worker thread pushes the newest state of the branch (requests that pile
up while a push runs collapse into one). A failed push is retried with a growing pause, then kept as an
error that the next save or ``wait()`` raises, like a failed async save. Pushes still pending when the
interpreter exits are finished first (like the BackgroundSaver's saves), within a preemption's deadline
when one set it (``limit_exit_wait``).
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours (see below)
import logging
import threading
import time
import weakref

from ..errors import CheckpointError, CoralError, ExitDeadlineError
from ..version_control.background import exit_wait_limit
from ..version_control.remotes import push, remote_url
from ..version_control.repository import Repository

log = logging.getLogger(__name__)

PUSH_RETRIES = 3
RETRY_PAUSE_S = 0.5
_live_pushers: weakref.WeakSet[BackgroundPusher] = weakref.WeakSet()


def _wait_all_at_exit() -> None:
    limit = exit_wait_limit()  # None: wait for every push; a preemption bounds it by its deadline
    deadline = None if limit is None else time.monotonic() + limit
    for pusher in list(_live_pushers):
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not pusher.wait(left):
                log.error("a pending Coral push to %r did not finish before exit (preemption_deadline); "
                          "the remote lacks the newest checkpoint, the local one is complete", pusher.remote)
        except Exception as exc:  # pragma: no cover - reported, the process is ending anyway
            log.error("a pending Coral push failed at exit: %s", exc)


# A push needs thread pools (s3fs's asyncio resolver, boto's transfers, our copy threads), which refuse new
# work once concurrent.futures' own exit hook has run; an atexit handler runs after it, so every pending S3
# push failed there. threading's exit hooks run before it, in reverse order of registration.
getattr(threading, "_register_atexit", atexit.register)(_wait_all_at_exit)


class BackgroundPusher:
    """Pushes ``repository``'s branch to ``remote`` after each save, off the training thread."""

    def __init__(self, repository: Repository, remote: str, *, retries: int = PUSH_RETRIES,
                 pause: float = RETRY_PAUSE_S) -> None:
        remote_url(repository, remote)  # an unknown remote fails now, in the caller's thread
        self.repository = repository
        self.remote = remote
        self.retries = retries
        self.pause = pause
        self.pushes = 0  # pushes that completed
        self._cond = threading.Condition()
        self._wanted: str | None = None  # branch to push next
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        _live_pushers.add(self)

    def request(self, branch: str | None = None) -> None:
        """Ask for a push of ``branch`` (default: the current one) and return at once."""
        branch = branch or self.repository.current_branch
        if branch is None:
            return
        with self._cond:
            self._wanted = branch
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"coral-push-{self.remote}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._wanted is None:
                    self._thread = None
                    self._cond.notify_all()
                    return
                branch, self._wanted = self._wanted, None
                self._busy = True
            try:
                self._push(branch)
            except BaseException as exc:  # kept for the next save / wait()
                log.error("background push of %r to %r failed: %s", branch, self.remote, exc)
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _push(self, branch: str) -> None:
        for attempt in range(self.retries + 1):
            try:
                push(self.repository, self.remote, branch)
                self.pushes += 1
                return
            except ExitDeadlineError:
                raise  # the process is stopping: no retry
            except (CoralError, OSError) as exc:
                if attempt == self.retries:
                    raise
                log.warning("push of %r to %r failed (%s); retrying", branch, self.remote, exc)
                time.sleep(self.pause * (2**attempt))

    def raise_pending(self) -> None:
        """Raise (once) the error of a push that failed after its retries."""
        with self._cond:
            err, self._error = self._error, None
        if err is not None:
            raise CheckpointError(f"an earlier background push to {self.remote!r} failed: {err}") from err

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested push has finished (False when ``timeout`` s ran out first); raise if one
        failed."""
        with self._cond:
            done = self._cond.wait_for(lambda: not self._busy and self._wanted is None, timeout)
        if done:
            self.raise_pending()
        return done
