"""Put 10 training checkpoints on a remote, then resume from it on a "new machine": Coral against torch.save files.

``python bench/remotes.py --s3`` starts moto's S3 server (a child process on 127.0.0.1, via
``coral.testing.s3``) and uses one bucket of it for both sides; ``python bench/remotes.py`` uses local folders
instead (the torch.save files are copied there with an fsync). Bounded: about 2-4 min on a quiet 2-core machine
with the defaults (``--rounds 3``), moto's memory peaks near 1 GiB. Needs ``coral-core[s3]`` and ``moto[server]``
(the root ``dev`` extra) for ``--s3``.

Per round, interleaved (A,B / B,A ...), the same model trained the same steps from the same seed:

* Coral: ``Checkpointer(push_to="origin")`` saves every 20 steps and pushes each checkpoint in the background;
  the time runs until ``close()`` has waited for the last push.
* torch: ``torch.save`` of model + optimizer to a local file, then an upload of that file with s3fs (same
  bucket, another prefix) in the training loop, as a script without Coral does it.

Bytes sent are what the server holds under each side's prefix afterwards (moto's stored object sizes: every
Coral object is content-addressed and written once, so nothing sent twice hides there; refs count once).

Resume, in a NEW process each time (page cache dropped first when running as root): ``Repository.clone(url,
path, depth=1)`` + ``Checkpointer(..., resume=True)`` (model and optimizer restored) against an s3fs download of
the newest torch.save file + ``torch.load(weights_only=True)`` + ``load_state_dict``. The time is measured inside
the child (both pay the same interpreter and torch start-up); both children report a digest of the restored
weights, which must match. Prints a markdown table (median, min-max, ratio against torch) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from coral import Repository
from coral.integrations.pytorch import Checkpointer

CHECKPOINTS, STEPS_APART, EXPERIMENT = 10, 20, "bench"
MIB = 1024 * 1024


# ---- the training run (identical on both sides) -------------------------------------------------------------
def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(16384, 512),  # frozen (a pretrained part): 32 MiB that never changes
        torch.nn.Linear(512, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 512),
    )
    model[0].weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, opt


def train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        x = torch.randint(0, 16384, (32,))
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- the two places a remote can be ------------------------------------------------------------------------
class FolderSide:
    """Remotes in local folders; uploads are copies with an fsync."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def url(self, prefix: str) -> str:
        return str(self.root / prefix)

    def upload(self, local: Path, key: str) -> None:
        dst = self.root / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "rb") as src, open(dst, "wb") as fh:
            shutil.copyfileobj(src, fh, 16 * MIB)
            fh.flush()
            os.fsync(fh.fileno())

    def download(self, key: str, local: Path) -> None:
        shutil.copyfile(self.root / key, local)

    def stored_bytes(self, prefix: str) -> int:
        return sum(p.stat().st_size for p in (self.root / prefix).rglob("*") if p.is_file())


class S3Side:
    """One bucket on an S3 server (the environment names the endpoint and credentials); uploads through s3fs."""

    def __init__(self, bucket: str) -> None:
        import s3fs

        self.bucket = bucket
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)  # connects at first use

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def upload(self, local: Path, key: str) -> None:
        self.fs.put_file(str(local), f"{self.bucket}/{key}")

    def download(self, key: str, local: Path) -> None:
        self.fs.get_file(f"{self.bucket}/{key}", str(local))

    def stored_bytes(self, prefix: str) -> int:
        import boto3

        total = 0
        client = boto3.session.Session().client("s3")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total


def make_side(spec: dict[str, str]) -> FolderSide | S3Side:
    return S3Side(spec["bucket"]) if spec["kind"] == "s3" else FolderSide(Path(spec["root"]))


# ---- one training run per side -----------------------------------------------------------------------------
def run_coral(side: FolderSide | S3Side, work: Path, prefix: str) -> tuple[float, int]:
    url = side.url(prefix)
    Repository(url, init=True).close()
    before = side.stored_bytes(prefix)
    with Repository(work / f"trainer-{prefix}", init=True) as repo:
        repo.add_remote("origin", url)
    model, opt = model_and_optimizer()
    t0 = time.perf_counter()
    with Checkpointer(model, work / f"trainer-{prefix}", EXPERIMENT, optimizer=opt, push_to="origin") as ckpt:
        for epoch in range(CHECKPOINTS):
            train_steps(model, opt, STEPS_APART)
            ckpt.log(epoch, (epoch + 1) * STEPS_APART)
    seconds = time.perf_counter() - t0  # leaving the block waited for the last push
    return seconds, side.stored_bytes(prefix) - before


def run_torch(side: FolderSide | S3Side, work: Path, prefix: str) -> tuple[float, int]:
    model, opt = model_and_optimizer()
    t0 = time.perf_counter()
    for epoch in range(CHECKPOINTS):
        train_steps(model, opt, STEPS_APART)
        local = work / f"{prefix}-ckpt-{epoch}.pt"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, local)
        side.upload(local, f"{prefix}/ckpt-{epoch}.pt")
    seconds = time.perf_counter() - t0
    return seconds, side.stored_bytes(prefix)


# ---- resume on a new machine (run as a child process) -----------------------------------------------------
def resume_child(which: str, spec: dict[str, str], prefix: str, dest: Path) -> dict[str, object]:
    side = make_side(spec)
    model, opt = model_and_optimizer()
    t0 = time.perf_counter()
    if which == "coral":
        repo = Repository.clone(side.url(prefix), dest, depth=1)
        ckpt = Checkpointer(model, repo, EXPERIMENT, optimizer=opt, resume=True)
        seconds = time.perf_counter() - t0
        assert ckpt.resumed_from is not None
        received = sum(p.stat().st_size for p in (dest / ".coral").rglob("*") if p.is_file())
        repo.close()
    else:
        local = dest / "newest.pt"
        dest.mkdir(parents=True, exist_ok=True)
        side.download(f"{prefix}/ckpt-{CHECKPOINTS - 1}.pt", local)
        state = torch.load(local, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        seconds = time.perf_counter() - t0
        received = local.stat().st_size
    return {"seconds": seconds, "bytes": received, "digest": digest(model)}


def drop_caches() -> None:
    with contextlib.suppress(OSError):
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def resume_in_new_process(which: str, spec: dict[str, str], prefix: str, dest: Path) -> dict[str, object]:
    drop_caches()
    out = subprocess.run(
        [sys.executable, __file__, "--resume-child", which, json.dumps(spec), prefix, str(dest)],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# ---- the run ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def remote_side(use_s3: bool, work: Path) -> Iterator[dict[str, str]]:
    if not use_s3:
        yield {"kind": "folder", "root": str(work / "remotes")}
        return
    from coral.testing.s3 import create_bucket, moto_process, s3_environment

    with moto_process() as endpoint:
        os.environ.update(s3_environment(endpoint))
        yield {"kind": "s3", "bucket": create_bucket(endpoint)}


def cell(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s3", action="store_true", help="start a moto S3 server and use one bucket of it")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coral-remote-bench-"))
    load = [os.getloadavg()[0]]
    try:
        with remote_side(args.s3, work) as spec:
            side = make_side(spec)
            push: dict[str, list[tuple[float, int]]] = {"coral": [], "torch": []}
            for r in range(args.rounds):
                order = ("coral", "torch") if r % 2 == 0 else ("torch", "coral")
                for which in order:
                    run = run_coral if which == "coral" else run_torch
                    push[which].append(run(side, work, f"{which}-{r}"))
                load.append(os.getloadavg()[0])
            resume: dict[str, list[dict[str, object]]] = {"coral": [], "torch": []}
            for r in range(args.rounds):
                order = ("coral", "torch") if r % 2 == 0 else ("torch", "coral")
                for which in order:
                    dest = work / f"new-machine-{which}-{r}"
                    resume[which].append(resume_in_new_process(which, spec, f"{which}-0", dest))
                    shutil.rmtree(dest, ignore_errors=True)
                load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    where = "moto S3 server on 127.0.0.1" if args.s3 else "local folders"
    same = {str(x["digest"]) for v in resume.values() for x in v}
    c_push, t_push = [s for s, _ in push["coral"]], [s for s, _ in push["torch"]]
    c_res, t_res = [float(x["seconds"]) for x in resume["coral"]], [float(x["seconds"]) for x in resume["torch"]]
    c_bytes, t_bytes = push["coral"][0][1], push["torch"][0][1]
    print(f"\nRemote: {where}; {args.rounds} interleaved rounds; load average (1 min) "
          f"{min(load):.1f}-{max(load):.1f} during the run; restored weights identical: {len(same) == 1}\n")
    print("| What | Bytes sent | Wall time, s: median (min-max) | Coral / torch |")
    print("|---|---|---|---|")
    print(f"| Coral: {CHECKPOINTS} checkpoints, push after each | {c_bytes / MIB:.1f} MiB | {cell(c_push)} "
          f"| {statistics.median(c_push) / statistics.median(t_push):.2f}x time, {c_bytes / t_bytes:.2f}x bytes |")
    print(f"| torch.save + s3fs upload of {CHECKPOINTS} files | {t_bytes / MIB:.1f} MiB | {cell(t_push)} | |")
    c_recv, t_recv = int(resume["coral"][0]["bytes"]), int(resume["torch"][0]["bytes"])
    print(f"| resume, new process: clone --depth 1 + load | {c_recv / MIB:.1f} MiB | {cell(c_res)} "
          f"| {statistics.median(c_res) / statistics.median(t_res):.2f}x time |")
    print(f"| resume, new process: download newest file + torch.load | {t_recv / MIB:.1f} MiB | {cell(t_res)} | |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--resume-child":
        print(json.dumps(resume_child(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))))
    else:
        main()
