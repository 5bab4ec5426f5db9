"""The package's import layers (docs/development.md, "Layout"): every import, at module or function level, goes to the
same layer or one below it, and no modules import each other in a cycle.

Layers, bottom up: `base` (settings, spaces, numpy helpers; no env, no model) -> `envs` (building and
stepping environments) and `model` (networks, distributions, the loss, the backends), which do not import
each other -> `engine` (PPO: rollouts, update, saving, evaluation, callbacks, export) -> `tools` (the runner and the
command-line tools, the package's `__init__`).
"""

import ast
import os

import pytest

pytestmark = [pytest.mark.backend_independent, pytest.mark.quick]

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unstable_ppo")

LAYERS = {
    "base": {"version", "spaces", "config", "cli", "faults", "quiet", "normalize", "buffer", "summaries",
             "observations"},
    "envs": {"envs"},
    "model": {"distributions", "losses", "encoders", "networks", "model", "acting", "backend"},
    "engine": {"rollout", "evaluation", "saving", "checkpoint", "callbacks", "compiled", "ppo", "export"},
    "tools": {"", "bundled", "run", "run_settings", "training_run", "ray_gather", "play", "plot", "export.cli", "export.__main__",
              "tune"},
}
MAY_IMPORT = {
    "base": {"base"},
    "envs": {"base", "envs"},
    "model": {"base", "model"},
    "engine": {"base", "envs", "model", "engine"},
    "tools": {"base", "envs", "model", "engine", "tools"},
}


def modules():
    """{dotted name relative to the package ('' for its __init__): path}."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports(found):
    """{module: set of package modules it imports anywhere in its code}."""
    def resolve(name):
        while name not in found:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    graph = {}
    for module, path in found.items():
        is_package = path.endswith("__init__.py")
        here = module.split(".") if module else []
        package = here if is_package else here[:-1]
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(["unstable_ppo", *package[:len(package) - node.level + 1], *filter(None, [node.module])])
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name == "unstable_ppo" or name.startswith("unstable_ppo."):
                    targets.add(resolve(name[len("unstable_ppo."):] if "." in name else ""))
        targets.discard(module)
        graph[module] = targets
    return graph


def layer(module):
    """The layer of a module: its own entry, else its package's (`backend.jax` is in `backend`'s)."""
    name = module
    while True:
        for layer_name, members in LAYERS.items():
            if name in members:
                return layer_name
        if not name:
            raise AssertionError(f"unstable_ppo.{module} is in no layer: add it to LAYERS (and the layout in docs/development.md)")
        name = name.rsplit(".", 1)[0] if "." in name else ""


def test_every_import_goes_down_or_across_its_layer():
    graph = imports(modules())
    wrong = [f"{m or '__init__'} ({layer(m)}) imports {t or 'unstable_ppo'} ({layer(t)})"
             for m, targets in sorted(graph.items()) for t in sorted(targets) if layer(t) not in MAY_IMPORT[layer(m)]]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = imports(modules())
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(m or "unstable_ppo" for m in stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_layer_test_sees_a_wrong_import(tmp_path, monkeypatch):
    """The check itself: a base module importing the env layer is reported."""
    found = modules()
    bad = tmp_path / "spaces.py"
    bad.write_text("def f():\n    from unstable_ppo.envs import make_vec_env\n")
    found["spaces"] = str(bad)
    graph = imports(found)
    assert "envs" in graph["spaces"] and layer("envs") not in MAY_IMPORT[layer("spaces")]
