"""The package's house rules, checked: no import cycle among its modules (module- or function-level imports), and
the layers' direction: the data's path (probes, models, interventions, metrics, decision, plots, report) never
imports the applications on top (lora, select, vision_layers, nano's training), nor the command layer."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "vfl").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's vfl imports, wherever they stand in it (function-level ones too), as module names."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                wanted = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("vfl") and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_of_the_package_imports_itself_back_through_others():
    graph = _imports(_modules())
    assert len(graph) > 40 and graph["vfl.nano.train"]  # the walk found the package and its imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert _cycle({**graph, "vfl.metrics": graph["vfl.metrics"] | {"vfl.api"}})  # and would find one


def test_the_data_path_imports_no_application_and_nothing_imports_the_command_layer():
    graph = _imports(_modules())
    path = ("vfl.probes", "vfl.interventions", "vfl.metrics", "vfl.decision", "vfl.plots", "vfl.report", "vfl.html_report",
            "vfl.runner", "vfl.images", "vfl.jsonl", "vfl.fingerprint")
    applications = ("vfl.lora", "vfl.select", "vfl.vision_layers", "vfl.nano.train", "vfl.nano.study", "vfl.api")
    upward = [f"{m} -> {t}" for m, targets in graph.items() if m.startswith(path)
              for t in targets if t.startswith(applications)]
    assert not upward, upward
    assert not [m for m, targets in graph.items() if "vfl.cli" in targets and m != "vfl.__main__"]


def test_the_commands_list_of_tiny_families_is_the_builders():
    """`vfl make-tiny --help` lists the families without importing torch, from a literal kept equal to these."""
    from vfl.cli import TINY_FAMILIES
    from vfl.models.tiny import BUILDERS, FAMILIES

    assert TINY_FAMILIES == FAMILIES and set(BUILDERS) == set(FAMILIES)


def test_no_function_of_the_package_is_over_80_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
