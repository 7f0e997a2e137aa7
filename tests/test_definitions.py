"""The definitions travel with the package (bench/DEFINITIONS.md): every reference to them resolves, and its table of
quantities agrees with the protocols' declarations (direction and unit)."""

import re
from pathlib import Path

from bench import protocols

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "bench" / "DEFINITIONS.md"
ARROW = {1: "↑", -1: "↓", 0: "—"}


def _sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\.", DEFINITIONS.read_text(), flags=re.M))


def _texts():
    files = [ROOT / "README.md", *sorted((ROOT / "conf").rglob("*.yaml"))]
    for folder in ("bench", "methods", "datasets"):
        files += sorted((ROOT / folder).rglob("*.py"))
    for path in files:
        yield path, path.read_text()


def test_every_section_reference_resolves_and_nothing_points_to_a_file_a_clone_lacks():
    sections = _sections()
    assert sections == {str(n) for n in range(1, 11)}
    for path, text in _texts():
        assert "SPEC" not in text, f"{path.relative_to(ROOT)} refers to SPEC (not in a clone): use DEFINITIONS §N"
        for n in re.findall(r"§\s?(\d+)", text):
            assert n in sections, f"{path.relative_to(ROOT)}: §{n} is not a section of bench/DEFINITIONS.md"


def test_every_quantity_is_defined_with_its_declared_direction_and_unit():
    rows = {m.group(1): m.group(2).split("|") for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", DEFINITIONS.read_text(),
                                                                   flags=re.M)}
    declared = protocols.quantities()
    assert set(declared) <= set(rows), sorted(set(declared) - set(rows))
    for name, (cls, q) in declared.items():
        protocol, better, unit = (cell.strip() for cell in rows[name][:3])
        assert protocol == cls.name and better == ARROW[q.direction], name
        assert unit == q.unit.replace("{score}", "score").replace(" L1 / input L2", " ℓ₁ / input ℓ₂"), name


def test_the_definitions_ship_with_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'\[tool\.setuptools\.package-data\]\s*\n\s*bench = \[[^]]*"DEFINITIONS\.md"', text)
