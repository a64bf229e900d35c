"""The package's architecture, held by tests: imports run one way, no cycles, no private
imports across modules, small folders, the engine free of Airflow, tests mirroring it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dicom_deid

PACKAGE = Path(dicom_deid.__file__).parent
TESTS = Path(__file__).parent
MAX_MODULES = 12

# Which subpackages each may import (besides itself). Top-level modules count as
# their own "subpackage" (errors, arrow_build). Lower layers never name higher ones.
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    # keyfile: every kind of key (pseudonym, vault, restricted file) read the same way.
    "keyfile": {"errors"},
    # duckdb_crypto: DuckDB's encrypted database files and Parquet (restricted data).
    "duckdb_crypto": {"errors"},
    "arrow_build": set(),
    "pools": set(),
    "dicom": {"__init__", "errors"},
    "config": {"errors", "dicom"},
    "text": {"errors", "dicom", "config"},
    "pixels": {"errors", "dicom", "config", "text"},
    # deid -> metadata: a batch makes each output's metadata row from the bytes it wrote.
    "deid": {"__init__", "errors", "keyfile", "dicom", "config", "text", "pixels", "arrow_build",
             "metadata", "pools", "review", "storage"},
    # review: which images a reviewer sees, their thumbnails, the contact sheet.
    "review": {"errors", "dicom"},
    "metadata": {"errors", "dicom", "arrow_build", "pools", "storage", "duckdb_crypto"},
    # storage: local folders and GCS behind one Store interface (file modes included).
    "storage": {"errors", "dicom"},
    "warehouse": {"errors", "keyfile", "duckdb_crypto"},
    "cohort": {"errors", "warehouse"},
    # pipeline -> text: a withdrawal's reason is checked by the text detectors.
    "pipeline": {"__init__", "errors", "keyfile", "dicom", "config", "text", "deid", "metadata",
                 "warehouse", "cohort", "review", "vault", "storage"},
    # vault: the encrypted mapping, re-identification, audit, linkage pseudonyms.
    "vault": {"errors", "keyfile", "dicom", "deid", "warehouse"},
    "cli": {"__init__", "errors", "keyfile", "dicom", "config", "deid", "pixels", "metadata",
            "vault", "review", "warehouse", "cohort", "pipeline", "synth", "storage"},
    "airflow": {"errors", "keyfile", "warehouse", "deid", "pipeline", "review", "vault", "storage"},
    "synth": set(),
}


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` names."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import, at any depth."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [a.name for a in node.names]
            found.append((target, names, node.lineno))
            # ``from pkg import submodule`` depends on the submodule too
            found.extend((f"{target}.{n}", [], node.lineno) for n in names
                         if f"{target}.{n}" in MODULES)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_run_one_way() -> None:
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            src, dst = _layer(module), _layer(target)
            if src != dst and dst not in ALLOWED[src]:
                wrong.append(f"{module} imports {target} ({src} may not use {dst})")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_subpackage_has_a_layer_rule() -> None:
    assert {_layer(m) for m in MODULES} == set(ALLOWED)


def test_no_private_names_across_modules() -> None:
    wrong = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if target.startswith("dicom_deid") and target != module:
                wrong += [f"{module}:{line} imports {target}.{n}" for n in names
                          if n.startswith("_") and n != "__version__"]
    assert not wrong, "\n".join(wrong)


def test_no_folder_over_the_module_limit() -> None:
    folders: dict[Path, int] = defaultdict(int)
    for path in MODULES.values():
        folders[path.parent] += 1
    big = {str(f.relative_to(PACKAGE.parent)): n for f, n in folders.items() if n > MAX_MODULES}
    assert not big


def test_engine_never_imports_airflow() -> None:
    wrong = [f"{m}:{line}" for m in MODULES if _layer(m) != "airflow"
             for target, _, line in _imports(m) if target.split(".")[0] == "airflow"]
    assert not wrong


def test_every_subpackage_says_what_it_may_import() -> None:
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module != "dicom_deid":
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert doc and "import" in doc, f"{module}: say what it may import"


def test_tests_mirror_the_package() -> None:
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    test_folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert subpackages == test_folders, subpackages ^ test_folders


def test_dags_only_wire_the_airflow_adapters() -> None:
    """DAG files read like the pipeline diagram: they import Airflow's SDK and the tasks of
    ``dicom_deid.airflow``, and hold no engine code of their own."""
    for path in sorted((PACKAGE.parents[1] / "dags").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module in {"__future__", "datetime", "airflow.sdk"} or \
                    node.module.startswith("dicom_deid.airflow"), f"{path.name}: {node.module}"
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert all(len(f.body) <= 5 for f in functions), path.name  # wiring, not logic
