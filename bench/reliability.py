"""The full reliability run (issue 12): crashes, concurrency, corruption, disk full, hostile input, fuzzing.

    .venv/bin/python bench/reliability.py            # full run (~20 min on 2 cores), writes RELIABILITY.md
    .venv/bin/python bench/reliability.py --quick    # the suite's sizes, to try the script itself

The scenarios live in ``tests/reliability/relh_*.py``; the test suite runs them small, this runs them big
and writes the table. Set ``CORAL_RELIABILITY_SEED`` to replay a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "reliability"
sys.path.insert(0, str(HARNESS))

import relh_corrupt  # noqa: E402
import relh_crash  # noqa: E402
import relh_diskfull  # noqa: E402

FULL = {
    "save_kills": [("manager-sync", 80, "medium"), ("manager-async", 80, "medium"), ("repo", 40, "large")],
    "maint_kills": 50,
    "bgpack_kills": 40,
    "concurrency": (8, 25),
    "fuzz_examples": 1000,
    "disk_pages": 24,
    "corrupt_exhaustive": True,
}
QUICK = {
    "save_kills": [("manager-sync", 8, "small"), ("manager-async", 8, "small"), ("repo", 4, "small")],
    "maint_kills": 3,
    "bgpack_kills": 3,
    "concurrency": (4, 8),
    "fuzz_examples": 40,
    "disk_pages": 8,
    "corrupt_exhaustive": False,
}
WINDOW = {
    "small": 0.4,
    "medium": 1.0,
    "large": 2.5,
}  # kill instants are uniform in [0, window] s after "ready"


METHOD = """
## How each row is checked

**Crashes.** A child process (`tests/reliability/relh_child.py`) saves checkpoints in an endless loop through
`CheckpointManager` (sync, and `async_save=True`) or the plain `stage_weights` + `commit` API. It appends
`{commit, step, digest}` to a report file with one `write()` only after the save returned (async: after
`wait()`), so "reported saved" is exact. The parent sends SIGKILL at a uniformly random instant after the
child is ready, then: every reported commit is loaded and compared byte for byte with content regenerated
from its step (NaN payloads, -0.0, bf16, a two-chunk tensor in the large run) and with the reported
digest; the branch is a single first-parent chain holding every reported commit; the manager's history
names every reported checkpoint; `fsck` reports no damage. Then `gc` runs on a copy (so the next child
meets the crash debris, as a restarted job would) and `fsck` must find 0 unreferenced objects (chunks and
commits) and 0 temp files, and every reported commit must still load bit-exact. Repositories are reused
for 10 kills. Kills during gc, prune (+gc) and repack start from a history with repacked delta chains,
pruned commits and an abandoned branch; instants are spread over the measured length of the operation.

**Concurrency.** Writers start together on a go-file. Afterwards the branch must hold every returned
commit (no lost compare-and-swap), form one linear chain, load bit-exact, and pass fsck; the gc variant
runs `gc` back to back while others commit; the manager variant prunes and gc's inside every save.

**Corruption.** `relh_corrupt.py` builds a repository holding raw, planes+zstd and delta chunks and commit
documents, then damages each object file in turn (byte flips, truncation to 0/1/half/len-1, deletion) and
opens it fresh: every commit that needs the object must raise a Coral error naming it (id, and tensor for
chunks), every other commit must still load bit-exact, and `fsck` must list an error naming it. A load
returning different bytes would be reported as SILENT.

**Disk full.** The repository lives on a 1 MiB tmpfs mounted in a private mount namespace (`unshare
--mount`, plus `--user --map-root-user` when not root); a filler file takes all space but N pages, so the
kernel's own ENOSPC hits whichever write comes at that level (chunk, commit, ref, history, tag). Where
namespaces are refused the script falls back to `RLIMIT_FSIZE` (EFBIG, mapped to the same error); the
table names the mechanism used. A save that fails must raise `InsufficientSpaceError` (async: a
`CheckpointError` caused by it), leave every ref unchanged, leave no temp file, keep earlier commits
bit-exact, and after `gc` leave exactly the earlier object set; with the space back, the same manager
saves again.

**Hostile repositories.** Commits are planted by hand with ids that match their bytes. Pickle payloads
(`os.system("touch MARKER")` on unpickling) are planted as a chunk, as a commit, as the manager's history,
as a tag, as the config and as `.pt`/`.pkl` files; a child process with a `sys.addaudithook` tripwire
(`pickle.find_class`, `os.system`, process creation) opens, logs, loads, fscks, gc's and resumes a manager:
no event fires, no marker appears, every step succeeds or raises a Coral error. Names with `..`, absolute
paths or NUL in refs, ref files, manifests and tensor names are refused; absurd shapes are refused with a
traced peak under 32 MiB; a consistent 64 GiB manifest under `RLIMIT_AS` gives `AllocationError`; symlinks
planted in `.coral` never make Coral write, delete or read outside the repository.

**Fuzzing.** Hypothesis generates configs (`from_dict`, `from_env`), training states and metrics (NaN,
inf, None, 10**400, arrays, objects), weights (every dtype, big-endian, 0-d, object/str arrays), ref strings,
planted ref files and commit manifests. Each call must succeed or raise a `CoralError` with a message,
successful saves must round-trip, and nothing may appear outside the repository folder.

## Bugs this harness found (fixed in coral-core)

- Incremental repack (after every checkpoint) grew one unbounded reverse-delta chain: after ~20 saves
  old checkpoints failed to load ("delta chain too long"). Repack now keeps a keyframe when re-encoding
  would make any chain longer than `MAX_DELTA_DEPTH`.
- A NaN metric made the manager's history document fail to serialize after the commit had landed.
- `gc` deleted chunks staged (not yet committed) by another process, and deleted other writers' in-flight
  temp files; commit now refuses a tree whose chunks vanished (the manager re-stages once), and temp files
  are flock-ed by their writer so gc removes only crash leftovers.
- `gc` treated a missing or unreadable commit, or a damaged tag, as "unreachable" and would have deleted
  all older history behind it; it now refuses and names the damage.
- Byte flips the decoders ignore (reserved header bytes, delta depth, zstd frame flags) loaded silently:
  every object file now ends with a 20-byte seal (length + 64-bit word sum) checked on every full read.
- Hostile input: non-hex ref values, `..` parents, malformed tag/history documents, non-dict history,
  array-valued config/state fields, 10**400 metrics/config values, symlinked store folders and lock files,
  and allocation failures all crashed with raw Python errors or wrote outside the repository; each is
  now a specific Coral error.
- A branch named like the folder of an existing or deleted `name/...` branch crashed with
  `IsADirectoryError`; it is now created (empty folder) or refused with `RefExistsError`.
"""


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.failures: list[str] = []

    def add(self, scenario: str, runs: str, failures: list[str], details: str) -> None:
        outcome = "pass" if not failures else f"**FAIL** ({len(failures)})"
        self.rows.append((scenario, runs, outcome, details))
        self.failures += [f"{scenario}: {f}" for f in failures[:20]]
        print(f"[{outcome}] {scenario}: {runs}; {details}", flush=True)
        for f in failures[:5]:
            print("    ", f, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(), time.perf_counter() - t


def run_pytest(path: str, env: dict[str, str]) -> tuple[int, int, list[str]]:
    """(passed, failed, failure lines) of a pytest run of one test file."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=7200,
    )
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-500:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    bad = [ln for ln in res.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if res.returncode not in (0, 1):
        bad.append(f"pytest exited {res.returncode}: {tail}")
    return passed, failed, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="suite-sized runs (minutes), to check the script")
    ap.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    seed = int(os.environ.get("CORAL_RELIABILITY_SEED") or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="coral-reliability-"))
    table = Table()
    started = time.time()
    try:
        # ---- crashes ------------------------------------------------------------------------------------
        for mode, kills, size in plan["save_kills"]:
            d = work / f"save-{mode}"
            d.mkdir()
            res, secs = timed(
                lambda d=d, mode=mode, kills=kills, size=size: relh_crash.run_save_kills(
                    d, mode, kills, seed=seed, size=size, window=WINDOW[size], rotate_every=10, rng=rng
                )
            )
            table.add(
                f"SIGKILL while saving ({mode}, {size} checkpoints)",
                f"{res['kills']} kills",
                res["failures"],
                f"{res['reported']} reported commits, {res['loads']} bit-exact loads checked; kills that "
                f"left temp files: {res['kills_with_temp_files']}, "
                f"unreferenced objects: {res['kills_with_unreferenced']}; "
                f"{secs:.0f} s",
            )
            shutil.rmtree(d, ignore_errors=True)
        for op in ("gc", "prune", "repack"):
            d = work / f"maint-{op}"
            d.mkdir()
            res, secs = timed(
                lambda d=d, op=op: relh_crash.run_maint_kills(
                    d,
                    op,
                    plan["maint_kills"],
                    seed=seed,
                    size="medium" if not args.quick else "small",
                    rng=rng,
                )
            )
            table.add(
                f"SIGKILL during {op}" + (" (prune + gc)" if op == "prune" else ""),
                f"{res['kills']} kills (+{res['finished']} landed after it finished)",
                res["failures"],
                f"kill instants uniform over the {res['duration_s'] * 1000:.0f} ms operation; "
                "every live commit "
                f"bit-exact, fsck clean after gc; {secs:.0f} s",
            )
            shutil.rmtree(d, ignore_errors=True)
        d = work / "bgpack"
        d.mkdir()
        res, secs = timed(
            lambda: relh_crash.run_bgpack_kills(
                d, plan["bgpack_kills"], seed=seed, size="large", commits=4 if args.quick else 6, rng=rng
            )
        )
        table.add(
            "SIGKILL during background packing (plain Repository.commit)",
            f"{res['kills']} kills (+{res['finished']} landed after it finished)",
            res["failures"],
            f"kill instants uniform over the {res['duration_s'] * 1000:.0f} ms run (commits + packer); "
            f"{res['reported']} reported commits bit-exact and fsck clean after each kill; "
            f"{res['left_queued']} queued pairs left by the kills, drained by the next open + commit "
            f"({res['drained']} runs); {secs:.0f} s",
        )
        shutil.rmtree(d, ignore_errors=True)
        table.rows.append(
            (
                "SIGKILL during push",
                "0",
                "not run",
                "waits for remotes (no `push` exists yet; the S3 compare-and-swap design is in DESIGN.md)",
            )
        )
        # ---- concurrency --------------------------------------------------------------------------------
        procs, commits = plan["concurrency"]
        for label, kw in (
            (f"{procs} processes commit to one branch at once", dict(procs=procs, commits=commits)),
            (f"{procs // 2} committers racing a gc loop", dict(procs=procs // 2, commits=commits, gc=True)),
            (
                "2 CheckpointManagers with retention (prune + gc per save) + 2 committers",
                dict(procs=2, managers=2, commits=commits, keep=2),
            ),
        ):
            d = work / f"conc-{len(table.rows)}"
            d.mkdir()
            res, secs = timed(lambda d=d, kw=kw: relh_crash.run_concurrency(d, seed=seed % 1000, **kw))
            extra = f", {res['gc_runs']} gc runs interleaved" if res["gc_runs"] else ""
            table.add(
                label,
                f"{res['commits']} commits",
                res["failures"],
                f"no lost ref update, linear chain, all bit-exact{extra}; {secs:.0f} s",
            )
            shutil.rmtree(d, ignore_errors=True)
        # ---- corruption ---------------------------------------------------------------------------------
        res, secs = timed(
            lambda: relh_corrupt.run_corruption(
                work / "corrupt", exhaustive=plan["corrupt_exhaustive"], sample=8, seed=seed
            )
        )
        how = "every byte (XOR 0xFF and one random bit)" if plan["corrupt_exhaustive"] else "sampled bytes"
        table.add(
            "Damaged object files (raw, planes+zstd, delta chunks, commits)",
            f"{res['flips']} flips, {res['truncations']} truncations, {res['deletions']} deletions",
            res["failures"],
            f"{res['objects']} objects, {how}; each: dependent loads raise a Coral error naming the object, "
            f"other commits still load bit-exact, fsck names it; {secs:.0f} s",
        )
        shutil.rmtree(work / "corrupt", ignore_errors=True)
        # ---- disk full ----------------------------------------------------------------------------------
        pages = list(range(plan["disk_pages"] + 1))
        res, secs = timed(
            lambda: relh_diskfull.run_disk_full(work / "full", [p * relh_diskfull.PAGE for p in pages])
        )
        problems = [f"{c['variant']} slack={c['slack']}: {p}" for c in res["cases"] for p in c["problems"]]
        errno_name = "ENOSPC" if res["mechanism"] == "tmpfs" else "EFBIG"
        counts: dict[str, int] = {}
        for c in res["cases"]:
            counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
        table.add(
            f"Disk full during a save ({res['mechanism']}: real {errno_name})",
            f"{len(res['cases'])} saves",
            problems,
            f"repo API, sync and async manager at 0..{pages[-1]} free 4 KiB pages: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f"; a raised save left refs, fsck and old commits as they were; {secs:.0f} s",
        )
        # ---- hostile repositories and fuzzing (the pytest files, with many more examples) ------------------
        for label, path, env in (
            (
                "Hostile repositories (pickle payloads, escaping names, absurd shapes, symlinks)",
                "tests/reliability/test_hostile.py",
                {},
            ),
            (
                f"Fuzzing with hypothesis ({plan['fuzz_examples']} examples per property)",
                "tests/reliability/test_fuzz.py",
                {"CORAL_FUZZ_EXAMPLES": str(plan["fuzz_examples"])},
            ),
        ):
            (passed, failed, bad), secs = timed(lambda path=path, env=env: run_pytest(path, env))
            table.add(
                label,
                f"{passed + failed} tests",
                bad,
                f"`{path}`: {passed} passed, {failed} failed; {secs:.0f} s",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(Path(args.out), table, seed, time.time() - started, quick=args.quick)


def write_report(path: Path, table: Table, seed: int, secs: float, quick: bool) -> None:
    lines = [
        "# Coral reliability results",
        "",
        f"Written by `bench/reliability.py{' --quick' if quick else ''}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs), "
        f"seed {seed}, {secs / 60:.1f} min. The test suite runs the same scenarios small "
        "(`tests/reliability/`, 20 save kills).",
        "",
        "| Scenario | Runs | Outcome | What was checked |",
        "|---|---|---|---|",
        *[f"| {s} | {r} | {o} | {d} |" for s, r, o, d in table.rows],
        "",
    ]
    if table.failures:
        lines += ["## Failures", "", *[f"- {f}" for f in table.failures], ""]
    lines += [METHOD.strip(), ""]
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
