"""compkit's import graph runs one way: stages -> layers -> config (with the backbone registry); modules stay short.

Every ``import`` of a compkit module counts, wherever it stands: at the top, inside a function (a lazy import), or
under ``if TYPE_CHECKING:`` (an annotation is a dependency too). A module may import its own tier or a lower one:

* config: the configuration's schema, loading and checks, the backbone registry, the scorer registry and the
  error types. It imports no model code, so reading a config never reaches Keras or the model builders.
* layers: what the stages share: files and artefacts, data, tasks, models, fitting, devices, executors, tracking.
* stages: what ``make <stage>`` runs, the CLI and the report. A stage uses another only where :data:`STAGE_EDGES` says why.
"""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

SRC = REPO / "src" / "compkit"

CONFIG = {"errors", "redact", "metrics", "registry", "hyper", "schema", "checks", "config"}
STAGES = {"folds", "check", "train", "tune", "ensemble", "pseudo", "distill", "submit", "adversarial", "platform", "clean", "report",
          "predict", "package", "rehearse", "kernel", "entry", "cli", "__main__"}
TIERS = {"config": 0, "layers": 1, "stages": 2}

# stage -> stage imports that stand, each for a reason
STAGE_EDGES = {
    ("check", "folds"): "`make check` runs the input checks of `make folds` without writing",
    ("platform.zips", "check"): "an imported competition is checked as `make check` does",
    ("report.page", "adversarial"): "the report draws adversarial validation's section",
    ("predict", "submit"): "a predicted submission is ordered and validated as `make submit`'s",
    ("package", "predict"): "the bundle holds what `compkit predict` reads, in its format",
    ("entry", "predict"): "the bundle's predict.py runs `compkit predict` on the bundle",
    ("kernel", "platform"): "the bundle and the kernel go to Kaggle through platform.py's client and its one-line errors",
    ("kernel", "package"): "the kernel's and the dataset's metadata are the files `make package` wrote",
    ("kernel", "entry"): "the bundle is checked before upload with the manifest check its predict.py runs",
    ("distill", "train"): "a student's folds are trained by train's fold loop and fold unit, as every model's are",
    ("cli", "*"): "the CLI runs every stage",
    ("__main__", "cli"): "python -m compkit is the CLI",
}


def _name(path) -> str:
    """``a.b`` for ``src/compkit/a/b.py``; a package is its ``__init__.py``."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _tier(module: str) -> str:
    top = module.split(".")[0]
    return "config" if top in CONFIG else "stages" if top in STAGES else "layers"


def import_graph() -> dict[str, set[str]]:
    """compkit module -> every compkit module it imports: top-level, lazy (in a function) and TYPE_CHECKING alike."""
    paths = sorted(SRC.rglob("*.py"))
    modules, graph = {_name(p) for p in paths}, {}
    for path in paths:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):  # every node: function bodies and TYPE_CHECKING blocks too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compkit"):
                found |= {a.name for a in node.names} if node.module == "compkit" else {node.module.removeprefix("compkit.")}
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("compkit.") for a in node.names if a.name.startswith("compkit.")}
        graph[_name(path)] = {m for m in found if m in modules and m != _name(path)}
    return graph


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "finetune" in graph["backbones"]  # imported inside build_model only
    assert "hyper" in graph["backbones"]  # imported under TYPE_CHECKING only


def test_imports_run_from_stages_to_layers_to_config():
    upward = [f"{module} ({_tier(module)}) -> {dep} ({_tier(dep)})" for module, deps in import_graph().items() for dep in sorted(deps)
              if TIERS[_tier(dep)] > TIERS[_tier(module)]]
    assert not upward, f"imports against the layering: {upward}"


def test_a_stage_imports_another_only_where_stated():
    graph = import_graph()
    found = {(m, d) for m, deps in graph.items() for d in deps if _tier(m) == _tier(d) == "stages" and m.split(".")[0] != d.split(".")[0]}
    unstated = {(m, d) for m, d in found if (m, d) not in STAGE_EDGES and (m, "*") not in STAGE_EDGES}
    assert not unstated, f"a stage imports another stage: {sorted(unstated)}; import a layer instead, or state why in STAGE_EDGES"


@pytest.mark.parametrize("module", sorted(CONFIG))
def test_the_config_layer_imports_no_model_code(module):
    assert _tier(module) == "config" and (SRC / f"{module}.py").is_file()
    assert not {d for d in import_graph()[module] if _tier(d) != "config"}


def test_no_import_cycle_counting_lazy_and_type_checking_imports():
    graph, state = import_graph(), {}

    def visit(module, stack):
        state[module] = "open"
        for dep in sorted(graph[module]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join([*stack, module, dep])}"
            if dep not in state:
                visit(dep, [*stack, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: _name(p))
def test_a_module_over_400_lines_says_why_in_its_docstring(path):
    source = path.read_text()
    assert source.count("\n") <= 400 or "Over 400 lines" in (ast.get_docstring(ast.parse(source)) or ""), \
        f"{path.name}: {source.count(chr(10))} lines; split it, or say in its docstring why not (\"Over 400 lines ...\")"
