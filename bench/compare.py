"""Coral against what each framework's users would pick instead, inside one real training job per framework.

`make bench-compare` runs `python bench/compare.py` and rewrites the marked section of BENCHMARKS.md.
Each job checkpoints every K steps (10 checkpoints) with one alternative; every alternative of a framework
runs in the same invocation, interleaved (the order rotates per repeat) so machine noise hits all alike.
Every cell (train, restore latest, restore checkpoint 5, restore the best where it is neither, retention,
resume) is its own process: peak RSS is that process's own, and the page cache is dropped (`sync; echo 3 >
/proc/sys/vm/drop_caches`, root only; else the table says "warm") before each restoring process starts.

Run time on 2 cores: the whole default run (every framework and case, 2 repeats) took 66 min on 2026-12-07
with the best restore (one more restore process per job whose best is not the latest or checkpoint 5), on
a machine running ~1.5x slower than the quiet one where it took 57 min without it. The bf16 case runs at batch 8 with a
checkpoint every 2 steps (``CASE_DEFAULTS``), because a bf16 step on a CPU without bf16 matrix units is ~25x
an fp32 step (at batch 64 it would add about 1.5 hours).
`--quick` (tiny models, 1 repeat, printed instead of written unless `--output` is given) is a smoke run:
its figures mean nothing, and it still starts ~6 processes per job (about 10 min for all four frameworks
on a quiet machine, as long for torch fp32 alone at load 4-5; the test suite runs `--quick --frameworks
torch --cases fp32 --only torch.save,coral`).
Options (`--help` lists them): `--frameworks torch,lightning,hf,jax`, `--cases fp32,bf16,frozen90`,
`--only ALT,...`, `--repeats N`, `--batch B` (64, bf16 8; the PyTorch, Lightning and JAX jobs), `--every N`
(steps between checkpoints, 10, bf16 2), `--output FILE` (default BENCHMARKS.md, with `--quick` none; `-`
prints only), `--json FILE` (raw results), `--workdir DIR`, `--cell-timeout S`. A bad value stops the run at
once with one line naming it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- bench/compare.py: begin (generated, replaced by each run) -->", "<!-- bench/compare.py: end -->"
MODULES = {"torch": "_compare_torch", "lightning": "_compare_lightning", "hf": "_compare_hf", "jax": "_compare_jax"}
CASES = {"torch": ["fp32", "bf16", "frozen90"], "lightning": ["fp32"], "hf": ["fp32"], "jax": ["fp32"]}
CASE_TITLES = {"fp32": "fp32, weights + AdamW state", "bf16": "bf16 model and AdamW state",
               "frozen90": "fine-tune, 90% of the weights frozen"}
# A bf16 step on a CPU without bf16 matrix units is ~25x an fp32 step: the bf16 case runs at batch 8 with a
# checkpoint every 2 steps unless --batch / --every are given (9 min instead of ~1.5 h; the state saved, the
# alternatives and the columns are the same)
CASE_DEFAULTS = {"bf16": {"batch": 8, "every": 2}}
ALL_ALTS = ["torch.save", "safetensors", "dcp", "dcp-async", "coral", "coral-async", "modelcheckpoint",
            "modelcheckpoint-async", "trainer", "orbax", "orbax-async"]


# ---- the machine ---------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("coral-core", "torch", "pytorch-lightning", "transformers", "safetensors", "jax", "orbax-checkpoint",
                 "optax"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def drop_caches() -> bool:
    """Cold page cache for the next process (root only): False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ---- one cell ------------------------------------------------------------------------------------------------
def run_cell(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
               TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(HERE / "compare.py"), "--cell", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}


def cell_main(raw: str) -> None:
    spec = json.loads(raw)
    sys.path.insert(0, str(HERE))
    if spec.get("every"):  # --every: checkpoint every N steps instead of the size's default
        importlib.import_module("_compare_common").SIZES[spec["size"]]["every"] = spec["every"]
    importlib.import_module(MODULES[spec["fw"]]).run(spec)


# ---- the plan ------------------------------------------------------------------------------------------------
def alternatives(fw: str, case: str, only: list[str] | None) -> tuple[list[str], dict[str, str]]:
    sys.path.insert(0, str(HERE))
    mod = importlib.import_module(MODULES[fw])
    alts = list(mod.CASE_ALTERNATIVES[case])
    if only is not None:  # in the order given, after the no-checkpoint job
        alts = ["none", *[a for a in only if a in alts and a != "none"]]
    return alts, mod.LABELS


def case_settings(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """The batch and checkpoint spacing of a case: what the command line gave, else the case's default."""
    fallback = CASE_DEFAULTS.get(case, {}) if not args.quick else {}
    return {"batch": args.batch if args.batch is not None else fallback.get("batch", 64),
            "every": args.every if args.every is not None else fallback.get("every")}


def run_all(args: argparse.Namespace, work: Path, log: list[float], done: Any = None) -> dict[str, Any]:
    size = "quick" if args.quick else "full"
    only = args.only.split(",") if args.only else None
    results: dict[str, Any] = {}
    cold = True
    # every framework's fp32 job first, then the extra cases: a run cut short still covers each framework
    plan = [(fw, case) for case in ("fp32", "bf16", "frozen90") for fw in args.frameworks.split(",")
            if case in CASES[fw] and case in args.cases.split(",")]
    for fw, case in plan:
        alts, labels = alternatives(fw, case, only)
        key = f"{fw}/{case}"
        results[key] = {"fw": fw, "labels": labels, "alts": alts, "runs": {a: [] for a in alts},
                        "settings": case_settings(case, args)}
        for rep in range(args.repeats):
            order = alts[rep % len(alts):] + alts[: rep % len(alts)]
            for alt in order:
                folder = work / f"{fw}-{case}-{alt}-{rep}"
                shutil.rmtree(folder, ignore_errors=True)
                spec = {"fw": fw, "case": case, "alt": alt, "size": size, "dir": str(folder),
                        **case_settings(case, args)}
                t = time.perf_counter()
                run: dict[str, Any] = {"train": run_cell({**spec, "phase": "train"}, args.cell_timeout)}
                if alt != "none" and "error" not in run["train"]:
                    for which in ("latest", "older"):
                        cold = drop_caches() and cold
                        run[which] = run_cell({**spec, "phase": "restore", "which": which}, args.cell_timeout)
                    run["best"] = restore_best(spec, run, args.cell_timeout)
                    cold = cold and run["best"].pop("_cold", True)
                    if rep == 0:  # bytes and exactness do not change with the repeat
                        run["retain"] = run_cell({**spec, "phase": "retain"}, args.cell_timeout)
                        run["resume"] = run_cell({**spec, "phase": "resume"}, args.cell_timeout)
                results[key]["runs"][alt].append(run)
                log.append(os.getloadavg()[0])
                errs = [f"{k}: {v['error']}" for k, v in run.items() if "error" in v]
                print(f"{key:18s} rep {rep} {alt:14s} {time.perf_counter() - t:6.1f} s  load {log[-1]:.1f}"
                      + (f"  ERRORS {errs}" if errs else ""), flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                results["_cold"] = cold
                if done is not None:  # the table so far, so a run cut short still leaves its finished jobs
                    done(results)
    results["_cold"] = cold
    return results


def best_step(train: dict[str, Any]) -> int | None:
    """The checkpoint with the lowest held-out loss in a train cell's result (the first of equals), or None."""
    val = train.get("val") or {}
    return int(min(val, key=lambda k: (val[k], int(k)))) if val else None


def restore_best(spec: dict[str, Any], run: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Restore the best checkpoint (lowest held-out loss) in a new process. Where it is the latest or checkpoint
    5, that restore is the same work already timed: its figure is reused (``same_as``), not re-measured.
    Coral's PyTorch cells always run it: they ask Coral for its own best (``load_best=True``)."""
    step = best_step(run["train"])
    if step is None:
        return {"error": "the train cell reported no held-out losses"}
    coral_api = spec["fw"] == "torch" and spec["alt"].startswith("coral")
    for which in ("latest", "older"):
        got = run.get(which, {})
        if not coral_api and got.get("step") == step and "restore_s" in got:
            return {**got, "same_as": which}
    cold = drop_caches()
    return {**run_cell({**spec, "phase": "restore", "which": "best", "step": step}, timeout), "_cold": cold}


# ---- the table -----------------------------------------------------------------------------------------------
def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def summarize(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per alternative: lists of figures over the repeats (overhead against the same repeat's no-checkpoint run)."""
    runs = entry["runs"]
    base = [r["train"].get("wall_s") for r in runs.get("none", [])]
    out: dict[str, dict[str, Any]] = {}
    for alt, rs in runs.items():
        s: dict[str, Any] = {"blocked": [], "wall": [], "overhead": [], "latest": [], "older": [], "best": [],
                             "best_same": [], "rss": [],
                             "bytes_10": None, "bytes_3": None, "restore_exact": None, "resume_exact": None,
                             "errors": []}
        for i, r in enumerate(rs):
            tr = r["train"]
            s["errors"] += [f"{k}: {v['error']}" for k, v in r.items() if "error" in v]
            if "error" in tr:
                continue
            s["wall"].append(tr["wall_s"])
            s["rss"].append(tr["peak_rss_mib"])
            if tr["blocked_s"]:
                s["blocked"].append(statistics.median(tr["blocked_s"]))
            if i < len(base) and base[i]:
                s["overhead"].append(100 * (tr["wall_s"] / base[i] - 1))
            if alt == "none":
                continue
            s["bytes_10"] = tr["bytes_10"]
            exact = s["restore_exact"] if s["restore_exact"] is not None else True
            for which in ("latest", "older", "best"):
                got = r.get(which, {})
                if "restore_s" in got:
                    s[which].append(got["restore_s"])
                    exact = exact and got["digest"] == tr["digests"][str(got["step"])]
                else:
                    exact = False
            if "best" in r:
                s["best_same"].append(r["best"].get("same_as"))
                if r["best"].get("step") != best_step(tr):  # the tool's best is not the lowest held-out loss
                    s["errors"].append(f"best: restored step {r['best'].get('step')}, lowest held-out loss at "
                                       f"step {best_step(tr)}")
            s["restore_exact"] = exact
            if "retain" in r and "bytes_3" in r["retain"]:
                s["bytes_3"] = r["retain"]["bytes_3"]
            if "resume" in r:
                res = r["resume"]
                s["resume_exact"] = "digest" in res and res["digest"] == tr["digests"][str(res["step"])]
        out[alt] = s
    return out


def verdict(stats: dict[str, dict[str, Any]]) -> str:
    """Coral's best variant against the best other alternative, per column; 'NOT ahead' where it is not."""
    coral = [a for a in stats if a.startswith("coral")]
    others = [a for a in stats if not a.startswith("coral") and a != "none"]
    if not coral or not others:
        return ""
    cols = [("blocked per checkpoint", "blocked"), ("job overhead", "overhead"), ("stored, 10", "bytes_10"),
            ("stored, last 3", "bytes_3"), ("restore latest", "latest"), ("restore best", "best"),
            ("restore checkpoint 5", "older"),
            ("peak RSS", "rss")]
    parts = []
    for title, key in cols:
        def value(a: str, key: str = key) -> float | None:
            v = stats[a][key]
            if isinstance(v, list):
                return statistics.median(v) if v else None
            return v

        cv = [(value(a), a) for a in coral if value(a) is not None]
        ov = [(value(a), a) for a in others if value(a) is not None]
        if not cv or not ov:
            continue
        (c, ca), (o, oa) = min(cv), min(ov)
        verdict = "ahead" if c <= o else "**NOT ahead**"
        if fmt_value(key, c) == fmt_value(key, o) or overlap(stats[ca][key], stats[oa][key]):
            # inside the noise of these repeats (or equal as printed): neither side wins
            verdict = "a tie (equal as printed)" if fmt_value(key, c) == fmt_value(key, o) else \
                "a tie (the min-max ranges overlap)"
        parts.append(f"{title}: {verdict} ({ca} {fmt_value(key, c)} vs {oa} {fmt_value(key, o)})")
    exact = [a for a in coral if stats[a]["restore_exact"] is False or stats[a]["resume_exact"] is False]
    if exact:
        parts.append(f"**not bit-exact**: {', '.join(exact)}")
    if not parts:
        return ""
    return "Coral (best of its variants) against the best alternative: " + "; ".join(parts) + "."


def overlap(a: Any, b: Any) -> bool:
    """True when two lists of repeats span overlapping ranges (scalars, e.g. stored bytes, never overlap)."""
    if not isinstance(a, list) or not isinstance(b, list) or len(a) < 2 or len(b) < 2:
        return False
    return min(a) <= max(b) and min(b) <= max(a)


def fmt_value(key: str, v: float) -> str:
    if key in ("bytes_10", "bytes_3"):
        return mib(v)
    if key == "overhead":
        return f"{v:+.0f}%"
    if key == "rss":
        return f"{v:.0f} MiB"
    return f"{v:.3f} s"


def same_note(same: list[str | None]) -> str:
    """' (= latest)' where every repeat's best was the checkpoint another column already timed."""
    if same and all(x is not None for x in same) and len(set(same)) == 1:
        return " (= latest)" if same[0] == "latest" else " (= checkpoint 5)"
    return ""


def best_line(entry: dict[str, Any]) -> str:
    """Which checkpoint was the best, by the held-out loss every job logs at its checkpoint steps."""
    firsts = [r["train"] for rs in entry["runs"].values() for r in rs if r["train"].get("val")]
    if not firsts:
        return "Best: no held-out losses were recorded."
    steps = sorted(int(k) for k in firsts[0]["val"])
    picked = sorted({best_step(t) for t in firsts})
    names = ", ".join(f"checkpoint {steps.index(p) + 1} of {len(steps)} (step {p})" for p in picked)
    coral_torch = entry.get("fw") == "torch" and any(a.startswith("coral") for a in entry["alts"])
    own = (" Coral's `Checkpointer` is asked for its own best (`save_on_best_metric=\"val_loss\"`, "
           "`load_checkpoint(load_best=True)`), timed in its own process." if coral_torch else "")
    where = ("the latest here: that restore is already timed, so its figure is reused." if picked == [steps[-1]]
             else "restored in its own new process unless it is the latest or checkpoint 5 (figure reused).")
    return ("Best = the checkpoint with the lowest loss on a fixed held-out batch, logged at each checkpoint step "
            f"outside every timing: {names}, {where}{own} Checkpoint 5 stands for a best that is not the newest "
            "(early stopping, a fine-tune that starts to overfit).")


def yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "**no**")


def table(key: str, entry: dict[str, Any], cold: bool) -> str:
    fw, case = key.split("/")
    stats = summarize(entry)
    first = next((r["train"] for rs in entry["runs"].values() for r in rs if "params" in r["train"]), {})
    head = f"### {fw}: {CASE_TITLES[case]}"
    settings = entry.get("settings") or {}
    if case in CASE_DEFAULTS and settings:
        head += f", batch {settings['batch']}, a checkpoint every {settings['every'] or 10} steps"
    if first:
        n = first["params"]
        count = f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"
        weights = f"{first['state_mib']:.0f} MiB" if first["state_mib"] >= 1 else f"{first['state_mib'] * 1024:.0f} KiB"
        head += f" ({count} parameters, {weights} of weights)"
    cache = "cold" if cold else "warm (not root: page cache not dropped)"
    lines = [head, "",
             f"| alternative | blocked per checkpoint | job wall time (overhead vs none) | stored, 10 checkpoints "
             f"| stored, last 3 kept | restore latest ({cache}) | restore best ({cache}) "
             f"| restore checkpoint 5 ({cache}) | peak RSS (train) | restore bit-exact | resumed run bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for alt in entry["alts"]:
        s = stats[alt]
        wall = spread(s["wall"], "{:.1f}") + " s"
        if alt != "none" and s["overhead"]:
            wall += f" ({spread(s['overhead'], '{:+.0f}')}%)"
        row = [entry["labels"].get(alt, alt),
               spread(s["blocked"], "{:.3f}") + (" s" if s["blocked"] else ""),
               wall if s["wall"] else "-",
               mib(s["bytes_10"]) if s["bytes_10"] is not None else "-",
               mib(s["bytes_3"]) if s["bytes_3"] is not None else "-",
               spread(s["latest"], "{:.3f}") + (" s" if s["latest"] else ""),
               spread(s["best"], "{:.3f}") + (" s" if s["best"] else "") + same_note(s["best_same"]),
               spread(s["older"], "{:.3f}") + (" s" if s["older"] else ""),
               spread(s["rss"], "{:.0f}") + " MiB" if s["rss"] else "-",
               yn(s["restore_exact"]), yn(s["resume_exact"])]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += [best_line(entry), ""]
    v = verdict(stats)
    if v:
        lines += [v, ""]
    errors = [f"{a}: {e}" for a in entry["alts"] for e in stats[a]["errors"]]
    if errors:
        lines += ["Errors: " + "; ".join(sorted(set(errors))[:8]), ""]
    return "\n".join(lines)


def section(results: dict[str, Any], info: dict[str, Any], args: argparse.Namespace, loads: list[float],
            elapsed: float, final: bool = True) -> str:
    v = info["versions"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [BEGIN, "",
             f"Run of {when}: `python bench/compare.py --repeats {args.repeats} --frameworks {args.frameworks}"
             + (f" --batch {args.batch}" if args.batch is not None else "")
             + (f" --every {args.every}" if args.every is not None else "")
             + (f" --only {args.only}" if args.only else "")
             + (f" --cases {args.cases}" if args.cases != "fp32,bf16,frozen90" else "")
             + (" --quick" if args.quick else "") + f"`, {elapsed / 60:.1f} min"
             + ("" if final else " so far (**unfinished**: the run was still going)") + f". Machine: {info['cpu']}, "
             f"{info['cores']} cores, load average {min(loads):.1f}-{max(loads):.1f} during the run "
             f"(sampled after each job). Python {info['python']}; "
             + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
             "",
             "Each figure is the median over the repeats with (min-max); every job is the same training run "
             "with one alternative, the alternatives interleaved. Blocked = the time the training loop waits "
             "per checkpoint (median of the 10 in a job). Overhead = the job's wall time (first step to the "
             "last byte durable) against the same job without checkpoints in the same repeat. Stored = every "
             "file the alternative left. Restores run in a new process, after the page cache was dropped, and "
             "load weights + optimizer (+ scheduler) into the live objects. Bit-exact = every tensor of the "
             "restored state equals the saved one; resumed = a new process loads checkpoint 9, trains on to "
             "checkpoint 10's step and must end on exactly checkpoint 10's state.", ""]
    for key, entry in results.items():
        if not key.startswith("_"):
            lines += [table(key, entry, results["_cold"]), ""]
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        title = "## Against the alternatives (bench/compare.py)"
        doc = doc.rstrip("\n") + f"\n\n{title}\n\n" + text + "\n"
    path.write_text(doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny models, 1 repeat, printed only unless --output is given")
    p.add_argument("--frameworks", default="torch,lightning,hf,jax", help="comma-separated: " + ", ".join(MODULES))
    p.add_argument("--cases", default="fp32,bf16,frozen90",
                   help="comma-separated: fp32, bf16, frozen90 (bf16 and frozen90 are PyTorch only)")
    p.add_argument("--only", default=None,
                   help="comma-separated alternatives (the no-checkpoint job always runs): " + ", ".join(ALL_ALTS))
    p.add_argument("--repeats", type=int, default=None, help="repeats per alternative (default 2; --quick 1)")
    p.add_argument("--every", type=int, default=None, help="steps between checkpoints (default 10; bf16 2; --quick 2)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the PyTorch, Lightning and JAX jobs (default 64; the bf16 case 8)")
    p.add_argument("--output", default=None,
                   help="Markdown file whose marked section is rewritten (default BENCHMARKS.md; with --quick, "
                        "none); - prints only")
    p.add_argument("--json", default=None, help="write the raw results here")
    p.add_argument("--workdir", default=None, help="folder for the jobs' files (default: a temporary one)")
    p.add_argument("--cell-timeout", type=float, default=900.0, help="seconds per cell (default 900)")
    args = p.parse_args()
    if args.cell:
        cell_main(args.cell)
        return
    for fw in args.frameworks.split(","):
        if fw not in MODULES:
            p.error(f"--frameworks: unknown framework {fw!r} (known: {', '.join(MODULES)})")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.repeats < 1:
        p.error(f"--repeats: must be at least 1, got {args.repeats}")
    for name in ("every", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    known_cases = sorted({c for cs in CASES.values() for c in cs})
    for case in args.cases.split(","):
        if case not in known_cases:
            p.error(f"--cases: unknown case {case!r} (known: {', '.join(known_cases)})")
    if not any(c in CASES[fw] for fw in args.frameworks.split(",") for c in args.cases.split(",")):
        p.error(f"--cases: {args.cases!r} has no job for --frameworks {args.frameworks!r} "
                "(bf16 and frozen90 are PyTorch only)")
    if args.only:
        offered = {a for fw in args.frameworks.split(",") for a in alternatives(fw, "fp32", None)[0]}
        for alt in args.only.split(","):
            if alt not in offered:
                p.error(f"--only: {alt!r} is not an alternative of --frameworks {args.frameworks} "
                        f"(known: {', '.join(sorted(offered - {'none'}))})")
    if args.output is None:
        args.output = "-" if args.quick else str(HERE.parent / "BENCHMARKS.md")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average {os.getloadavg()}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), flush=True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="coral-compare-"))
    loads = [os.getloadavg()[0]]
    t0 = time.perf_counter()

    def publish(results: dict[str, Any], final: bool = False) -> None:
        text = section(results, info, args, loads, time.perf_counter() - t0, final)
        if final:
            print(text)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str))
        if args.output != "-":
            write_section(Path(args.output), text)

    try:
        results = run_all(args, work, loads, publish)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    publish(results, final=True)


if __name__ == "__main__":
    main()
