"""The source tree's shape, checked on every commit (issue 23's goals, read from the code with `ast`, nothing imported):
- no file in lead_dist/ or benchmarks/ over 400 lines, and no function over 90;
- lead_dist's packages stand on floors, and a module imports only from its own floor or lower ones (so a building
  block such as the teacher cache never reaches up into the trainer), and the packages' imports form no cycle;
- every benchmark folder imports only lead_dist, benchmarks.harness and itself: the plumbing lives once, in the
  harness, and no benchmark borrows another's; lead_dist never imports benchmarks.

A new lead_dist package fails `test_every_package_has_a_floor` until FLOORS places it: deciding where it stands is the
point. The checkers are plain functions over (importer, imported) edges, so that their own tests can feed them a
violation and see it named."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 90

# Lowest first. Floor 0: the small utilities everything may use (errors, atomic writes, locks, the download cache,
# the process group, integrity guards). Within a floor imports are allowed, as long as they make no cycle.
FLOORS: dict[str, int] = {
    **dict.fromkeys(["errors", "textfile", "atomic", "lockfile", "cache", "distributed", "guard", "folder_claim"], 0),
    "config": 1,
    **dict.fromkeys(["data", "lead", "models"], 2),
    **dict.fromkeys(["retrieval", "teacher_cache"], 3),
    "train": 4,
    **dict.fromkeys(["verbs", "cli"], 5),
}
BENCHMARK_SHARED = "harness"


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> Iterator[str]:
    """Every module `path` imports, at any depth of its code (a lazy import inside a function counts), absolute."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = package[: len(package) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module


def second_part(module: str) -> str:
    """`lead_dist.train.step` -> `train`; `lead_dist.cli` -> `cli`; `lead_dist` -> `` (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_edges(root: str) -> set[tuple[str, str]]:
    """(importer, imported) between the top-level packages/modules of `root`, self-imports left out."""
    edges = set()
    for path in python_files(root):
        importer = second_part(module_name(path))
        for module in imported_modules(path):
            if module.split(".")[0] == root and (imported := second_part(module)) and imported != importer:
                edges.add((importer, imported))
    return edges


def upward_imports(edges: Iterable[tuple[str, str]], floors: dict[str, int]) -> list[str]:
    return sorted(
        f"{a} (floor {floors[a]}) imports {b} (floor {floors[b]})"
        for a, b in edges
        if a in floors and b in floors and floors[b] > floors[a]
    )


def find_cycle(edges: Iterable[tuple[str, str]]) -> list[str]:
    """One cycle of the directed graph as [a, b, ..., a], or [] if it has none (depth-first search)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return []


def borrowed_benchmarks(edges: Iterable[tuple[str, str]], shared: str) -> list[str]:
    return sorted(f"benchmarks/{a} imports benchmarks.{b}" for a, b in edges if b != shared or a == shared)


def long_functions(path: Path, limit: int, root: Path = REPO) -> Iterator[str]:
    """Functions (methods and nested ones too) longer than `limit` lines, from `def` to their last line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                yield f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)"


# --- the tree ---------------------------------------------------------------------------------------------------


def test_no_file_over_400_lines_and_no_function_over_90() -> None:
    files = python_files("lead_dist") + python_files("benchmarks")
    assert len(files) > 100  # the walk found the tree
    too_long = [f"{p.relative_to(REPO)} ({n} lines)" for p in files if (n := len(p.read_text().splitlines())) > 400]
    assert too_long == [], f"files over {MAX_FILE_LINES} lines: {too_long}: find the seam"
    functions = [line for p in files for line in long_functions(p, MAX_FUNCTION_LINES)]
    assert functions == [], f"functions over {MAX_FUNCTION_LINES} lines: {functions}"


def test_every_package_has_a_floor() -> None:
    found = {p.name if p.is_dir() else p.stem for p in (REPO / "lead_dist").iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}  # fmt: skip
    assert {"train", "teacher_cache", "models", "cli"} <= found
    assert found == set(FLOORS), (
        f"place these in FLOORS: {sorted(found - set(FLOORS))}; gone: {sorted(set(FLOORS) - found)}"
    )


def test_lead_dist_imports_go_down_or_across_and_never_round() -> None:
    edges = package_edges("lead_dist")
    assert ("train", "teacher_cache") in edges and ("teacher_cache", "models") in edges  # the parser sees imports
    assert upward_imports(edges, FLOORS) == []
    assert find_cycle(edges) == []


def test_benchmarks_share_only_the_harness_and_lead_dist_never_imports_them() -> None:
    edges = package_edges("benchmarks")
    assert ("quality", "harness") in edges
    assert borrowed_benchmarks(edges, BENCHMARK_SHARED) == []
    into_benchmarks = [f"{p.relative_to(REPO)}: {m}" for p in python_files("lead_dist")
                       for m in imported_modules(p) if m.split(".")[0] == "benchmarks"]  # fmt: skip
    assert into_benchmarks == []


# --- the checkers can fail ----------------------------------------------------------------------------------------


def test_checkers_name_a_violation() -> None:
    floors = {"config": 1, "models": 2, "train": 4}
    assert upward_imports({("models", "config"), ("train", "models")}, floors) == []
    assert upward_imports({("models", "train")}, floors) == ["models (floor 2) imports train (floor 4)"]
    assert find_cycle({("a", "b"), ("b", "c")}) == []
    cycle = find_cycle({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")})
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({("x", "x2"), ("x2", "x")}) in (["x", "x2", "x"], ["x2", "x", "x2"])
    assert borrowed_benchmarks({("quality", "harness"), ("gpu", "throughput"), ("harness", "quality")}, "harness") == [
        "benchmarks/gpu imports benchmarks.throughput",
        "benchmarks/harness imports benchmarks.quality",
    ]


def test_relative_lazy_imports_and_long_functions_are_seen(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    source = tmp_path / "pkg" / "sub" / "mod.py"
    body = "    x = 1\n" * 95
    source.write_text(f"from ..other import a\nfrom . import b\n\ndef f():\n    from pkg.train import step\n{body}")
    assert set(imported_modules(source, tmp_path)) == {"pkg.other", "pkg.sub", "pkg.train"}
    assert list(long_functions(source, 90, tmp_path)) == ["pkg/sub/mod.py:4 f (97 lines)"]
    assert list(long_functions(source, 97, tmp_path)) == []
