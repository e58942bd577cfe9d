"""The folder tree is the architecture: imports in coral-core point one way, and no module borrows another's
underscore names. Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "coral-core" / "src" / "coral"
# lower layers first: a module may import its own layer and the ones before it, never a later one
LAYERS = ["codecs", "store", "objects", "version_control", "training"]
TOP = {"integrations", "cli", "interchange"}  # above every layer; nothing below imports them
PLUGIN_PACKAGES = {"coral_torch", "coral_lightning", "coral_hf", "coral_jax"}


def _modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def _package_of(path: Path) -> str:
    rel = path.relative_to(CORE).parts
    return rel[0] if len(rel) > 1 else ""


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute dotted module, imported names) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = ["coral", *path.relative_to(CORE).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1]
    else:
        here = here[:-1]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names]))
    return out


def _layer(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "coral" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_imports_point_down_and_core_imports_no_plugin(path: Path) -> None:
    own = _package_of(path)
    for mod, _names in _imports(path):
        top = mod.split(".")[0]
        assert top not in PLUGIN_PACKAGES, f"{path.name} imports plugin package {mod}"
        target = _layer(mod)
        if own in LAYERS and target in TOP:
            pytest.fail(f"{path.relative_to(CORE)} (layer {own}) imports {mod}, which sits above every layer")
        if own in LAYERS and target in LAYERS:
            assert LAYERS.index(target) <= LAYERS.index(own), (
                f"{path.relative_to(CORE)} (layer {own}) imports {mod} (layer {target}): imports must point down "
                f"({' -> '.join(LAYERS)})"
            )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    for mod, names in _imports(path):
        if not mod.startswith("coral"):
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(CORE)} imports private names {private} from {mod}"


PLUGIN_SRC = [CORE.parents[2] / f"coral-{p}" / "src" / f"coral_{p}" for p in ("torch", "lightning", "hf", "jax")]


@pytest.mark.parametrize(
    "path",
    sorted(p for src in PLUGIN_SRC for p in src.rglob("*.py") if "__pycache__" not in p.parts),
    ids=lambda p: str(p.relative_to(CORE.parents[2])),
)
def test_plugin_modules_import_no_private_names_of_another_module(path: Path) -> None:
    """A package's own private submodules (``from . import _state``) are fine; another module's private
    functions and constants are not."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("coral")):
            folder = path.parent if not node.module else None
            for a in node.names:
                if not a.name.startswith("_") or a.name.startswith("__"):
                    continue
                if folder is not None and (folder / f"{a.name}.py").exists():
                    continue  # a private submodule of this package
                pytest.fail(f"{path.name}:{node.lineno} imports private name {a.name} from {node.module or '.'}")
