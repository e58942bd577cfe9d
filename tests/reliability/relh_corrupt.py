"""Damage object files (flip bytes, truncate, delete) and require loads and ``fsck`` to name the damage.

For each damaged object, every commit that needs it must fail to load with a Coral error naming the
object (and the tensor), every commit that does not need it must still load bit-exact, and ``fsck`` must
report an error naming the object. A load that returns different bytes is the worst outcome: "silent".
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from coral import Repository
from coral.errors import CoralError
from relh_content import flat_content

_KINDS = ("flip", "truncate", "delete")


def build_corpus(path: Path, seed: int = 0) -> dict[str, Any]:
    """A small repository whose objects cover every codec: raw, planes+zstd, delta, and commit documents."""
    r = Repository(path, init=True)
    expected: dict[str, dict[str, np.ndarray]] = {}
    for step in (1, 2, 3):
        arrays = flat_content(step, seed, "small")
        arrays = {k: v[:512] if v.ndim else v for k, v in arrays.items()}  # keep objects small
        arrays["mask"] = np.arange(300) % 3 == 0
        arrays["zeros"] = np.zeros(100, dtype=np.int64)
        arrays["wide"] = np.linspace(-1, 1, 6000, dtype=np.float32) * step  # too big to share a pack chunk
        r.stage_weights(arrays)
        expected[r.commit(f"step {step}")] = arrays
    r.wait()  # the background packer is done before the repack and before any object is damaged
    r.repack()  # steps 1 and 2 become deltas against the next newer commit
    r.wait()
    assert not any(r.pending_background().values()), r.pending_background()  # no queued work left to race
    r.close()
    return {"expected": expected}


def object_files(repo_dir: Path) -> list[Path]:
    """Chunk and commit files (reflog entries are checked by tests/core/test_reflog.py)."""
    root = repo_dir / ".coral" / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "reflog")


def object_id(path: Path) -> str:
    return path.parent.name + path.name


def dependencies(repo: Repository, commit: str) -> set[str]:
    """Object ids a commit needs to load: itself, its chunks and every delta base on their chains."""
    need = {commit}
    for entry in repo.get_commit(commit).tree.values():
        for c in entry.chunks:
            need.add(c)
            need.update(repo.objects.chain(c))
    return need


def _load_all(repo: Repository, commit: str) -> dict[str, np.ndarray]:
    return {n: w.data for n, w in repo.get_weights(commit).items()}


def _only_packed_users(repo: Repository, commit: str, oid: str) -> bool:
    """True when ``oid`` is a pack whose every user in ``commit`` is a packed tensor (checked by its own digest)."""
    users = [e for e in repo.get_commit(commit).tree.values() if oid in e.chunks]
    return bool(users) and all(e.offset is not None and e.digest for e in users)


def _names(msg: str, oid: str) -> bool:
    return oid in msg or f"{oid[:2]}/{oid[2:]}" in msg or oid[:12] in msg


def check_damage(repo_dir: Path, corpus: dict[str, Any], oid: str, deps: dict[str, set[str]]) -> list[str]:
    """Open the damaged repository fresh and check every commit and fsck; returns problems."""
    problems = []
    with Repository(repo_dir) as r:
        for commit, want in corpus["expected"].items():
            needed = oid in deps[commit]
            try:
                got = _load_all(r, commit)
            except CoralError as exc:
                if not needed:
                    problems.append(
                        f"{oid[:12]} damaged: commit {commit[:12]} (does not need it) fails: {exc}"
                    )
                elif not _names(str(exc), oid):
                    problems.append(f"{oid[:12]} damaged: load error does not name it: {exc}")
                continue
            except Exception as exc:
                problems.append(f"{oid[:12]} damaged: load raised a non-Coral {type(exc).__name__}: {exc}")
                continue
            same = sorted(got) == sorted(want) and all(
                np.ascontiguousarray(got[k]).tobytes() == want[k].tobytes() for k in want
            )
            if not same:
                problems.append(f"SILENT: {oid[:12]} damaged and commit {commit[:12]} loaded different bytes")
            elif needed and _only_packed_users(r, commit, oid):
                pass  # the flip missed every member's bytes: each was re-checked by its own digest (fsck names it)
            elif needed:
                problems.append(
                    f"UNDETECTED: {oid[:12]} damaged but commit {commit[:12]} loaded without error"
                )
        try:
            f = r.fsck()
        except Exception as exc:
            problems.append(f"{oid[:12]} damaged: fsck raised {type(exc).__name__}: {exc}")
        else:
            if f["ok"]:
                problems.append(f"UNDETECTED BY FSCK: {oid[:12]} damaged")
            elif not any(_names(e, oid) for e in f["errors"]):
                problems.append(f"{oid[:12]} damaged: fsck errors do not name it: {f['errors'][:3]}")
    return problems


def flip_positions(size: int, exhaustive: bool, rng: random.Random, sample: int) -> list[int]:
    """Every position, or ``sample`` of them: half in the first 96 bytes (headers, base ids), one in the
    last 32 (the seal), the rest anywhere."""
    if exhaustive or size <= sample:
        return list(range(size))
    head = rng.sample(range(min(size, 96)), min(size, 96, max(1, sample // 2)))
    tail = [rng.randrange(max(0, size - 32), size)]
    rest = [rng.randrange(size) for _ in range(max(0, sample - len(head) - 1))]
    return sorted(set(head + tail + rest))


def run_corruption(
    repo_dir: Path,
    *,
    exhaustive: bool = False,
    sample: int = 40,
    masks: int = 2,
    seed: int = 0,
    kinds: Iterable[str] = _KINDS,
    max_objects: int | None = None,
) -> dict[str, Any]:
    """Damage every object file in turn (or the ``max_objects`` smallest); returns counts and the problems.

    A flip XORs one byte with 0xFF and, with ``masks=2``, also flips one random bit of it.
    """
    rng = random.Random(seed)
    corpus = build_corpus(repo_dir, seed)
    with Repository(repo_dir) as r:
        deps = {c: dependencies(r, c) for c in corpus["expected"]}
    out: dict[str, Any] = {"objects": 0, "flips": 0, "truncations": 0, "deletions": 0, "failures": []}
    files = object_files(repo_dir)
    if max_objects is not None:  # the smallest chunks plus the smallest commit
        by_size = sorted(files, key=lambda p: p.stat().st_size)
        files = [p for p in by_size if "chunks" in p.parts][:max_objects]
        files += [p for p in by_size if "commits" in p.parts][:1]
    for path in files:
        oid = object_id(path)
        original = path.read_bytes()
        out["objects"] += 1
        damaged: list[tuple[str, bytes | None]] = []
        if "flip" in kinds:
            for pos in flip_positions(len(original), exhaustive, rng, sample):
                for mask in (0xFF, 1 << rng.randrange(8))[:masks]:
                    b = bytearray(original)
                    b[pos] ^= mask
                    damaged.append((f"flip {pos}^{mask:#x}", bytes(b)))
        if "truncate" in kinds:
            for n in sorted({0, 1, len(original) // 2, len(original) - 1}):
                damaged.append((f"truncate to {n}", original[:n]))
        if "delete" in kinds:
            damaged.append(("delete", None))
        for label, data in damaged:
            if data is None:
                path.unlink()
                out["deletions"] += 1
            else:
                path.write_bytes(data)
                out["flips" if label.startswith("flip") else "truncations"] += 1
            try:
                out["failures"] += [f"{label}: {p}" for p in check_damage(repo_dir, corpus, oid, deps)]
            finally:
                path.write_bytes(original)
    return out
