"""The files a user of a released package reads: LICENSE, CITATION.cff, CHANGELOG.md and both pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import seednorm

ROOT = Path(__file__).parents[1]
PAPER = "https://arxiv.org/abs/2510.22777"


def test_license_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_citation_cites_the_paper_and_this_software() -> None:
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "version", "license", "references"):
        assert cff.get(key), key
    assert cff["type"] == "software" and str(cff["version"]) == seednorm.__version__
    assert cff["license"] == "Apache-2.0"
    (paper,) = cff["references"]
    assert paper["title"] == "SeeDNorm: Self-Rescaled Dynamic Normalization"
    assert [a["family-names"] for a in paper["authors"]] == ["Cai", "Zhu", "Liu", "Min"]
    assert paper["year"] == 2026 and paper["url"] == PAPER


def test_project_metadata_of_both_packages() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    for folder in (ROOT, ROOT / "experiments"):
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        assert project["license"] == "Apache-2.0"
        assert project["urls"]["Paper"] == PAPER
        assert project["classifiers"] and all(" :: " in c for c in project["classifiers"])
        for url in project["urls"].values():
            assert url.startswith("https://") and "example" not in url


def test_readme_names_only_extras_that_exist() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = re.findall(r'seednorm\[(\w+)\]|"\.\[(\w+)\]"', (ROOT / "README.md").read_text())
    assert named and {a or b for a, b in named} <= set(extras)


def test_changelog_has_an_unreleased_section() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
