"""coral-jax is found through the ``coral`` entry point and ``coral.integrations.jax``, and costs nothing until used."""

from __future__ import annotations

import os
import subprocess
import sys

import coral_jax
from coral.plugins import list_plugins


def test_integrations_shim_reexports_the_public_api():
    import coral.integrations.jax as shim

    assert shim.__all__ == coral_jax.__all__
    assert {"CoralCheckpointManager", "import_orbax", "export_orbax", "track_key", "flatten_pytree"} <= set(
        shim.__all__
    )
    assert shim.CoralCheckpointManager is coral_jax.CoralCheckpointManager


def test_plugin_is_registered_with_its_hooks():
    info = {p.name: p for p in list_plugins()}["jax"]
    assert info.module == "coral_jax.hooks" and info.distribution == "coral-jax"
    assert {
        "coral_model_to_weights",
        "coral_tensor_to_array",
        "coral_get_rng_state",
        "coral_set_rng_state",
    } <= set(info.hooks)


def test_loading_the_plugin_does_not_import_jax():
    code = (
        "import sys, coral.plugins as p; p.get_plugin_manager(); "
        "assert 'jax' in {i.name for i in p.list_plugins()}; "
        "assert p.hook().coral_get_rng_state() is not None; "
        "print('jax' in sys.modules, 'orbax' in sys.modules)"
    )
    env = dict(os.environ, CORAL_PLUGINS="jax")
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
