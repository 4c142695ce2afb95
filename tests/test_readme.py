"""The README's code blocks run as written, and it stays a front door."""

import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_readme_usage_example_is_short():
    text = README.read_text()
    usage = text[text.index("## Usage") :]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what the blocks save goes to this test's folder
    code = python_blocks(README)[index]
    exec(compile(code, f"{README}:block{index}", "exec"), {})


@pytest.mark.parametrize("doc", ["conversion.md", "torchtitan.md", "olmo.md"])
def test_document_python_blocks_run(doc, tmp_path, monkeypatch):
    if doc == "olmo.md":
        pytest.importorskip("olmo_core")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = ROOT / "docs" / doc
    for index, code in enumerate(python_blocks(path)):
        exec(compile(code, f"{path}:block{index}", "exec"), {})


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\bissue \d|\bcommit [0-9a-f]{7}|SPEC §", text)
    for link in re.findall(r"\]\(([^)#]+)", text):  # every relative link points at a file of the repository
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
