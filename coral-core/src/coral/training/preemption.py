"""Preemption: a signal handler that only sets a flag, read at the next step boundary of the training loop.

Spot machines and SLURM warn before they take a machine away (SIGTERM, or ``--signal=USR1@N``). The handler
installed here chains to the handler that was there before (the user's or the framework's) and does no I/O;
the integrations test ``requested`` at each step boundary, save a checkpoint at exactly that step, wait for
it (and, with ``push_to``, for its push) up to ``preemption_deadline`` seconds, stop training and exit with
``128 + signum`` (143 for SIGTERM), the code a process killed by that signal reports.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError
from ..version_control.background import limit_exit_wait

log = logging.getLogger(__name__)

#: The signals ``preemption_signals`` accepts: SIGTERM (clouds, Kubernetes, SLURM's default) and SIGUSR1
#: (SLURM ``--signal=USR1@N``), plus SIGUSR2/SIGINT/SIGHUP for schedulers configured otherwise.
ACCEPTED_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")

#: Commit metadata key that marks a checkpoint saved on preemption (``coral log`` shows ``[preempted]``).
PREEMPTED_KEY = "preempted"


def check_signals(value: Any) -> tuple[str, ...]:
    """Validate ``preemption_signals`` (names such as ``"SIGTERM"``, or a single name) as a tuple of names."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not names:
        raise ConfigError(
            "preemption_signals", value, f"must be a non-empty tuple of signal names from {ACCEPTED_SIGNALS}"
        )
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name.upper() not in ACCEPTED_SIGNALS:
            raise ConfigError("preemption_signals", value, f"{name!r} is not one of {', '.join(ACCEPTED_SIGNALS)}")
        if not hasattr(signal, name.upper()):
            raise ConfigError("preemption_signals", value, f"{name!r} does not exist on this platform")
        out.append(name.upper())
    return tuple(dict.fromkeys(out))


def exit_code(signum: int) -> int:
    """The conventional exit status of a process stopped by signal ``signum``: 128 + signum (143 for SIGTERM)."""
    return 128 + int(signum)


class PreemptionHandler:
    """Sets a flag when one of ``signals`` arrives, then runs the handler that was installed before it.

    ``install()`` only works from the main thread (Python delivers signals there); elsewhere it logs and
    returns False. ``uninstall()`` puts the previous handlers back.
    """

    def __init__(self, signals: Iterable[str] = ("SIGTERM",)) -> None:
        self.signals = check_signals(tuple(signals))
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None
        self.received_at: float | None = None

    # ---- installing --------------------------------------------------------------------------------------
    def install(self) -> bool:
        """Install the handler for every signal; True when installed (now or before)."""
        if self._previous:
            return True
        if threading.current_thread() is not threading.main_thread():
            log.info("preemption handler not installed: signals can only be handled in the main thread")
            return False
        for name in self.signals:
            num = int(getattr(signal, name))
            self._previous[num] = signal.signal(num, self._handle)
        log.debug("preemption handler installed for %s", ", ".join(self.signals))
        return True

    def uninstall(self) -> None:
        """Put back the handlers that were installed before (only where ours is still the one installed)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for num, previous in self._previous.items():
            if signal.getsignal(num) == self._handle:
                signal.signal(num, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    # ---- the handler: a flag, then the previous handler --------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        if self._signum is None:
            self._signum = signum
            self.received_at = time.monotonic()
        previous = self._previous.get(signum)
        if callable(previous):  # the user's or the framework's handler still runs (not SIG_DFL/SIG_IGN)
            previous(signum, frame)

    # ---- queries -----------------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True once one of the signals arrived."""
        return self._signum is not None

    @property
    def signum(self) -> int | None:
        """The number of the first signal received, or None."""
        return self._signum

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self._signum).name if self._signum is not None else None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Set the flag as if ``signum`` arrived (e.g. after the ranks agreed that one of them got it)."""
        if self._signum is None:
            self._signum = int(signum)
            self.received_at = time.monotonic()

    def metadata(self, step: int) -> dict[str, Any]:
        """The commit metadata that marks the preemption checkpoint."""
        return {PREEMPTED_KEY: {"signal": self.signal_name, "step": int(step)}}

    def exit_code(self) -> int:
        return exit_code(self._signum if self._signum is not None else signal.SIGTERM)


def wait_within(wait: Callable[[], bool | None], deadline: float, what: str = "pending saves and pushes") -> bool:
    """Run ``wait()`` in a helper thread for at most ``deadline`` seconds; True if it finished in time (a
    ``wait`` that returns False gave up at the deadline itself).

    What did not finish (or failed) is logged as an error naming it: the process is about to stop.
    """
    done = threading.Event()
    error: list[BaseException] = []
    gave_up: list[bool] = []

    def run() -> None:
        try:
            if wait() is False:
                gave_up.append(True)
        except BaseException as exc:  # reported below, in the caller's thread
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="coral-preemption-wait", daemon=True).start()
    if not done.wait(deadline) or gave_up:
        log.error("preemption: %s did not finish within preemption_deadline=%gs; stopping without it", what, deadline)
        return False
    if error:
        log.error("preemption: %s failed: %s", what, error[0])
        return False
    return True


def agree(signum: int) -> int:
    """With an initialised torch.distributed process group: the largest signal number any rank received.

    An all-reduce MAX at the step boundary (0 = none), so a signal that reached one rank stops every rank at
    the same step. Outside a process group it returns ``signum``. torch is used only when already imported.
    """
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return signum
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return signum
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(signum)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


class PreemptionGuard:
    """One integration's preemption logic: the handler, the check at each step boundary, the stop that follows.

    ``check()`` (every rank, every step boundary) says True exactly once, when the save is due; the caller
    saves at that step, then calls ``finish(wait)``; ``should_stop`` is then True and ``exit_if_preempted()``
    raises ``SystemExit(128 + signum)``.
    """

    def __init__(self, enabled: bool, signals: Iterable[str] = ("SIGTERM",), deadline: float = 90.0) -> None:
        self.enabled = enabled
        self.deadline = deadline
        self.handler = PreemptionHandler(signals) if enabled else None
        self.saved_commit: str | None = None
        self.complete: bool | None = None  # True: saved and pushed within the deadline
        self._due = False
        self._stopping = False

    @classmethod
    def from_config(cls, config: Any) -> PreemptionGuard:
        return cls(config.save_on_preemption, config.preemption_signals, config.preemption_deadline)

    def install(self) -> None:
        if self.handler is not None:
            self.handler.install()

    def uninstall(self) -> None:
        if self.handler is not None:
            self.handler.uninstall()

    @property
    def requested(self) -> bool:
        """True once this process received one of the signals (before any agreement between ranks)."""
        return self.handler is not None and self.handler.requested

    def check(self) -> bool:
        """At a step boundary: True (once) when a preemption checkpoint is due now, on every rank alike."""
        if self.handler is None or self._due:
            return False
        signum = agree(self.handler.signum or 0)
        if not signum:
            return False
        self.handler.request(signum)
        self._due = True
        log.warning(
            "preemption: %s received; saving a checkpoint at this step, then stopping", self.handler.signal_name
        )
        return True

    @property
    def due(self) -> bool:
        """True from the step boundary where the preemption was agreed on (the save may still be to do)."""
        return self._due

    def metadata(self, step: int) -> dict[str, Any]:
        assert self.handler is not None
        return self.handler.metadata(step)

    def finish(self, wait: Callable[[], bool | None], commit: str | None = None) -> bool:
        """Wait (at most ``deadline`` s) for the save and its push, then mark the run as stopping."""
        self.saved_commit = commit
        what = (f"the push and background work after preemption checkpoint {commit[:12]} (committed locally)"
                if commit else "pending saves and pushes")
        limit_exit_wait(self.deadline)  # the exit that follows must not wait past the deadline either
        self.complete = wait_within(wait, self.deadline, what)
        self._stopping = True
        if self.complete:
            log.warning("preemption: checkpoint %s saved; stopping", (commit or "?")[:12])
        return self.complete

    @property
    def should_stop(self) -> bool:
        """True once the preemption checkpoint is saved: the training loop should end now."""
        return self._stopping

    def exit_code(self) -> int:
        assert self.handler is not None
        return self.handler.exit_code()

    def exit_if_preempted(self) -> None:
        """Raise ``SystemExit(128 + signum)`` (143 for SIGTERM) when the run stopped for a preemption."""
        if self._stopping:
            raise SystemExit(self.exit_code())
