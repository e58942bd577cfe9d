"""The detached packer: ``python -m coral.version_control.pack_worker STORE_ROOT``.

A process that exits with packing still queued hands the queue to this worker, which outlives it (git's
``gc --auto`` detaches the same way), so the end of a training run does not wait for space optimisation.
It runs at the lowest CPU priority (SCHED_IDLE on Linux: any runnable task preempts it), drains the queue
and exits. A kill at any instant loses nothing: objects are rewritten atomically under the same id and each
queue entry stays until its pair is packed, for the next writer or ``coral repack``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading


def lowest_priority() -> None:
    """Run only on CPU nothing else wants: SCHED_IDLE where the OS has it, else nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except (AttributeError, OSError):
        pass


def main(argv: list[str]) -> int:
    """Drain the packing queue of the local store at ``argv[0]``."""
    lowest_priority()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the pair in hand, start no other
    logging.basicConfig(level=logging.WARNING, format="coral pack_worker: %(message)s", stream=sys.stderr)

    from ..objects.tensors import ObjectStore
    from ..store.local import LocalStore
    from .history import History
    from .packer import drain

    store = LocalStore(argv[0])
    drain(store, ObjectStore(store), History(store), serial=True, stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
