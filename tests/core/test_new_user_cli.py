"""Issue 28, what a new user hit on the command line: import twice, diff order and figures, fsck after one
flipped byte, a damaged chunk, and export errors that name the user's path."""

from __future__ import annotations

import os
from pathlib import Path

import coral
import numpy as np
import pytest
from coral.cli.main import main
from coral.errors import CorruptObjectError, NothingChangedError
from coral.interchange import export_commit, import_file
from coral.objects.tensors import chunk_key


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = coral.Repository(tmp_path / "repo", init=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        r.stage_weights({
            "layers.10.weight": rng.standard_normal((64, 64)).astype(np.float32),
            "layers.2.weight": rng.standard_normal((64, 64)).astype(np.float32),
            "bias": np.arange(4, dtype=np.float32) + i,
            "state/10": np.arange(3, dtype=np.int64) + i,
            "state/2": np.arange(3, dtype=np.uint32) + i,
        })
        r.commit(f"c{i}", pack=False)  # the damage tests below rely on the unpacked layout (shared raw packs)
    return r


def test_import_same_file_twice_says_nothing_changed(repo, tmp_path, capsys):
    export_commit(repo, "HEAD", tmp_path / "w.safetensors")
    os.chdir(repo.path)
    head = repo.head_commit()
    code, out, err = cli(capsys, "import", str(tmp_path / "w.safetensors"))
    assert code == 1 and out.startswith("Nothing changed") and "--allow-empty" in out, (out, err)
    assert coral.Repository(repo.path).head_commit() == head
    code, out, _ = cli(capsys, "import", str(tmp_path / "w.safetensors"), "--allow-empty")
    assert code == 0 and out.startswith("Imported 5 tensors")
    fresh = coral.Repository(repo.path)
    assert fresh.head_commit() != head and fresh.diff(head, "HEAD")["identical"]
    with pytest.raises(NothingChangedError):
        import_file(fresh, tmp_path / "w.safetensors")


def test_export_import_round_trip_stores_no_new_chunk(repo, tmp_path):
    def chunks() -> set[str]:
        return set(repo.store.list("chunks/"))

    before = chunks()
    export_commit(repo, "HEAD", tmp_path / "w.safetensors")
    cid = import_file(repo, tmp_path / "w.safetensors", allow_empty=True)
    assert repo.diff("HEAD~1", cid)["identical"] and chunks() == before


def test_diff_natural_order_and_figures_only_for_floats(repo, capsys):
    os.chdir(repo.path)
    result = repo.diff("HEAD~1", "HEAD")
    assert result["changed"] == ["bias", "layers.2.weight", "layers.10.weight", "state/2", "state/10"]
    assert set(result["stats"]) == {"bias", "layers.2.weight", "layers.10.weight"}
    code, out, _ = cli(capsys, "diff", "HEAD~1", "HEAD")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("changed")]
    assert [r[1] for r in rows] == ["bias", "layers.2.weight", "layers.10.weight", "state/2", "state/10"]
    for r in rows:
        assert (r[2] == "-") == r[1].startswith("state/"), r


def test_diff_gives_no_figures_for_a_float_scalar_such_as_adams_step(tmp_path, capsys):
    # torch's Adam keeps `step` as a float32 0-d tensor: a counter, not a weight (its cosine is always 1)
    r = coral.Repository(tmp_path / "r", init=True)
    for i in range(2):
        r.stage_weights({
            "layer.weight": np.arange(8, dtype=np.float32) * (i + 1),
            "optim/state/0/step": np.array(8.0 * (i + 1), dtype=np.float32),
            "scale": np.array([2.0**i], dtype=np.float32),
        })
        r.commit(f"c{i}")
    result = r.diff("HEAD~1", "HEAD")
    assert result["changed"] == ["layer.weight", "optim/state/0/step", "scale"]
    assert set(result["stats"]) == {"layer.weight"}
    os.chdir(r.path)
    code, out, _ = cli(capsys, "diff", "HEAD~1", "HEAD")
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.startswith("changed")}
    assert code == 0 and rows["optim/state/0/step"] == ["-", "-", "-"] and rows["scale"] == ["-", "-", "-"], out


def _flip_byte(repo: coral.Repository, chunk: str) -> None:
    path = Path(repo.path) / ".coral" / "objects" / chunk_key(chunk)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_fsck_reports_each_damaged_object_once_then_a_summary(repo, capsys):
    # the first commit's float32 pack (bias, layers.*.weight: 16 KiB or less each): one object, one commit,
    # three tensors -> one line, not one per tensor
    first = repo.log()[-1].hash
    chunk = repo.get_commit(first).tree["layers.2.weight"].chunks[0]
    _flip_byte(repo, chunk)
    os.chdir(repo.path)
    code, out, err = cli(capsys, "fsck")
    assert code == 1
    damaged = [line for line in out.splitlines() if line.startswith("damaged: ")]
    assert len(damaged) == 1 and chunk[:16] in damaged[0] and first[:12] in damaged[0]
    assert "3 tensor(s)" in damaged[0] and "'layers.2.weight'" in damaged[0]
    summary = err.strip().splitlines()
    assert len(summary) == 1 and "1 damaged object(s) affecting 1 commit(s)" in summary[0]
    doc = coral.Repository(repo.path).fsck()
    assert doc["damaged_objects"] == [
        {"object": chunk, "problem": doc["damaged_objects"][0]["problem"], "commits": [first],
         "tensors": ["bias", "layers.2.weight", "layers.10.weight"], "dependents": []}  # natural order, as diff
    ]


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_fsck_names_a_damaged_delta_base_once_not_the_deltas_that_depend_on_it(tmp_path, capsys, damage):
    r = coral.Repository(tmp_path / "r", init=True)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)  # 64 KiB: its own chunk, not a pack
    for i in range(3):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        r.commit_weights({"big": w}, f"c{i}")
    r.wait()  # background packing turns the older chunks into deltas on the newest
    commits = [c.hash for c in r.log()]
    chunks = [r.get_commit(c).tree["big"].chunks[0] for c in commits]
    base = chunks[0]
    older = [c for c in chunks[1:] if base in list(r.objects.chain(c))]
    assert older, "packing stored no delta on the newest chunk"
    if damage == "flip":
        _flip_byte(r, base)
    else:
        (Path(r.path) / ".coral" / "objects" / chunk_key(base)).unlink()
    os.chdir(r.path)
    code, out, err = cli(capsys, "fsck")
    damaged = [line for line in out.splitlines() if line.startswith("damaged: ")]
    assert code == 1 and len(damaged) == 1, out
    assert damaged[0].startswith(f"damaged: object {base[:16]}:") and "3 commit(s)" in damaged[0], damaged[0]
    assert f"through {len(older)} intact delta(s) that need it" in damaged[0], damaged[0]
    assert damage == "flip" or f"chunk {base} is missing" in damaged[0]
    assert "1 damaged object(s) affecting 3 commit(s)" in err
    doc = coral.Repository(r.path).fsck()
    assert [d["object"] for d in doc["damaged_objects"]] == [base]
    assert sorted(doc["damaged_objects"][0]["dependents"]) == sorted(older)


def _flip_byte_of(repo: coral.Repository, name: str, commit: str) -> None:
    """Flip one byte inside ``name``'s own bytes (for a packed tensor: its range of the shared pack)."""
    entry = repo.get_commit(commit).tree[name]
    chunk = entry.chunks[0]
    path = Path(repo.path) / ".coral" / "objects" / chunk_key(chunk)
    data = bytearray(path.read_bytes())
    head = repo.objects.header(chunk)
    data[head.body + (entry.offset or 0) + 5] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_damaged_chunk_leaves_the_other_tensors_loadable(repo):
    first = repo.log()[-1].hash
    tree = repo.get_commit(first).tree
    assert tree["layers.2.weight"].chunks[0] == tree["bias"].chunks[0]  # they share one pack
    _flip_byte_of(repo, "layers.2.weight", first)
    fresh = coral.Repository(repo.path)
    weights = fresh.get_weights(first)
    assert weights["layers.10.weight"].data.shape == (64, 64) and weights["bias"].data[0] == 0
    others = fresh.load_arrays(first, names=["layers.10.weight", "bias", "state/2"])
    assert sorted(others) == ["bias", "layers.10.weight", "state/2"]
    with pytest.raises(CorruptObjectError, match="layers.2.weight"):
        _ = weights["layers.2.weight"].data
    with pytest.raises(CorruptObjectError, match="layers.2.weight"):  # a whole-state load still refuses
        fresh.load_arrays(first)


def test_export_errors_name_the_users_path_in_one_line(repo, tmp_path, capsys):
    os.chdir(repo.path)
    (tmp_path / "afile").write_text("x")
    code, _, err = cli(capsys, "export", "HEAD", str(tmp_path / "afile" / "out.safetensors"))
    line = one_line_error(code, err, str(tmp_path / "afile" / "out.safetensors"), "is a file, not a folder")
    assert ".tmp" not in line and "Errno" not in line
    code, _, err = cli(capsys, "export", "HEAD", "/proc/self/coral-nope/out.safetensors")
    one_line_error(code, err, "/proc/self/coral-nope/out.safetensors", "not writable")
    code, _, err = cli(capsys, "export", "HEAD", str(tmp_path / "afile"), "--format", "hf")
    one_line_error(code, err, str(tmp_path / "afile"), "is a file")
    assert not list(tmp_path.glob("**/.coral-export-probe-*"))
