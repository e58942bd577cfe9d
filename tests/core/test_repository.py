"""The Repository API: open/init, commits and log, branches, checkout of every ref form, tags, lazy
loading, diff, name safety and stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from coral import Repository, WeightTensor
from coral.errors import (
    AmbiguousRefError,
    CoralError,
    InvalidArgumentError,
    InvalidNameError,
    RefExistsError,
    RefNotFoundError,
    RepositoryNotFoundError,
    UnmergedBranchError,
)
from coral.store import LocalStore, MemoryStore


def weights(seed: int, n: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "encoder.weight": rng.standard_normal((n, 4)).astype(np.float32),
        "encoder.bias": rng.standard_normal(4).astype(np.float32),
        "step": np.array(seed, dtype=np.int64),
    }


def commit(repo: Repository, seed: int, message: str | None = None, **meta) -> str:
    repo.stage_weights(weights(seed))
    return repo.commit(message or f"seed {seed}", meta or None)


@pytest.fixture
def repo(tmp_path):
    with Repository(tmp_path / "repo", init=True) as r:
        yield r


# ---- open / init -------------------------------------------------------------------------------------------


def test_init_creates_and_plain_open_reopens(tmp_path):
    path = tmp_path / "model"
    with Repository(path, init=True) as r:
        assert (path / ".coral").is_dir()
        assert r.current_branch == "main" and r.log() == [] and r.head_commit() is None
        h = commit(r, 1)
    with Repository(path) as again:
        assert again.head_commit() == h
    with Repository(str(path), init=True) as again:  # init=True on an existing repository keeps its history
        assert [c.hash for c in again.log()] == [h]
    with Repository(f"file://{path}") as again:
        assert again.head_commit() == h


def test_opening_a_folder_that_is_not_a_repository_raises_naming_it(tmp_path):
    plain = tmp_path / "just-a-folder"
    plain.mkdir()
    with pytest.raises(RepositoryNotFoundError, match="just-a-folder") as err:
        Repository(plain)
    assert "init=True" in str(err.value)
    assert not (plain / ".coral").exists()
    with pytest.raises(RepositoryNotFoundError):
        Repository(tmp_path / "does-not-exist")
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="weights.bin"):
        Repository(afile, init=True)


def test_find_walks_up_to_the_repository(repo, tmp_path):
    deep = repo.path / "a" / "b"
    deep.mkdir(parents=True)
    assert Repository.find(deep).path == repo.path
    with pytest.raises(RepositoryNotFoundError):
        Repository.find(tmp_path)


# ---- commits and log ---------------------------------------------------------------------------------------


def test_commit_and_log_newest_first_with_metadata(repo):
    h1 = commit(repo, 1, "first", loss=0.5, epoch=1)
    h2 = commit(repo, 2, "second", loss=float("nan"), nested={"lr": [1e-3, np.float32(0.5)], "ok": True})
    assert len(h1) == 64 and all(c in "0123456789abcdef" for c in h1)
    log = repo.log()
    assert [c.hash for c in log] == [h2, h1]
    assert log[0].parents == [h1] and log[1].parents == []
    assert log[1].message == "first" and log[1].metadata == {"loss": 0.5, "epoch": 1}
    assert math.isnan(log[0].metadata["loss"])
    assert log[0].metadata["nested"] == {"lr": [1e-3, 0.5], "ok": True}
    assert log[0].num_tensors == 3 and log[0].nbytes == 32 * 4 * 4 + 4 * 4 + 8
    assert log[0].short_hash == h2[:8]
    assert [c.hash for c in repo.log(limit=1)] == [h2]
    assert repo.log(limit=0) == []
    with pytest.raises(InvalidArgumentError, match="limit"):
        repo.log(limit=-1)


def test_commit_needs_staged_weights_and_a_string_message(repo):
    with pytest.raises(CoralError, match="stage"):
        repo.commit("nothing staged")
    repo.stage_weights(weights(1))
    with pytest.raises(InvalidArgumentError, match="message"):
        repo.commit(None)
    with pytest.raises(InvalidArgumentError, match="metadata"):
        repo.commit("arrays are tensors, not metadata", {"bad": np.zeros(3)})
    assert repo.commit("ok")
    assert repo.staged == {}  # the commit consumed the staging area


def test_commit_snapshots_exactly_the_staged_tensors(repo):
    repo.stage_weights({"a": np.ones(2, np.float32)})
    repo.stage_weights({"b": np.zeros(2, np.float32)})
    h = repo.commit("a and b")
    assert set(repo.get_weights(h)) == {"a", "b"}
    repo.stage_weights({"c": np.ones(1, np.int8)})
    h2 = repo.commit("only c")
    assert set(repo.get_weights(h2)) == {"c"}


def test_stage_weights_accepts_weight_tensors_and_arrays(repo):
    wt = WeightTensor(np.arange(4, dtype=np.float16), name="x")
    status = repo.stage_weights({"x": wt, "y": np.arange(3, dtype=np.uint8)})
    assert set(status) == {"x", "y"}
    h = repo.commit("mixed")
    assert repo.get_weights(h)["x"] == wt
    with pytest.raises(InvalidArgumentError):
        repo.stage_weights({"z": [1, 2, 3]})
    with pytest.raises(InvalidArgumentError):
        repo.stage_weights(42)


# ---- branches ----------------------------------------------------------------------------------------------


def test_branches_create_switch_list_delete(repo):
    base = commit(repo, 1)
    assert repo.create_branch("feature/x") == base
    assert repo.list_branches() == ["feature/x", "main"]
    with pytest.raises(RefExistsError, match="feature/x"):
        repo.create_branch("feature/x")
    repo.switch("feature/x")
    assert repo.current_branch == "feature/x"
    on_feature = commit(repo, 2)
    assert repo.resolve("feature/x") == on_feature
    assert repo.resolve("main") == base  # main did not move
    assert [c.hash for c in repo.log("feature/x")] == [on_feature, base]
    assert [c.hash for c in repo.log("main")] == [base]
    with pytest.raises(InvalidArgumentError, match="checked out"):
        repo.delete_branch("feature/x")
    repo.checkout("main")
    with pytest.raises(UnmergedBranchError, match="feature/x.*force=True"):
        repo.delete_branch("feature/x")  # git's -d: its commit is on no other branch or tag
    assert repo.list_branches() == ["feature/x", "main"]
    repo.delete_branch("feature/x", force=True)  # git's -D
    assert repo.list_branches() == ["main"]
    repo.create_branch("merged")  # at main's head: reachable from main, so -d deletes it
    repo.delete_branch("merged")
    assert repo.list_branches() == ["main"]
    with pytest.raises(RefNotFoundError, match="feature/x"):
        repo.delete_branch("feature/x")
    with pytest.raises(RefNotFoundError, match="nope"):
        repo.switch("nope")


def test_switch_create_and_branch_from_a_start_ref(repo):
    c1 = commit(repo, 1)
    c2 = commit(repo, 2)
    assert repo.create_branch("from-first", start=c1[:10]) == c1
    repo.switch("exp", create=True)
    assert repo.current_branch == "exp" and repo.head_commit() == c2
    with pytest.raises(RefNotFoundError):
        Repository(repo.path / "empty", init=True).create_branch("x")


@pytest.mark.parametrize("form", ["tag", "full", "short", "HEAD~N", "branch~N"])
def test_checkout_every_ref_form_detaches_at_that_commit(repo, form):
    hashes = [commit(repo, i) for i in range(4)]
    repo.tag_version("v1", commit_ref=hashes[1])
    ref = {"tag": "v1", "full": hashes[1], "short": hashes[1][:7], "HEAD~N": "HEAD~2", "branch~N": "main~2"}[
        form
    ]
    assert repo.resolve(ref) == hashes[1]
    assert repo.checkout(ref) == hashes[1]
    assert repo.current_branch is None and repo.head_commit() == hashes[1]
    assert repo.get_weights()["step"].data == 1  # HEAD now reads the checked-out commit
    detached = commit(repo, 9)  # committing on a detached HEAD moves HEAD, not main
    assert repo.head_commit() == detached and repo.get_commit(detached).parents == [hashes[1]]
    assert repo.resolve("main") == hashes[3]
    repo.switch("main")
    assert repo.current_branch == "main" and repo.head_commit() == hashes[3]


def test_resolve_forms_and_errors_name_the_ref(repo):
    c = [commit(repo, i) for i in range(3)]
    assert repo.resolve() == repo.resolve("HEAD") == c[2]
    assert repo.resolve("HEAD~1") == repo.resolve("HEAD^") == repo.resolve("HEAD~") == c[1]
    assert repo.resolve("HEAD~2") == repo.resolve("HEAD^^") == c[0]
    assert repo.resolve(c[0][:4]) == c[0]
    with pytest.raises(RefNotFoundError, match="HEAD~3"):
        repo.resolve("HEAD~3")
    with pytest.raises(RefNotFoundError, match="no-such-branch"):
        repo.resolve("no-such-branch")
    unknown = "0" * 12 if not any(h.startswith("0" * 12) for h in c) else "f" * 12
    with pytest.raises(RefNotFoundError, match=unknown):
        repo.resolve(unknown)
    with pytest.raises(InvalidArgumentError):
        repo.resolve("bad\x00ref")


def test_ambiguous_short_hash_raises_naming_the_prefix(tmp_path):
    with Repository(None, init=True, store=MemoryStore()) as repo:
        repo.stage_weights({"w": np.zeros(1, np.float32)})
        seen: dict[str, str] = {}
        for i in range(20_000):
            h = repo.commit(f"empty {i}", allow_empty=True)
            if h[:4] in seen:
                prefix, first, second = h[:4], seen[h[:4]], h
                break
            seen[h[:4]] = h
        else:  # pragma: no cover - 20000 commits without a 4-hex collision is practically impossible
            pytest.fail("no colliding prefix found")
        with pytest.raises(AmbiguousRefError, match=prefix) as err:
            repo.resolve(prefix)
        assert first[:12] in str(err.value) and second[:12] in str(err.value)
        longer = first[: next(i for i in range(5, 64) if first[:i] != second[:i])]
        assert repo.resolve(longer) == first


# ---- tags --------------------------------------------------------------------------------------------------


def test_tag_version_with_description_commit_ref_and_model_card(repo):
    c1 = commit(repo, 1)
    c2 = commit(repo, 2)
    assert (
        repo.tag_version(
            "v1.0", "first release", commit_ref=c1, model_card={"license": "mit", "metrics": {"acc": 0.9}}
        )
        == c1
    )
    assert repo.tag_version("latest") == c2
    tags = {t["name"]: t for t in repo.list_tags()}
    assert set(tags) == {"v1.0", "latest"}
    assert tags["v1.0"]["commit"] == c1 and tags["v1.0"]["description"] == "first release"
    assert tags["v1.0"]["model_card"] == {"license": "mit", "metrics": {"acc": 0.9}}
    assert tags["latest"]["commit"] == c2 and tags["latest"]["description"] is None
    assert repo.resolve("v1.0") == c1
    with pytest.raises(RefExistsError, match="v1.0"):
        repo.tag_version("v1.0", commit_ref=c2)
    assert repo.resolve("v1.0") == c1  # unchanged
    repo.move_tag("v1.0", c2)
    assert repo.resolve("v1.0") == c2
    assert {t["name"]: t for t in repo.list_tags()}["v1.0"]["model_card"]["license"] == "mit"
    with pytest.raises(RefNotFoundError, match="nope"):
        repo.tag_version("t", commit_ref="nope")


# ---- lazy loading ------------------------------------------------------------------------------------------


class CountingStore(LocalStore):
    """A real LocalStore that remembers which object keys were read."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []

    def get(self, key):
        self.reads.append(key)
        return super().get(key)

    def get_range(self, key, start, length):
        self.reads.append(key)
        return super().get_range(key, start, length)


def test_get_weights_is_lazy_and_reads_only_the_named_tensors(tmp_path):
    store = CountingStore(tmp_path / "store")
    with Repository(None, init=True, store=store) as repo:
        h = commit(repo, 7)
        tree = repo.get_commit(h).tree
        store.reads.clear()
        lazy = repo.get_weights(h)
        assert set(lazy) == {"encoder.weight", "encoder.bias", "step"}
        assert not [k for k in store.reads if k.startswith("chunks/")], (
            "get_weights read tensor bytes eagerly"
        )
        assert lazy["encoder.bias"].shape == (4,) and lazy["encoder.bias"].metadata.dtype == "float32"
        assert not lazy["encoder.bias"].is_loaded
        store.reads.clear()
        some = repo.get_weights(h, names=["encoder.bias"])
        assert list(some) == ["encoder.bias"]
        np.testing.assert_array_equal(some["encoder.bias"].data, weights(7)["encoder.bias"])
        read_chunks = {k.split("/", 1)[1].replace("/", "") for k in store.reads if k.startswith("chunks/")}
        assert read_chunks == set(tree["encoder.bias"].chunks)
    with pytest.raises(RefNotFoundError, match="missing.tensor"):
        Repository(None, store=store).get_weights(h, names=["missing.tensor"])


# ---- diff --------------------------------------------------------------------------------------------------


def test_diff_names_changes_and_measures_them(repo):
    a = {
        "same": np.ones(4, np.float32),
        "moved": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        "gone": np.zeros(2, np.float32),
    }
    b = {
        "same": np.ones(4, np.float32),
        "moved": np.array([1.0, 2.0, 3.0, 6.0], np.float32),
        "new": np.zeros(3, np.int8),
    }
    repo.stage_weights(a)
    ca = repo.commit("a")
    repo.stage_weights(b)
    cb = repo.commit("b")
    d = repo.diff(ca, cb)
    assert d["changed"] == ["moved"] and d["added"] == ["new"] and d["removed"] == ["gone"]
    assert d["identical"] is False
    x, y = a["moved"].astype(np.float64), b["moved"].astype(np.float64)
    s = d["stats"]["moved"]
    assert s["cosine_similarity"] == pytest.approx(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
    assert s["max_abs_diff"] == pytest.approx(2.0)
    assert s["relative_l2"] == pytest.approx(np.linalg.norm(y - x) / np.linalg.norm(x))
    assert repo.diff(ca, ca)["identical"] is True
    assert repo.diff(ca)["to"] == cb  # b defaults to HEAD


# ---- stats -------------------------------------------------------------------------------------------------


def test_stats_report_logical_stored_dedup_and_compression(repo):
    w = {"zeros": np.zeros((128, 128), np.float32), "ones": np.ones(1000, np.float64)}
    repo.stage_weights(w)
    repo.commit("1")
    repo.stage_weights(w)
    repo.commit("2 (identical)")
    s = repo.stats()
    one = sum(a.nbytes for a in w.values())
    assert s["commits"] == 2
    assert s["logical_bytes"] == 2 * one
    assert s["unique_bytes"] == one
    assert s["dedup_ratio"] == pytest.approx(2.0)
    assert 0 < s["stored_bytes"] < one / 10  # constant tensors compress
    assert s["compression_ratio"] == pytest.approx(one / s["stored_bytes"])
    assert s["objects"] == 2
    sizes = repo.chunk_sizes()
    assert sizes["zeros"]["logical"] == w["zeros"].nbytes and 0 < sizes["zeros"]["stored"] < w["zeros"].nbytes


# ---- names that could escape -------------------------------------------------------------------------------

ESCAPES = [
    "../evil",
    "/etc/passwd",
    "a/../../b",
    "bad\x00name",
    "..",
    "a/..",
    "C:\\x",
    "-rf",
    "HEAD",
    "x~1",
    "",
]


@pytest.mark.parametrize("name", ESCAPES, ids=repr)
def test_escaping_branch_and_tag_names_are_refused(repo, tmp_path, name):
    commit(repo, 1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidNameError):
        repo.create_branch(name)
    with pytest.raises(InvalidNameError):
        repo.tag_version(name)
    assert repo.list_branches() == ["main"] and repo.list_tags() == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "name",
    ["../evil", "/abs/path", "a/../../b", "nul\x00byte", "..\\win", "\\\\server\\x", "C:\\w"],
    ids=repr,
)
def test_escaping_tensor_names_are_refused(repo, name):
    with pytest.raises(InvalidNameError):
        repo.stage_weights({name: np.zeros(2, np.float32)})
    assert repo.staged == {}


def test_ordinary_tensor_names_with_slashes_and_dots_are_fine(repo):
    names = ["optim/state/0/exp_avg", "layers.0.attn.q_proj.weight", "a..b", "x/.hidden", "émbed"]
    repo.stage_weights({n: np.zeros(1, np.float32) for n in names})
    h = repo.commit("odd but safe names")
    assert set(repo.get_weights(h)) == set(names)


def test_names_with_a_trailing_newline_are_refused(tmp_path):
    import numpy as np
    import pytest
    from coral import Repository
    from coral.errors import InvalidNameError

    repo = Repository(tmp_path, init=True)
    repo.stage_weights({"w": np.ones(2, np.float32)})
    repo.commit("one")
    for bad in ("x\n", "main\n", "a/b\n"):
        with pytest.raises(InvalidNameError):
            repo.create_branch(bad)
        with pytest.raises(InvalidNameError):
            repo.tag_version(bad)
    assert repo.list_branches() == ["main"]


def test_commit_weights_of_nothing_is_refused_unless_asked_for(tmp_path):
    from coral.errors import InvalidArgumentError

    with Repository(tmp_path, init=True) as repo:
        with pytest.raises(InvalidArgumentError, match="weights"):
            repo.commit_weights({}, "empty")
        assert repo.head_commit() is None
        cid = repo.commit_weights({}, "empty on purpose", allow_empty=True)
        assert repo.get_commit(cid).tree == {}
