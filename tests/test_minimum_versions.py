"""tests/minimum-versions.txt (the constraints of `tox -e mindeps`) pins exactly the floors that
pyproject.toml declares, so that the lowest versions a user may install are the ones tested."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "napari-swinlitemedsam"
# What `tox -e mindeps` installs: the core dependencies and these extras (tox.ini's `extras`).
TOX_EXTRAS = ("qt", "testing")


def declared_floors(requirements: list[str]) -> dict[str, Version]:
    """``{package: floor}`` for each requirement with a ``>=`` bound (pins and bare names have no
    floor to test; the project's own extras are expanded elsewhere)."""
    floors = {}
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if name != PROJECT and lower:
            floors[name] = Version(max(lower, key=Version))
    return floors


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pinned_versions() -> dict[str, Version]:
    """``{package: version}`` of minimum-versions.txt (``name==1.24.*`` reads as 1.24)."""
    pins = {}
    for line in (ROOT / "tests" / "minimum-versions.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{text}: pin the floor's release with =="
        pins[canonicalize_name(requirement.name)] = Version(spec.version.removesuffix(".*"))
    return pins


def test_constraints_pin_exactly_the_declared_floors():
    project = pyproject()
    extras = project["optional-dependencies"]
    tested = declared_floors(project["dependencies"])
    for extra in TOX_EXTRAS:
        tested.update(declared_floors(extras[extra]))
    assert pinned_versions() == tested


def test_a_package_has_one_floor_across_core_and_extras():
    project = pyproject()
    seen: dict[str, tuple[Version, str]] = {}
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    for group, requirements in groups.items():
        for name, floor in declared_floors(requirements).items():
            first_floor, first_group = seen.setdefault(name, (floor, group))
            assert floor == first_floor, (
                f"{name}: >={first_floor} in {first_group}, >={floor} in {group}"
            )
