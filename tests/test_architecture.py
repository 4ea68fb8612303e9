"""The house rules of the code: no import cycle anywhere, layers that only import downwards, no torch where
the analysis or a torch-free part of the extractor runs.

The import graph is read from the source (every ``import``, also those inside functions), so a cycle that
only closes at run time is found too; then every module is imported in a fresh interpreter.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "extract", "analyze")
TORCH_STACK = ("torch", "timm", "open_clip", "torchvision")
# extract modules that need torch at import; everything else stays importable without it.
TORCH_MODULES = {"extract.hub", "extract.models", "extract.zeroshot", "extract.tensors", "extract.device_resample",
                 "extract.gpu_decode"}
# Stdlib only (plain data the rest stands on): not even numpy.
STDLIB_ONLY = {"schemas.registry", "schemas.paper", "extract.errors", "extract.options", "extract.spec",
               "extract.spec.models", "extract.spec.transforms"}


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(project modules imported anywhere in the file, top-level third-party roots imported at module level)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    top_level_external: set[str] = set()

    def add(target: str, module_level: bool) -> None:
        if target in known:
            found.add(target)
        elif target.split(".")[0] not in PACKAGES and module_level:
            top_level_external.add(target.split(".")[0])

    module_level_nodes = set()
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            module_level_nodes.add(id(sub))
    for node in ast.walk(tree):
        at_top = id(node) in module_level_nodes
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, at_top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in known:  # "from pkg import submodule"
                    add(f"{module}.{alias.name}", at_top)
                else:                                  # a name defined in the module itself
                    add(module, at_top)
    found.discard(name)
    return found, top_level_external


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = module_files()
    edges, external = {}, {}
    for name, path in files.items():
        edges[name], external[name] = imports_of(name, path, set(files))
    return edges, external


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_reader_sees_imports_inside_functions():
    edges, _ = graph()
    assert "extract.hub" in edges["extract.plan"]  # imported inside plan() only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_anywhere():
    edges, _ = graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_layers_import_only_downwards():
    edges, external = graph()
    for name, targets in edges.items():
        top = name.split(".")[0]
        if top == "schemas":
            assert not {t for t in targets if t.split(".")[0] != "schemas"}, (name, targets)
        elif top == "analyze":
            assert not {t for t in targets if t.startswith("extract")}, (name, targets)
        else:
            assert not {t for t in targets if t.startswith("analyze")}, (name, targets)
        if name.startswith("extract.spec"):
            assert not {t for t in targets if t.startswith("extract") and not t.startswith("extract.spec")
                        and t != "extract.errors" and t != "extract"}, (name, targets)
    for name in STDLIB_ONLY:
        third_party = {m for m in external[name] if m not in sys.stdlib_module_names}
        assert not third_party, (name, third_party)


def test_every_module_imports_in_a_fresh_interpreter_and_only_torch_modules_load_torch():
    edges, _ = graph()
    light = sorted(m for m in edges if m not in TORCH_MODULES and m not in ("extract.__main__", "analyze.__main__"))
    code = (
        "import importlib, json, sys\n"
        f"light = {light!r}\n"
        "for m in light: importlib.import_module(m)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {TORCH_STACK!r})\n"
        f"for m in {sorted(TORCH_MODULES)!r}: importlib.import_module(m)\n"
        "print(json.dumps(loaded))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []
