"""The package's shape: layers point one way, and each public face says what it exports."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import amplifier

PACKAGE = Path(amplifier.__file__).parent
# Each may import only those before it.
LAYERS = ["persistence", "runtime", "agents", "cluster", "cli"]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if relative[0] in LAYERS else None


def _imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "amplifier" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
            elif parts[0] == "amplifier" and len(parts) == 1:
                found.add("amplifier")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    """cli -> agents -> runtime -> persistence: no module imports a layer above its own."""
    layer = _layer(path)
    if layer is None:
        return
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    imported = _imported_layers(path)
    if layer != "cli":
        # The top-level package re-exports every layer; only the CLI may use it.
        assert "amplifier" not in imported, f"{path.name} imports the top-level package"
    assert imported - {"amplifier"} <= allowed, f"{path.name} imports {imported - allowed}"


@pytest.mark.parametrize("name", ["amplifier", *(f"amplifier.{layer}" for layer in LAYERS)])
def test_all_lists_exactly_the_public_names(name: str) -> None:
    """Each package's __all__ names every public name it exports, and only those."""
    module = importlib.import_module(name)
    # dir(), not vars(): the top-level package loads its names on first use.
    public = {
        attribute
        for attribute in dir(module)
        if not attribute.startswith("_") and not _is_submodule(module, getattr(module, attribute))
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))


def _is_submodule(package: object, value: object) -> bool:
    return type(value).__name__ == "module"


def test_every_module_imports() -> None:
    """No module is broken (an import error would hide behind lazy imports)."""
    has_ray = importlib.util.find_spec("ray") is not None
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="amplifier."):
        if info.name.startswith("amplifier.cluster._") and not has_ray:
            continue  # the Ray backend's modules need the ``ray`` extra
        importlib.import_module(info.name)
