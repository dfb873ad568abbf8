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
