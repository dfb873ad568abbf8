"""The house: dlexp's import graph has no circles, and no function runs over 60 lines."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dlexp"


def _modules():
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, path.name == "__init__.py"


def _imports(name, tree, is_package):
    """Every dlexp module ``name`` imports, at the top or inside a function."""
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("dlexp"))
        elif isinstance(node, ast.ImportFrom):
            base = here.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("dlexp"):
                yield module
                yield from (f"{module}.{a.name}" for a in node.names)


def _graph():
    modules = {name: (path, pkg) for name, path, pkg in _modules()}
    graph = {}
    for name, (path, pkg) in modules.items():
        tree = ast.parse(path.read_text())
        graph[name] = {m for m in _imports(name, tree, pkg) if m in modules and m != name}
    return graph


def test_no_import_circles():
    graph, done, path = _graph(), set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            # a package's own __init__ importing its submodules is how a package is built, not a circle
            if not nxt.startswith(node + "."):
                visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_no_function_over_60_lines():
    long = []
    for name, path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, long


# The house's floors. The root holds the entry points (what a command runs) and the small base modules the
# wings share; each folder imports only the folders below it and the base modules named here; the sweep
# package is on top and nothing below it imports it.
BASE = {"dlexp.checks", "dlexp.config", "dlexp.interrupt", "dlexp.longlived", "dlexp.metric_names", "dlexp.threads",
        "dlexp.private_api", "dlexp.safe_pickle", "dlexp.viz"}
ENTRY = {"dlexp.cli", "dlexp.composition", "dlexp.entry", "dlexp.errors", "dlexp.output", "dlexp.predict",
         "dlexp.rundir"}
MAY_IMPORT = {
    "models": {"dlexp.checks", "dlexp.metric_names"},
    "data": {"dlexp.checks", "dlexp.safe_pickle"},
    "train": {"models", "data", "dlexp.interrupt", "dlexp.private_api"},
    "tracking": {"models", "data", "train"} | BASE,
    "run": {"tracking", "train", "data", "models"} | BASE,
    "sweep": {"run", "tracking", "train", "data", "models"} | BASE | ENTRY - {"dlexp.cli", "dlexp.predict"},
}


def _place(module: str) -> str:
    """``dlexp.run.phases`` -> ``run``; a root module is itself; a folder's ``__init__`` is the folder."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return module


def test_each_folder_imports_only_the_floors_below_it():
    wrong = []
    for module, imported in _graph().items():
        here = _place(module)
        allowed = MAY_IMPORT.get(here, BASE | {"models"} if module in BASE else None)
        if allowed is None:  # an entry point: anything
            continue
        wrong += [f"{module} -> {m}" for m in sorted(imported)
                  if _place(m) != here and _place(m) not in allowed and m != "dlexp"]
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def test_the_root_holds_entry_points_config_and_the_shared_base_only():
    root = {f"dlexp.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "_version")}
    assert root == BASE | ENTRY, f"root modules not placed on a floor: {sorted(root - BASE - ENTRY)}"
