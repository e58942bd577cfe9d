"""Kill children with SIGKILL at random instants (saving, gc, prune, repack) and check what survives.

After every kill: each commit the child reported saved loads bit-exact, the branch is a valid chain,
``fsck`` finds no damage to live data, and after ``gc`` (on a copy, so the next child still meets the
crash debris) no unreferenced object or temp file is left.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coral import Repository
from coral.errors import PrunedCommitError
from relh_content import check_commit, flat_content, read_lines

CHILD = Path(__file__).resolve().with_name("relh_child.py")


def spawn(role: str, **args: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(CHILD), role, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_line(proc: subprocess.Popen[str], want: str, timeout: float = 120.0) -> None:
    """Block until the child prints ``want`` (raise with its stderr if it dies or stalls first)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == want:
                return
            if line == "":
                break
    proc.kill()
    _, err = proc.communicate()
    raise RuntimeError(f"child never printed {want!r} (rc={proc.returncode}): {err[-2000:]}")


def kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the child; 'killed' when it died mid-work, 'finished' when its operation had already
    completed (it printed ``done`` or exited cleanly before the signal)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, err = proc.communicate()
    if proc.returncode == 0 or "done" in out.split():
        return "finished"
    if proc.returncode == -signal.SIGKILL:
        return "killed"
    raise RuntimeError(f"child failed on its own (rc={proc.returncode}): {err[-3000:]}")


def commit_ids(repo: Repository) -> set[str]:
    return set(repo._commit_ids())


def check_clean_after_gc(repo_dir: Path, scratch: Path) -> tuple[list[str], Path]:
    """gc a copy of the repository and require fsck to report nothing left over; returns (problems, copy)."""
    copy = scratch / "gc-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repo_dir, copy, symlinks=True)
    problems = []
    with Repository(copy) as r:
        r.gc()
        f = r.fsck()
        if not f["ok"]:
            problems.append(f"fsck after gc: {f['errors'][:5]}")
        if f["unreferenced_objects"] or f["temp_files"]:
            problems.append(
                f"leftovers after gc: {f['unreferenced_objects']} unreferenced objects, "
                f"{f['temp_files']} temp files"
            )
    return problems, copy


def verify_chain(repo: Repository, branch: str = "main") -> tuple[list[str], set[str]]:
    """Every commit on ``branch`` has exactly one parent except a single root, and every parent exists."""
    problems = []
    infos = repo.log(branch)
    hashes = {i.hash for i in infos}
    roots = [i for i in infos if not i.parents]
    if len(roots) != 1:
        problems.append(f"branch {branch} has {len(roots)} root commits")
    for i in infos:
        if len(i.parents) > 1:
            problems.append(f"commit {i.hash[:12]} has {len(i.parents)} parents on a linear branch")
        for p in i.parents:
            if p not in hashes:
                problems.append(f"commit {i.hash[:12]} has parent {p[:12]} outside the branch history")
    # the first-parent walk from the head must reach every commit (a valid chain, nothing dangling)
    walk, cur = 0, repo.resolve(branch)
    while True:
        walk += 1
        ps = repo.get_commit(cur).parents
        if not ps:
            break
        cur = ps[0]
    if walk != len(infos):
        problems.append(f"first-parent chain has {walk} commits, log has {len(infos)}")
    return problems, hashes


def verify_reflog(r: Repository) -> list[str]:
    """The reflog is written before each ref update: after a kill, the last entry of every ref's reflog records
    the ref's value (the update landed) or starts from it (the kill came between the entry and the update)."""
    problems: list[str] = []
    for ref in ["HEAD", *r.store.list_refs("heads/"), *r.store.list_refs("tags/")]:
        value = r.refs.value_for_log(ref)
        raw = r.refs.reflog.raw(ref)
        if not raw:
            if ref != "HEAD":  # HEAD is set by init and only logged when it moves
                problems.append(f"ref {ref} = {value!r} has no reflog entry")
            continue
        if value not in (raw[-1].new, raw[-1].old):
            problems.append(f"reflog of {ref}: last entry {raw[-1].old!r} -> {raw[-1].new!r}, ref holds {value!r}")
        chain = r.refs.reflog.entries(ref, value)
        if not chain or chain[0].new != value:
            problems.append(f"reflog of {ref} does not reach its value {value!r}")
    return problems


def verify_saves(
    repo_dir: Path,
    records: list[dict[str, Any]],
    seed: int,
    size: str,
    scratch: Path,
    experiment: str | None = "crash",
) -> tuple[list[str], dict[str, int]]:
    """All checks after a kill of a saver; returns (problems, debris counts seen before gc)."""
    problems: list[str] = []
    with Repository(repo_dir) as r:
        for rec in records:
            problems += check_commit(
                r, rec["commit"], rec["step"], rec.get("seed", seed), size, rec["kind"], rec["digest"]
            )
        chain_problems, on_branch = verify_chain(r) if r.head_commit() else ([], set())
        problems += chain_problems
        lost = [rec["commit"][:12] for rec in records if rec["commit"] not in on_branch]
        if lost:
            problems.append(f"reported commits missing from main (lost ref update): {lost}")
        if experiment and any(rec["kind"] == "manager" for rec in records):
            doc = r.read_document(f"checkpoints/{experiment}") or {}
            hist = {h["commit_hash"] for h in doc.get("history", [])}
            missing = [rec["commit"][:12] for rec in records if rec["commit"] not in hist]
            if missing:
                problems.append(f"reported checkpoints missing from the manager history: {missing}")
            for h in hist:
                try:
                    r.resolve(h)
                except Exception as exc:
                    problems.append(f"manager history names {h[:12]} which does not resolve: {exc}")
        problems += verify_reflog(r)
        f = r.fsck()
        if not f["ok"]:
            problems.append(f"fsck after kill: {f['errors'][:5]}")
        debris = {"temp_files": f["temp_files"], "unreferenced_objects": f["unreferenced_objects"]}
    gc_problems, copy = check_clean_after_gc(repo_dir, scratch)
    problems += gc_problems
    with Repository(copy) as r:  # gc must not have freed anything a reported commit needs
        for rec in records:
            problems += [
                f"after gc: {p}"
                for p in check_commit(
                    r, rec["commit"], rec["step"], rec.get("seed", seed), size, rec["kind"], rec["digest"]
                )
            ]
    shutil.rmtree(copy, ignore_errors=True)
    return problems, debris


def wait_for_report(report: Path, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Block until ``report`` holds a saved record (or the child exits, or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not read_lines(report):
        time.sleep(0.05)


def run_save_kills(
    workdir: Path,
    mode: str,
    kills: int,
    *,
    seed: int = 0,
    size: str = "small",
    window: float = 0.6,
    rotate_every: int = 10,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Kill a saving child ``kills`` times at uniform random instants in ``[0, window]`` s after "ready"."""
    rng = rng or random.Random(seed)
    out: dict[str, Any] = {
        "mode": mode,
        "kills": 0,
        "finished": 0,
        "reported": 0,
        "loads": 0,
        "kills_with_temp_files": 0,
        "kills_with_unreferenced": 0,
        "failures": [],
    }
    repo_dir = report = None
    for i in range(kills):
        if i % rotate_every == 0:
            repo_dir = workdir / f"{mode}-{i:04d}"
            report = workdir / f"{mode}-{i:04d}.jsonl"
            Repository(repo_dir, init=True).close()
        assert repo_dir is not None and report is not None
        proc = spawn(
            "saver",
            repo=str(repo_dir),
            report=str(report),
            mode=mode,
            seed=seed,
            start=(i + 1) * 10_000,
            size=size,
        )
        wait_line(proc, "ready")
        if (i + 1) % rotate_every == 0 or i == kills - 1:
            # the rotation's last kill lands after at least one reported save, so every rotation tests
            # something even when a loaded machine slows the saver past the random window
            wait_for_report(report, proc)
        time.sleep(rng.uniform(0, window))
        out["kills" if kill(proc) == "killed" else "finished"] += 1
        records = read_lines(report)
        problems, debris = verify_saves(repo_dir, records, seed, size, workdir)
        out["loads"] += 2 * len(records)
        out["kills_with_temp_files"] += bool(debris["temp_files"])
        out["kills_with_unreferenced"] += bool(debris["unreferenced_objects"])
        out["failures"] += [f"kill {i}: {p}" for p in problems]
        if (i + 1) % rotate_every == 0 or i == kills - 1:
            out["reported"] += len(records)
    return out


# ---- kill during gc / prune / repack -------------------------------------------------------------------
def build_maint_template(path: Path, op: str, seed: int, size: str, commits: int = 16) -> dict[str, Any]:
    """A repository with history for ``op``: repacked deltas, pruned commits, an abandoned branch."""
    r = Repository(path, init=True)
    steps: dict[str, int] = {}
    for s in range(1, commits + 1):
        r.stage_weights(flat_content(s, seed, size))
        steps[r.commit(f"step {s}", {"step": s})] = s
        if s == commits // 2:
            # an abandoned experiment: its commits become unreachable garbage when the branch is deleted
            r.create_branch("exp")
            r.switch("exp")
            for k in range(3):
                r.stage_weights(flat_content(900 + k, seed, size))
                r.commit(f"exp {k}")
            r.switch("main")
            r.delete_branch("exp", force=True)  # its commits are meant to become unreachable
    by_step = {s: h for h, s in steps.items()}
    prune_steps = [2, 3, 7, commits - 5, commits - 4]
    targets: list[str] = []
    if op in ("gc", "prune"):
        r.repack()
    if op == "gc":
        for s in prune_steps:
            r.prune(by_step[s])
    elif op == "prune":
        targets = [by_step[s] for s in prune_steps]
    r.tag_version("keep", commit_ref=by_step[3] if op == "repack" else by_step[5])
    # gc lets the reflog go at once, so the abandoned branch is garbage to collect (and entries to expire)
    config = r.store.get_ref("config")
    r.store.compare_and_swap("config", config, json.dumps({**json.loads(config or "{}"), "reflog_expire": "now"}))
    r.close()
    return {"steps": steps, "targets": targets, "may_prune": [by_step[s] for s in prune_steps]}


def verify_maint(repo_dir: Path, tmpl: dict[str, Any], seed: int, size: str, scratch: Path) -> list[str]:
    problems: list[str] = []
    allowed_pruned = set(tmpl["may_prune"])
    with Repository(repo_dir) as r:
        live = []
        for h, s in tmpl["steps"].items():
            if r.is_pruned(h):
                if h not in allowed_pruned:
                    problems.append(f"commit {h[:12]} is pruned but nobody pruned it")
                try:
                    r.get_weights(h)
                    problems.append(f"pruned commit {h[:12]} still loads")
                except PrunedCommitError:
                    pass
            else:
                live.append((h, s))
                problems += check_commit(r, h, s, seed, size, "repo", None)
        problems += verify_chain(r)[0]
        problems += verify_reflog(r)
        f = r.fsck()
        if not f["ok"]:
            problems.append(f"fsck after kill: {f['errors'][:5]}")
    gc_problems, copy = check_clean_after_gc(repo_dir, scratch)
    problems += gc_problems
    with Repository(copy) as r:
        for h, s in live:
            problems += [f"after gc: {p}" for p in check_commit(r, h, s, seed, size, "repo", None)]
    shutil.rmtree(copy, ignore_errors=True)
    return problems


def run_maint_kills(
    workdir: Path,
    op: str,
    kills: int,
    *,
    seed: int = 0,
    size: str = "small",
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Kill a child running ``op`` at uniform random instants over the operation's measured duration."""
    rng = rng or random.Random(seed)
    template = workdir / f"template-{op}"
    tmpl = build_maint_template(template, op, seed, size)
    # measure one uninterrupted run to spread the kills over the whole operation
    probe = workdir / f"probe-{op}"
    shutil.copytree(template, probe)
    proc = spawn("maint", repo=str(probe), op=op, targets=tmpl["targets"])
    wait_line(proc, "ready")
    t0 = time.perf_counter()
    wait_line(proc, "done")
    duration = time.perf_counter() - t0
    proc.wait()
    out: dict[str, Any] = {"op": op, "kills": 0, "finished": 0, "duration_s": duration, "failures": []}
    problems = verify_maint(probe, tmpl, seed, size, workdir)
    out["failures"] += [f"uninterrupted {op}: {p}" for p in problems]
    shutil.rmtree(probe)
    for i in range(kills):
        target = workdir / f"{op}-{i:04d}"
        shutil.copytree(template, target)
        proc = spawn("maint", repo=str(target), op=op, targets=tmpl["targets"])
        wait_line(proc, "ready")
        time.sleep(rng.uniform(0, duration * 1.1))
        out["kills" if kill(proc) == "killed" else "finished"] += 1
        out["failures"] += [f"kill {i}: {p}" for p in verify_maint(target, tmpl, seed, size, workdir)]
        shutil.rmtree(target)
    return out


# ---- kill during background packing ---------------------------------------------------------------
def pending_packs(repo: Repository) -> int:
    return repo.pending_background().get("packing", 0)


def run_bgpack_kills(
    workdir: Path,
    kills: int,
    *,
    seed: int = 0,
    size: str = "medium",
    commits: int = 6,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """SIGKILL a child that commits through the plain API while its background packer re-encodes the parents,
    at uniform random instants over the measured run. After each kill: every reported commit loads bit-exact,
    fsck is clean, and the next open + commit drains the packing queue the killed child left."""
    rng = rng or random.Random(seed)
    out: dict[str, Any] = {"kills": 0, "finished": 0, "reported": 0, "left_queued": 0, "drained": 0,
                           "duration_s": 0.0, "failures": []}

    def one(i: int, sleep: float | None) -> tuple[str, list[dict[str, Any]], Path]:
        repo_dir, report = workdir / f"bgpack-{i:04d}", workdir / f"bgpack-{i:04d}.jsonl"
        Repository(repo_dir, init=True).close()
        proc = spawn("bgpacker", repo=str(repo_dir), report=str(report), seed=seed, start=(i + 1) * 10_000,
                     size=size, commits=commits)
        wait_line(proc, "ready")
        if sleep is None:
            t0 = time.perf_counter()
            wait_line(proc, "done", timeout=600)
            out["duration_s"] = time.perf_counter() - t0
            proc.wait()
            how = "finished"
        else:
            if i == kills - 1:  # the last kill lands after one reported commit, so the run always tests one
                wait_for_report(report, proc)
            time.sleep(sleep)
            how = kill(proc)
        return how, read_lines(report), repo_dir

    how, records, repo_dir = one(kills, None)  # an uninterrupted run: its length spreads the kills
    with Repository(repo_dir) as r:
        if pending_packs(r):
            out["failures"].append(f"uninterrupted run left {pending_packs(r)} commits queued for packing")
    for i in range(kills):
        how, records, repo_dir = one(i, rng.uniform(0, out["duration_s"] * 1.1))
        out["kills" if how == "killed" else "finished"] += 1
        out["reported"] += len(records)
        problems, _ = verify_saves(repo_dir, records, seed, size, workdir, experiment=None)
        with Repository(repo_dir) as r:  # the next writer drains what the killed packer left
            left = pending_packs(r)
            out["left_queued"] += left
            if r.head_commit():
                flat = flat_content(999_999, seed, size)
                r.stage_weights(flat)
                r.commit("next writer")
                r.wait()
                if pending_packs(r):
                    problems.append(f"the next write left {pending_packs(r)} commits queued (was {left})")
                elif left:
                    out["drained"] += 1
            for rec in records:
                problems += [f"after draining: {p}" for p in check_commit(
                    r, rec["commit"], rec["step"], seed, size, rec["kind"], rec["digest"])]
            f = r.fsck()
            if not f["ok"]:
                problems.append(f"fsck after draining: {f['errors'][:5]}")
        out["failures"] += [f"kill {i}: {p}" for p in problems]
        shutil.rmtree(repo_dir, ignore_errors=True)
    return out


# ---- concurrent writers ------------------------------------------------------------------------------
def run_concurrency(
    workdir: Path,
    *,
    procs: int = 4,
    commits: int = 10,
    seed: int = 0,
    size: str = "small",
    gc: bool = False,
    managers: int = 0,
    keep: int = 2,
) -> dict[str, Any]:
    """``procs`` processes commit to main at once (plus ``managers`` with retention, plus a gc loop)."""
    repo_dir = workdir / "concurrent"
    with Repository(repo_dir, init=True) as r:
        r.stage_weights({"root": flat_content(0, seed, size)["counter"]})
        root = r.commit("root")
    go, stop = workdir / "go", workdir / "stop"
    reports = [workdir / f"w{p}.jsonl" for p in range(procs + managers)]
    children = [
        spawn(
            "committer",
            repo=str(repo_dir),
            report=str(reports[p]),
            proc=p,
            count=commits,
            go=str(go),
            seed=seed,
            size=size,
        )
        for p in range(procs)
    ]
    children += [
        spawn(
            "manager_committer",
            repo=str(repo_dir),
            report=str(reports[procs + m]),
            proc=procs + m,
            count=commits,
            go=str(go),
            seed=seed,
            size=size,
            keep=keep,
        )
        for m in range(managers)
    ]
    looper = spawn("gc_looper", repo=str(repo_dir), go=str(go), stop=str(stop)) if gc else None
    for c in children + ([looper] if looper else []):
        wait_line(c, "ready")
    go.touch()
    errors = []
    for c in children:
        _, err = c.communicate(timeout=600)
        if c.returncode != 0:
            errors.append(f"writer failed (rc={c.returncode}): {err[-1500:]}")
    gc_runs = 0
    if looper:
        stop.touch()
        out_text, err = looper.communicate(timeout=600)
        if looper.returncode != 0:
            errors.append(f"gc loop failed: {err[-1500:]}")
        gc_runs = int(out_text.split()[-1]) if out_text.strip() else 0
    records = [rec for rep in reports for rec in read_lines(rep)]
    problems = list(errors)
    expected = (procs + managers) * commits
    if len(records) != expected:
        problems.append(f"{len(records)} commits reported, expected {expected}")
    with Repository(repo_dir) as r:
        chain_problems, on_branch = verify_chain(r)
        problems += chain_problems
        if len(on_branch) != expected + 1:
            problems.append(f"main has {len(on_branch)} commits, expected {expected + 1} (lost updates?)")
        lost = [rec["commit"][:12] for rec in records if rec["commit"] not in on_branch]
        if lost:
            problems.append(f"commits lost from main: {lost}")
        if root not in on_branch:
            problems.append("the root commit left main")
        for rec in records:
            if r.is_pruned(rec["commit"]):
                continue
            problems += check_commit(
                r, rec["commit"], rec["step"], rec["seed"], size, rec["kind"], rec["digest"]
            )
        for m in range(managers):
            mine = sorted((rec for rec in records if rec.get("proc") == procs + m), key=lambda x: x["step"])
            for rec in mine[-keep:]:
                if r.is_pruned(rec["commit"]):
                    problems.append(f"manager {m}: kept checkpoint {rec['commit'][:12]} was pruned")
        f = r.fsck()
        if not f["ok"]:
            problems.append(f"fsck: {f['errors'][:5]}")
    gc_problems, copy = check_clean_after_gc(repo_dir, workdir)
    problems += gc_problems
    shutil.rmtree(copy, ignore_errors=True)
    return {
        "procs": procs,
        "managers": managers,
        "commits": len(records),
        "gc_runs": gc_runs,
        "failures": problems,
    }
