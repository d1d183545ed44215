"""Imports go one way, checked on every module of the package (found by walking it, no list).

Layers, each importing only those before it: ``storage`` (standard library) <- ``model`` (torch)
<- ``inference`` (+ numpy) <- ``io`` <- ``cohort`` (many cases, one process or a Dask cluster)
<- ``evaluation`` <- ``training`` <- ``annotation`` (no Qt)
<- ``cli`` and ``_napari`` (the only home of napari, Qt and magicgui). ``cli`` reaches ``_napari``
in one place only, the ``annotate`` command's lazy call of ``_napari.launch``.

The static checks read each module's import statements (including those inside functions); the
dynamic checks import modules in a fresh interpreter, so modules imported by other tests do not
count.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import napari_swinlitemedsam

PACKAGE = "napari_swinlitemedsam"
LAYERS = [
    "storage",
    "model",
    "inference",
    "io",
    "cohort",
    "evaluation",
    "training",
    "annotation",
    "cli",
]
GLUE = "_napari"
ALLOWED_EXTRA = {("cli", "_napari.launch")}  # `swinlitemedsam annotate` opens the viewer
GUI_MODULES = (
    "napari",
    "qtpy",
    "magicgui",
    "PyQt6",
    "PyQt5",
    "PySide2",
    "PySide6",
    "vispy",
    "superqt",
)


def all_modules() -> list[tuple[str, Path]]:
    """Every module of the package as (dotted name, file), found with pkgutil."""
    found = []
    for info in pkgutil.walk_packages(napari_swinlitemedsam.__path__, PACKAGE + "."):
        spec = info.module_finder.find_spec(info.name)
        found.append((info.name, Path(spec.origin)))
    return found


MODULES = all_modules()


def imported_names(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def room_of(module: str) -> str | None:
    """The sub-package (room) a module of ours lives in, or None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS + [GLUE]) else None


def test_the_walk_finds_every_room():
    rooms = {room_of(name) for name, _ in MODULES}
    assert set(LAYERS) | {GLUE} <= rooms
    assert len(MODULES) > 60


@pytest.mark.parametrize("module,path", MODULES, ids=[name for name, _ in MODULES])
def test_imports_follow_the_direction(module, path):
    room = room_of(module)
    if room is None:
        return
    ours = {name for name in imported_names(path, module) if name.startswith(PACKAGE + ".")}
    against = []
    for name in ours:
        target = room_of(name)
        if target is None or target == room:
            continue
        relative = name[len(PACKAGE) + 1 :]
        if room == GLUE:
            continue  # the glue may use every layer
        if target == GLUE:
            if not any(room == r and relative.startswith(t) for r, t in ALLOWED_EXTRA):
                against.append(name)
        elif LAYERS.index(target) > LAYERS.index(room):
            against.append(name)
    assert not against, f"{module} imports against the direction: {sorted(against)}"


@pytest.mark.parametrize("module,path", MODULES, ids=[name for name, _ in MODULES])
def test_only_the_glue_names_napari_or_qt(module, path):
    gui = {name for name in imported_names(path, module) if name.split(".")[0] in GUI_MODULES}
    if room_of(module) == GLUE:
        return
    assert not gui, f"{module} imports {sorted(gui)}; only {PACKAGE}.{GLUE} may"


@pytest.mark.parametrize(
    "module,path",
    [
        (name, path)
        for name, path in MODULES
        if room_of(name) == GLUE and path.name != "__init__.py"
    ],
    ids=[name for name, path in MODULES if room_of(name) == GLUE and path.name != "__init__.py"],
)
def test_every_glue_module_uses_napari_or_qt(module, path):
    """A module in ``_napari`` imports napari or Qt, or is a contribution the manifest names
    (a reader, writer or sample returns napari layer data without importing napari)."""
    gui = {name for name in imported_names(path, module) if name.split(".")[0] in GUI_MODULES}
    manifest = (Path(napari_swinlitemedsam.__file__).parent / "napari.yaml").read_text()
    assert gui or f"python_name: {module}:" in manifest, (
        f"{module} has no napari/Qt import: it belongs in a layer below the glue"
    )


def test_the_model_core_imports_torch_and_nothing_above_the_standard_library():
    """``storage`` needs only the standard library; ``model`` adds torch (and platformdirs)."""
    for module, path in MODULES:
        if room_of(module) not in ("model", "storage"):
            continue
        third_party = {
            name.split(".")[0]
            for name in imported_names(path, module)
            if not name.startswith(PACKAGE) and name.split(".")[0] not in sys.stdlib_module_names
        }
        # platformdirs: the one user folder where model files live (checkpoint.default_model_dir)
        allowed = {"torch", "platformdirs"} if room_of(module) == "model" else set()
        assert third_party <= allowed, f"{module} imports {sorted(third_party - allowed)}"


def imported_after(statement: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``statement`` in a new interpreter."""
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_every_module_outside_the_glue_imports_no_gui_toolkit():
    names = [name for name, _ in MODULES if room_of(name) != GLUE]
    loaded = imported_after("import " + ", ".join(names))
    assert "torch" in loaded  # it did import the model
    assert not loaded & set(GUI_MODULES), sorted(loaded & set(GUI_MODULES))


def test_importing_the_package_imports_neither_torch_nor_napari():
    loaded = imported_after(f"import {PACKAGE}")
    assert not loaded & {"torch", "numpy", *GUI_MODULES}, sorted(
        loaded & {"torch", "numpy", *GUI_MODULES}
    )


@pytest.mark.parametrize(
    "module",
    [
        f"{PACKAGE}.annotation.{name}"
        for name in ("annotator_state", "layer_coordinates", "jobs", "scheduler", "slice_work")
    ],
)
def test_pure_bookkeeping_modules_need_neither_torch_nor_gui(module):
    loaded = imported_after(f"import {module}")
    assert not loaded & {"torch", *GUI_MODULES}, sorted(loaded & {"torch", *GUI_MODULES})


def test_the_napari_reader_and_sample_data_do_not_import_torch():
    # Opening a file or a sample must not wait for torch: the model loads only in the widget.
    loaded = imported_after(
        f"import {PACKAGE}._napari.reader, {PACKAGE}._napari.writer, {PACKAGE}._napari.sample_data"
    )
    assert "torch" not in loaded
