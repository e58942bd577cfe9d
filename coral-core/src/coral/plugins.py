"""The one plugin manager: built lazily, it loads every entry point of the group ``coral``.

Set ``CORAL_PLUGINS`` to a comma-separated list of entry-point names to load only those (``""`` loads none
but the built-ins); useful when a broken third-party plugin must be ruled out.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import random
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger(__name__)

_pm: pluggy.PluginManager | None = None
_lock = threading.Lock()
_sources: dict[str, PluginInfo] = {}

BUILTIN_PLUGINS = ("coral.store.builtin",)


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from: its entry-point name, module and distribution."""

    name: str
    module: str
    distribution: str | None
    hooks: tuple[str, ...]


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading entry points on first use."""
    global _pm
    if _pm is None:
        with _lock:
            if _pm is None:
                _pm = _build()
    return _pm


def preload() -> None:
    """Start loading the plugins on a thread when nobody has yet, and return at once.

    A caller about to wait on I/O (a checkpoint read, whose restore then sets the RNGs through the hooks)
    overlaps the entry-point scan, a tenth of a second or more in a fresh process, with that wait; the next
    :func:`get_plugin_manager` waits for it. A failure is left for that call to raise."""
    if _pm is not None:
        return

    def load() -> None:
        try:
            get_plugin_manager()
        except Exception as exc:  # noqa: BLE001 - raised again, in the caller's thread, by the next use
            log.debug("loading plugins in the background failed: %s", exc)

    threading.Thread(target=load, name="coral-plugins", daemon=True).start()


def _build() -> pluggy.PluginManager:
    # importing third-party plugins must not shift the user's random streams (exact resume depends on them)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return _load(pluggy.PluginManager("coral"))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _load(pm: pluggy.PluginManager) -> pluggy.PluginManager:
    pm.add_hookspecs(hookspecs)
    allowed = os.environ.get("CORAL_PLUGINS")
    allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group="coral"):
        if allow is not None and ep.name not in allow and ep.value not in BUILTIN_PLUGINS:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break Coral
            log.warning("could not load coral plugin %r (%s): %s", ep.name, ep.value, exc)
            continue
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=ep.name)
        dist = ep.dist.name if ep.dist is not None else None
        _sources[ep.name] = PluginInfo(ep.name, ep.value, dist, _hook_names(pm, plugin))
    for modname in BUILTIN_PLUGINS:
        module = importlib.import_module(modname)
        if not pm.is_registered(module):
            pm.register(module, name=modname)
            _sources[modname] = PluginInfo(modname, modname, "coral-core", _hook_names(pm, module))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a coral plugin implements an unknown hook: {exc}") from exc
    return pm


def _hook_names(pm: pluggy.PluginManager, plugin: Any) -> tuple[str, ...]:
    return tuple(sorted(h.name for h in (pm.get_hookcallers(plugin) or [])))


def register(plugin: Any, name: str | None = None) -> str | None:
    """Register a plugin object (module or instance) directly; tests and embedding apps use this."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(plugin)
        raise PluginError(f"plugin {name or plugin!r} implements an unknown hook: {exc}") from exc
    if registered is not None:
        _sources[registered] = PluginInfo(registered, repr(plugin), None, _hook_names(pm, plugin))
    return registered


def unregister(plugin: Any = None, name: str | None = None) -> None:
    """Remove a plugin registered with :func:`register`."""
    pm = get_plugin_manager()
    removed = pm.unregister(plugin=plugin, name=name)
    if removed is not None:
        for key in list(_sources):
            if pm.get_plugin(key) is None:
                _sources.pop(key, None)


def list_plugins() -> list[PluginInfo]:
    """The loaded plugins with their distribution and the hooks each implements."""
    get_plugin_manager()
    return sorted(_sources.values(), key=lambda p: p.name)


def hook() -> Any:
    """Shortcut for ``get_plugin_manager().hook``."""
    return get_plugin_manager().hook


def reset_plugin_manager() -> None:
    """Forget the manager so the next use reloads entry points (after a pip install in the same process)."""
    global _pm
    with _lock:
        _pm = None
        _sources.clear()
