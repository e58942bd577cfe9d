"""The plugin seam in-process: hook specs are documented, and a plugin registered directly is called."""

from __future__ import annotations

import inspect
import uuid

import coral
import coral.plugins
import numpy as np
import pytest
from coral import hookimpl, hookspecs
from coral.errors import PluginError
from coral.store import MemoryStore, open_store, storage_backends


def _hookspecs():
    return [(name, fn) for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "coral_spec")]


@pytest.fixture
def registered():
    """Register plugin objects for one test and always unregister them afterwards."""
    added = []

    def add(plugin):
        name = coral.plugins.register(plugin, name=f"test-{uuid.uuid4().hex}")
        added.append(name)
        return name

    yield add
    for name in added:
        coral.plugins.unregister(name=name)


def test_hookspecs_module_declares_the_extension_surface():
    names = {name for name, _ in _hookspecs()}
    assert {
        "coral_model_to_weights",
        "coral_weights_to_model",
        "coral_storage_backends",
        "coral_get_rng_state",
        "coral_set_rng_state",
    } <= names
    assert all(name.startswith("coral_") for name in names)
    pm = coral.get_plugin_manager()
    assert names <= {name for name in dir(pm.hook) if name.startswith("coral_")}


@pytest.mark.parametrize("name,spec", _hookspecs(), ids=[n for n, _ in _hookspecs()])
def test_every_hookspec_has_a_docstring(name, spec):
    doc = inspect.getdoc(spec)
    assert doc and len(doc.split()) >= 8, f"hook spec {name} has no real docstring"
    assert doc.startswith("Called"), f"hook spec {name}: say when it is called (start with 'Called ...')"


def test_a_directly_registered_storage_plugin_is_called(registered):
    calls = []

    class ScratchStore(MemoryStore):
        scheme = "scratch"

        @classmethod
        def from_url(cls, url):
            calls.append(url)
            return cls()

    class Plugin:
        @hookimpl
        def coral_storage_backends(self, register):
            register("scratch", ScratchStore)

    assert "scratch" not in storage_backends()
    registered(Plugin())
    assert storage_backends()["scratch"] is ScratchStore
    repo = coral.Repository("scratch://one", init=True)
    assert isinstance(repo.store, ScratchStore) and calls == ["scratch://one"]
    repo.stage_weights({"w": np.ones(3, dtype=np.float16)})
    h = repo.commit("via a registered plugin")
    assert repo.get_weights(h)["w"].data.tobytes() == np.ones(3, dtype=np.float16).tobytes()


def test_unregistered_plugin_is_no_longer_called():
    class Plugin:
        @hookimpl
        def coral_storage_backends(self, register):
            register("gone", MemoryStore)

    name = coral.plugins.register(Plugin(), name=f"test-{uuid.uuid4().hex}")
    assert "gone" in storage_backends()
    assert name in {p.name for p in coral.plugins.list_plugins()}
    coral.plugins.unregister(name=name)
    assert "gone" not in storage_backends()
    assert name not in {p.name for p in coral.plugins.list_plugins()}


def test_every_plugin_contributes_rng_state_and_receives_the_merge(registered):
    received = []

    class Plugin:
        @hookimpl
        def coral_get_rng_state(self):
            return {"myframework": {"seed": 7}}

        @hookimpl
        def coral_set_rng_state(self, state):
            received.append(state)

    registered(Plugin())
    parts = coral.plugins.hook().coral_get_rng_state()
    merged = {k: v for part in parts if part for k, v in part.items()}
    assert merged["myframework"] == {"seed": 7}
    assert {"python", "numpy"} <= merged.keys()  # the built-in plugin contributes too
    coral.plugins.hook().coral_set_rng_state(state=merged)
    assert received == [merged]


def test_firstresult_hook_returns_the_plugin_that_recognises_the_object(registered):
    class Model:
        pass

    class Plugin:
        @hookimpl
        def coral_model_to_weights(self, model):
            if isinstance(model, Model):
                return {"w": np.zeros(2, dtype=np.float32)}
            return None

    registered(Plugin())
    hook = coral.plugins.hook()
    assert list(hook.coral_model_to_weights(model=Model())) == ["w"]
    assert hook.coral_model_to_weights(model=object()) is None


def test_list_plugins_names_the_builtin_distribution():
    infos = coral.plugins.list_plugins()
    core = [p for p in infos if p.distribution == "coral-core"]
    assert core, infos
    assert any("coral_storage_backends" in p.hooks for p in core)


def test_a_plugin_implementing_an_unknown_hook_fails_loudly():
    class Misspelt:
        @hookimpl
        def coral_storage_backend(self, register):  # missing the final "s"
            pass

    pm = coral.get_plugin_manager()
    name = pm.register(Misspelt(), name=f"test-{uuid.uuid4().hex}")
    try:
        with pytest.raises(Exception, match="coral_storage_backend"):
            pm.check_pending()
    finally:
        pm.unregister(name=name)


def test_backend_that_is_not_a_store_is_refused(registered):
    class Plugin:
        @hookimpl
        def coral_storage_backends(self, register):
            register("bogus", dict)

    registered(Plugin())
    with pytest.raises(PluginError, match="bogus"):
        storage_backends()


def test_unknown_scheme_names_the_scheme_and_what_to_install():
    with pytest.raises(PluginError, match=r"'nosuchscheme'.*pip install"):
        open_store("nosuchscheme://bucket/prefix")
    with pytest.raises(PluginError, match="'nosuchscheme'"):
        coral.Repository("nosuchscheme://x", init=True)


def test_registering_a_plugin_with_an_unknown_hook_is_refused():
    import pytest
    from coral import hookimpl, plugins
    from coral.errors import PluginError

    class Typo:
        @hookimpl
        def coral_storage_backend(self, register):  # missing 's'
            pass

    with pytest.raises(PluginError, match="coral_storage_backend"):
        plugins.register(Typo(), name="typo")
    assert plugins.get_plugin_manager().get_plugin("typo") is None
