"""Check the import graph of the two packages: no cycles, and arrows that point one way.

    python tools/check_imports.py            # exit 0 when clean, 1 with one line per problem

Every ``import`` / ``from … import`` in every module counts, at module level or inside a function. Rules:

- no cycle between modules (a package's ``__init__`` counts as a module of its own);
- the library (``seednorm``) never imports the experiments (``seednorm_experiments``);
- inside the library, layers point down: ``integrations`` → ``convert``/``modules``/``optim`` → ``functional`` →
  ``ops``; nothing imports from a layer above itself;
- inside the experiments, the shared modules (``EXPERIMENT_SHARED``: harness, runs, report, args, ...) never
  import a study, and no study imports another study; ``cli`` (the top) finds the studies by name.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "seednorm": ROOT / "src" / "seednorm",
    "seednorm_experiments": ROOT / "experiments" / "seednorm_experiments",
}
# Library layers, lowest first: a module may import its own layer or lower ones only.
LIBRARY_LAYERS = [
    ("seednorm.ops",),
    ("seednorm.functional",),
    ("seednorm.modules", "seednorm.optim", "seednorm.convert"),
    ("seednorm.integrations",),
    ("seednorm",),  # the package's __init__: the public names
]
EXPERIMENT_SHARED = tuple(f"seednorm_experiments.{name}" for name in
                          ("harness", "bench", "common", "report", "runs", "records", "args", "texts", "text_evals",
                           "claims", "progress"))


def modules(package: str, path: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the package."""
    found = {}
    for file in sorted(path.rglob("*.py")):
        parts = list(file.relative_to(path.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = file
    return found


def imported(name: str, file: Path, known: set[str]) -> set[str]:
    """The known modules that ``name`` (defined in ``file``) imports."""
    is_package = file.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from a import b` depends on the module a.b when there is one, else on a itself
            candidates = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # `import a.b.c` depends on the deepest known module
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _library_layer(name: str) -> int:
    for level, prefixes in enumerate(LIBRARY_LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes if p != "seednorm") or name in prefixes:
            return level
    return len(LIBRARY_LAYERS) - 1


def _study(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "seednorm_experiments" or len(parts) < 2 or _within(name, EXPERIMENT_SHARED):
        return None
    return parts[1] if parts[1] not in ("cli", "__main__") else None


def problems(graph: dict[str, set[str]]) -> list[str]:
    """One line per broken rule."""
    out = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _within(source, ["seednorm"]) and target.startswith("seednorm_experiments"):
                out.append(f"{source} imports {target}: the library must not import the experiments")
            elif source.split(".")[0] == target.split(".")[0] == "seednorm":
                if _library_layer(target) > _library_layer(source):
                    out.append(f"{source} imports {target}, a layer above it")
            elif source.split(".")[0] == target.split(".")[0] == "seednorm_experiments":
                if _within(source, EXPERIMENT_SHARED) and _study(target):
                    out.append(f"{source} imports the study module {target}: shared code must not know the studies")
                elif _study(source) and _study(target) and _study(source) != _study(target):
                    out.append(f"{source} imports {target}: studies must not import each other")
    return out


def graph() -> dict[str, set[str]]:
    files = {}
    for package, path in PACKAGES.items():
        if path.is_dir():
            files.update(modules(package, path))
    known = set(files)
    return {name: imported(name, file, known) for name, file in files.items()}


def main() -> int:
    found = problems(graph())
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
