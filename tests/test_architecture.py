"""The package's layering, read from the source with `ast` (docs/architecture.md):

- the import graph of `flowlin` has no cycles;
- the core never imports the applications (`flowlin.reproduce`, the CLI);
- no module reaches into another module's `_private` names;
- matplotlib is imported only by the applications, and `import flowlin` loads neither
  matplotlib nor the applications.
"""

import ast
import pathlib
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parents[1] / "flowlin"
#: Applications: above the core, never imported by it.
APPLICATIONS = ("flowlin.reproduce", "flowlin._cli", "flowlin.__main__")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text()) for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(mods: dict[str, ast.Module]) -> dict[str, set[tuple[str, str | None]]]:
    """module → {(imported module, imported name or None)}, flowlin modules only, at any depth
    of the file (function-local imports count)."""
    packages = {m for m in mods if (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    out = {}
    for mod, tree in mods.items():
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(a.name, None) for a in node.names if a.name.startswith("flowlin")}
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    target = _resolve(mod, mod in packages, node.level, node.module)
                if not target.startswith("flowlin"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.add((sub, None) if sub in mods else (target, a.name))
        out[mod] = found
    return out


def graph(mods) -> dict[str, set[str]]:
    return {m: {t for t, _ in deps if t in mods and t != m} for m, deps in imports(mods).items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _is_parent_package(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def private_cross_module_names(mods) -> list[str]:
    """`from .x import _y` and `x._y` where x is another flowlin module (a package's own
    submodules, and `__init__` re-exports of its children, are its own business)."""
    bad = []
    for mod, deps in imports(mods).items():
        for target, name in deps:
            if name and name.startswith("_") and not name.startswith("__"):
                if not (_is_parent_package(target, mod) or _is_parent_package(mod, target)):
                    if target != mod:
                        bad.append(f"{mod}: from {target} import {name}")
        aliases = {}
        for node in ast.walk(mods[mod]):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(mods[mod]):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                target = aliases.get(node.value.id, "")
                if target.startswith("_") or target.startswith("flowlin"):
                    bad.append(f"{mod}: {node.value.id}.{node.attr}")
    return sorted(set(bad))


def matplotlib_importers(mods) -> list[str]:
    out = []
    for mod, tree in mods.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] == "matplotlib" for n in names):
                out.append(mod)
                break
    return sorted(out)


def test_no_import_cycles():
    assert cycles(graph(modules())) == []


def test_core_never_imports_applications():
    mods = modules()
    upward = [
        f"{m} imports {t}"
        for m, deps in graph(mods).items()
        if not m.startswith(APPLICATIONS)
        for t in deps
        if t.startswith(APPLICATIONS)
    ]
    assert upward == []


def test_no_private_cross_module_names():
    assert private_cross_module_names(modules()) == []


def test_matplotlib_only_in_applications():
    assert all(m.startswith(APPLICATIONS) for m in matplotlib_importers(modules()))
    code = (
        "import sys, flowlin; "
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'flowlin.reproduce'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_checks_can_fail():
    """Positive controls: each check finds a planted violation."""
    planted = {
        "flowlin.a": ast.parse("from .b import x\nfrom ._c import _hidden\nimport matplotlib"),
        "flowlin.b": ast.parse("from . import a"),
        "flowlin._c": ast.parse("_hidden = 1"),
    }
    assert cycles(graph(planted)) == [["flowlin.a", "flowlin.b"]]
    assert private_cross_module_names(planted) == ["flowlin.a: from flowlin._c import _hidden"]
    assert matplotlib_importers(planted) == ["flowlin.a"]
