"""The plugin seam, proved in real fresh virtual environments (no --system-site-packages, so no torch).

Two venvs are built once per test session (shared by the xdist workers under a file lock, read-only after):
``core`` gets ``pip install coral-core`` alone; ``plugin`` gets coral-core plus the third-party distribution
``coral-dictfile`` from ``tests/fixtures/thirdparty_plugin`` (and pytest, to run Coral's StoreContract there).
Every install goes from a copy of the sources, so no build folder lands in the working tree.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds two venvs (about 20-40 s, once per session)

ROOT = Path(__file__).resolve().parents[2]
CORE_SRC = ROOT / "coral-core"
PLUGIN_SRC = ROOT / "tests" / "fixtures" / "thirdparty_plugin"
FRAMEWORKS = (
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "transformers",
    "pytorch_lightning",
    "lightning",
    "tensorflow",
)
FRAMEWORK_DISTS = {
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "transformers",
    "pytorch-lightning",
    "lightning",
    "tensorflow",
    "accelerate",
    "orbax-checkpoint",
}


def _norm(name: str) -> str:
    return re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0].strip().lower().replace("_", "-")


def _core_dependencies() -> set[str]:
    return {
        _norm(d) for d in tomllib.loads((CORE_SRC / "pyproject.toml").read_text())["project"]["dependencies"]
    }


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CORAL_PLUGINS")}
    env.update(kw.pop("env", {}))
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=kw.pop("timeout", 300), check=False, **kw
    )


def _check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src, dst, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    )
    return dst


def _venv(path: Path, *requirements: str) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    _check(_run([base, "-m", "venv", str(path)]))
    python = path / "bin" / "python"
    _check(_run([str(python), "-m", "pip", "install", "-q", *requirements], timeout=600))
    return python


def _build(base: Path) -> dict[str, str]:
    src = base / "src"
    core = _copy(CORE_SRC, src / "coral-core")
    plugin = _copy(PLUGIN_SRC, src / "thirdparty_plugin")
    core_py = _venv(base / "venv-core", str(core))
    plugin_py = _venv(base / "venv-plugin", str(core), f"{plugin}[test]")
    return {"core": str(core_py), "plugin": str(plugin_py), "plugin_src": str(plugin)}


@pytest.fixture(scope="session")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # under xdist every worker has its own basetemp below one shared parent: build once, there, under a lock
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    base = shared / "coral-seam-venvs"
    base.mkdir(exist_ok=True)
    with open(base / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / "done.json"
        if not done.exists():
            for leftover in ("src", "venv-core", "venv-plugin"):
                shutil.rmtree(base / leftover, ignore_errors=True)
            done.write_text(json.dumps(_build(base)))
        return json.loads(done.read_text())


def _python(python: str, code: str, **kw) -> subprocess.CompletedProcess[str]:
    return _run([python, "-c", textwrap.dedent(code)], **kw)


def _json_out(proc: subprocess.CompletedProcess[str]) -> object:
    _check(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- coral-core alone --------------------------------------------------------------------------------------


def test_core_alone_installs_its_dependencies_and_no_framework(venvs):
    listed = _json_out(_run([venvs["core"], "-m", "pip", "list", "--format", "json"]))
    names = {_norm(p["name"]) for p in listed}
    assert "coral-core" in names
    assert _core_dependencies() <= names, f"declared dependencies missing: {_core_dependencies() - names}"
    assert not names & FRAMEWORK_DISTS, f"coral-core pulled in frameworks: {sorted(names & FRAMEWORK_DISTS)}"
    found = _json_out(
        _python(
            venvs["core"],
            f"""
            import importlib.util, json
            print(json.dumps([m for m in {FRAMEWORKS!r} if importlib.util.find_spec(m) is not None]))
            """,
        )
    )
    assert found == [], f"the fresh venv can import frameworks {found}: it is not isolated"


def test_import_coral_works_and_loads_no_framework(venvs, tmp_path):
    out = _json_out(
        _python(
            venvs["core"],
            f"""
            import json, sys
            import numpy as np
            import coral, coral.plugins, coral.integrations
            from coral import Repository
            repo = Repository({str(tmp_path / "repo")!r}, init=True)
            repo.stage_weights({{"w": np.arange(6, dtype=np.float32).reshape(2, 3)}})
            h = repo.commit("first")
            again = Repository({str(tmp_path / "repo")!r}).get_weights(h)["w"].data
            plugins = [(p.name, p.distribution) for p in coral.plugins.list_plugins()]
            rng = coral.plugins.hook().coral_get_rng_state()
            print(json.dumps({{
                "file": coral.__file__,
                "frameworks": [m for m in {FRAMEWORKS!r} if m in sys.modules],
                "loaded": again.tolist(),
                "plugins": plugins,
                "rng": sorted(k for part in rng if part for k in part),
            }}))
            """,
        )
    )
    assert out["frameworks"] == [], f"import coral loaded {out['frameworks']}"
    assert "venv-core" in out["file"], "the venv imported coral from somewhere else than its own install"
    assert out["loaded"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert [dist for _name, dist in out["plugins"]] == ["coral-core"], out["plugins"]
    assert {"python", "numpy"} <= set(out["rng"])


def test_framework_shim_names_the_package_to_install(venvs):
    proc = _python(venvs["core"], "import coral.integrations.pytorch")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "pip install coral-torch" in proc.stderr


def test_unknown_scheme_without_the_plugin_names_it(venvs, tmp_path):
    proc = _python(
        venvs["core"], f"from coral import Repository; Repository('dictfile://{tmp_path}/r.json', init=True)"
    )
    assert proc.returncode != 0
    assert "PluginError" in proc.stderr and "'dictfile'" in proc.stderr


# ---- a third-party distribution, found through its entry point alone -------------------------------------


def test_thirdparty_backend_is_found_through_its_entry_point(venvs, tmp_path):
    url = f"dictfile://{tmp_path / 'repo.json'}"
    out = _json_out(
        _python(
            venvs["plugin"],
            f"""
            import json, sys
            import numpy as np
            import coral.plugins
            from coral import Repository
            from coral.store import storage_backends
            w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
            repo = Repository({url!r}, init=True)
            repo.stage_weights({{"layer.weight": w}})
            first = repo.commit("stored through a third-party backend")
            reopened = Repository({url!r})
            back = reopened.get_weights(first)["layer.weight"].data
            print(json.dumps({{
                "store": type(repo.store).__module__ + "." + type(repo.store).__name__,
                "exact": back.tobytes() == w.tobytes(),
                "log": [c.message for c in reopened.log()],
                "fsck": reopened.fsck()["ok"],
                "schemes": sorted(storage_backends()),
                "plugins": [(p.name, p.distribution, p.hooks) for p in coral.plugins.list_plugins()],
                "frameworks": [m for m in {FRAMEWORKS!r} if m in sys.modules],
            }}))
            """,
        )
    )
    assert out["store"] == "coral_dictfile.store.DictFileStore"
    assert out["exact"] is True
    assert out["log"] == ["stored through a third-party backend"]
    assert out["fsck"] is True
    assert {"dictfile", "file", "memory"} <= set(out["schemes"])
    assert ["dictfile", "coral-dictfile", ["coral_storage_backends"]] in out["plugins"]
    assert out["frameworks"] == []
    assert (tmp_path / "repo.json").is_file()


def test_push_and_clone_through_the_thirdparty_scheme(venvs, tmp_path):
    url = f"dictfile://{tmp_path / 'remote.json'}"
    out = _json_out(
        _python(
            venvs["plugin"],
            f"""
            import json
            import numpy as np
            from coral import Repository
            w = np.arange(24, dtype=np.float32).reshape(4, 6)
            Repository({url!r}, init=True)
            local = Repository({str(tmp_path / "local")!r}, init=True)
            local.add_remote("origin", {url!r})
            head = local.commit_weights({{"w": w}}, "pushed through a third-party backend")
            pushed = local.push()
            copy = Repository.clone({url!r}, {str(tmp_path / "copy")!r})
            print(json.dumps({{
                "pushed": pushed.commits,
                "remote_head": Repository({url!r}).head_commit() == head,
                "exact": copy.load_arrays()["w"].tobytes() == w.tobytes(),
                "fsck": copy.fsck()["ok"],
            }}))
            """,
        )
    )
    assert out == {"pushed": 1, "remote_head": True, "exact": True, "fsck": True}


def test_coral_plugins_env_var_can_rule_out_the_thirdparty_plugin(venvs, tmp_path):
    proc = _python(
        venvs["plugin"],
        f"from coral import Repository; Repository('dictfile://{tmp_path}/r.json', init=True)",
        env={"CORAL_PLUGINS": ""},
    )
    assert proc.returncode != 0 and "PluginError" in proc.stderr and "'dictfile'" in proc.stderr


def test_coral_plugins_command_names_the_distribution(venvs):
    if not (CORE_SRC / "src" / "coral" / "cli" / "main.py").is_file():
        pytest.skip("the coral CLI (coral/cli/main.py) is not in this checkout yet")
    proc = _check(_run([str(Path(venvs["plugin"]).parent / "coral"), "plugins"]))
    assert "coral-dictfile" in proc.stdout
    assert "dictfile" in proc.stdout


def test_thirdparty_backend_passes_the_store_contract(venvs):
    proc = _run(
        [venvs["plugin"], "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=venvs["plugin_src"],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout and "skipped" not in proc.stdout
