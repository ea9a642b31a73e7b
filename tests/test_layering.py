"""The package's import graph: no cycles, and each layer imports only what lies below it.

Every module under `sc_imagenet/` (the Prefect wiring in `sc_imagenet/flows/` included) is parsed with
`ast`; an edge is every static import, wherever it sits (module top, inside a function, under
`if TYPE_CHECKING:`), plus `importlib.import_module("literal.name")`. Imports built from strings at
run time (the synth package's lazy `__getattr__`, the stage registry's loop over `STAGE_MODULES`)
are not seen.

Layers, top to bottom (docs/architecture.md):

    wiring     cli, flows, orchestration, build_summary (presentation: reads build state)
    build      build.py (plan, execute, status)
    stages     stages/
    domain     matching, detect, foreground, synth, train, evaluate, categories, dataset, report_page, matcher
    io         io/ (manifests, images, scans, locks, checkpoints, atomic writes)

Shared modules any layer may import: `config` (the typed build configuration), `paths`, `devices`,
`boxes` (the object-size definition), `registry` and the package root (`__version__`).

Rules checked on direct imports (a module's own import statements):

- no cycles, counting that importing `a.b.c` also runs the `__init__` of `a.b` (unless the importer
  lives inside `a.b`, where it has already run): a package `__init__` that imports heavy or
  upward modules is caught too;
- io imports nothing from sc_imagenet but io, paths, registry and the package root;
- domain packages never import stages, build or wiring; inside the domain, matching imports neither
  train nor evaluate (a trained generator is rebuilt by `matching.builder.load_generator`, next to
  the model) nor matcher (the pseudo-labeller never depends on the release's consumer), and evaluate
  does not import train;
- stages never import build or wiring; build never imports wiring;
- config imports only the package root, paths, registry, io and light domain *settings* modules
  (a module named `settings` or `config` inside a domain package, e.g. `matching.settings`,
  `synth.config`), and importing it loads neither torch nor cv2 (checked in a subprocess).

Rules are on packages, never on a list of files, so new modules are covered as they appear; a new
top-level package or module must be put in one layer (`LAYERS`), else a test fails naming it.
`ALLOWED` lists accepted exceptions, each with its reason; keep it empty if you can.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = "sc_imagenet"

WIRING = {"cli", "flows", "orchestration", "build_summary"}
BUILD = {"build"}
STAGES = {"stages"}
DOMAIN = {"matching", "detect", "foreground", "synth", "train", "evaluate", "categories", "dataset",
          "report_page", "matcher"}
IO = {"io"}
SHARED = {"config", "paths", "devices", "boxes", "registry", ""}  # "" = the package root (sc_imagenet/__init__.py)
# every top-level module and package of sc_imagenet/ belongs to exactly one of these, or the rules
# above would not see it: `test_every_package_has_a_layer` fails naming one that is in none
LAYERS: dict[str, set[str]] = {"WIRING": WIRING, "BUILD": BUILD, "STAGES": STAGES, "DOMAIN": DOMAIN, "IO": IO,
                               "SHARED": SHARED}

FORBIDDEN: dict[frozenset[str], set[str]] = {
    frozenset(DOMAIN): STAGES | BUILD | WIRING,
    frozenset(STAGES): BUILD | WIRING,
    frozenset(BUILD): WIRING,
    frozenset({"matching"}): {"train", "evaluate", "matcher"},
    frozenset({"evaluate"}): {"train"},
}
IO_MAY_IMPORT = IO | {"paths", "registry", ""}
CONFIG_MAY_IMPORT = IO | {"paths", "registry", ""}
SETTINGS_MODULE_NAMES = {"settings", "config"}  # light, dependency-free settings modules of domain packages

# Accepted violations: (importer, imported module) → why. Empty today.
ALLOWED: dict[tuple[str, str], str] = {}


def module_files() -> dict[str, Path]:
    """Module name → file, for sc_imagenet/ (packages under their own name, not `.__init__`)."""
    out: dict[str, Path] = {}
    for path in sorted((REPO / ROOT).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imported_names(importer: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module `importer` imports (only names in sc_imagenet; `from pkg import sub` → `pkg.sub`)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(importer, is_package, node.level, node.module)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for name in targets:
            # `import a.b.c` / `from a.b.c import x`: the deepest known module
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != importer:
                yield name


def direct_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {m: set(imported_names(m, p, modules)) for m, p in modules.items()}


def runtime_edges(direct: dict[str, set[str]], modules: dict[str, Path]) -> dict[str, set[str]]:
    """Direct imports plus the package `__init__`s they run (not the importer's own packages)."""
    out: dict[str, set[str]] = {}
    for m, targets in direct.items():
        own = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 2)}
        edges = set(targets)
        for t in targets:
            parts = t.split(".")
            edges |= {p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in modules and p not in own}
        out[m] = edges - {m}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as `[a, b, ..., a]`, or None (iterative DFS, deterministic order)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in sorted(graph):
        if start in state:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child):], child]
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def layer_of(module: str) -> str:
    """`sc_imagenet.matching.cascade` → `matching`; `sc_imagenet` → ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_problems(modules: Iterable[str]) -> list[str]:
    """A message for every top-level module or package that is in no layer, or in more than one."""
    found = []
    for top in sorted({layer_of(m) for m in modules}):
        homes = [name for name, members in LAYERS.items() if top in members]
        where = f"{ROOT}/{top}"
        if not homes:
            found.append(f"{where} is in no layer: add {top!r} to one of {', '.join(LAYERS)} in tests/test_layering.py "
                         "(docs/architecture.md, 'Layers'), or the import rules do not apply to it")
        elif len(homes) > 1:
            found.append(f"{where} is in more than one layer ({', '.join(homes)}) in tests/test_layering.py")
    return found


def is_settings_module(module: str) -> bool:
    parts = module.split(".")
    return len(parts) == 3 and parts[1] in DOMAIN and parts[2] in SETTINGS_MODULE_NAMES


def violations(direct: dict[str, set[str]]) -> list[str]:
    found = []
    for m, targets in sorted(direct.items()):
        src = layer_of(m)
        for t in sorted(targets):
            dst = layer_of(t)
            bad = None
            if src in IO and dst not in IO_MAY_IMPORT:
                bad = f"io may import only {sorted(IO_MAY_IMPORT)} (the root as '')"
            elif src == "config" and dst not in CONFIG_MAY_IMPORT and not is_settings_module(t):
                bad = "config may import only io, paths, registry, the root and domain settings modules"
            else:
                for layer, forbidden in FORBIDDEN.items():
                    if src in layer and dst in forbidden:
                        bad = f"{src} must not import {dst}"
            if bad and (m, t) not in ALLOWED:
                found.append(f"{m} imports {t}: {bad}")
    return found


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    modules = module_files()
    return modules, direct_imports(modules)


def test_the_graph_sees_the_package(graph: tuple[dict[str, Path], dict[str, set[str]]]) -> None:
    modules, direct = graph
    assert {"sc_imagenet.config", "sc_imagenet.cli", "sc_imagenet.matching.cascade",
            "sc_imagenet.flows.build_sc_imagenet"} <= set(modules)
    assert "sc_imagenet.matching.settings" in direct["sc_imagenet.config"]
    # function-level imports count: stages/train.py imports the loop inside `run`
    assert "sc_imagenet.train.loop" in direct["sc_imagenet.stages.train"]
    # `from pkg import submodule` resolves to the submodule
    assert "sc_imagenet.matching.backbones.vit" in direct["sc_imagenet.matching.backbones"]


def test_every_package_has_a_layer(graph: tuple[dict[str, Path], dict[str, set[str]]]) -> None:
    modules, _ = graph
    problems = layer_problems(modules)
    assert not problems, "\n".join(problems)


def test_no_import_cycles(graph: tuple[dict[str, Path], dict[str, set[str]]]) -> None:
    modules, direct = graph
    cycle = find_cycle(runtime_edges(direct, modules))
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_layers_import_only_downwards(graph: tuple[dict[str, Path], dict[str, set[str]]]) -> None:
    _, direct = graph
    assert violations(direct) == []


def test_allow_list_has_no_stale_entries(graph: tuple[dict[str, Path], dict[str, set[str]]]) -> None:
    _, direct = graph
    assert [pair for pair in ALLOWED if pair[1] not in direct.get(pair[0], set())] == []


def test_the_checks_catch_what_they_should() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    modules = {m: Path() for m in ("sc_imagenet.synth", "sc_imagenet.synth.config", "sc_imagenet.synth.meta",
                                   "sc_imagenet.config")}
    # a submodule importing its sibling does not loop through its own package's __init__ ...
    edges = runtime_edges({"sc_imagenet.synth": {"sc_imagenet.synth.meta"},
                           "sc_imagenet.synth.meta": {"sc_imagenet.synth.config"}}, modules)
    assert find_cycle(edges) is None
    # ... but an outside importer runs it
    assert "sc_imagenet.synth" in runtime_edges({"sc_imagenet.config": {"sc_imagenet.synth.config"}},
                                                modules)["sc_imagenet.config"]
    assert violations({"sc_imagenet.matching.x": {"sc_imagenet.stages.train"},
                       "sc_imagenet.io.y": {"sc_imagenet.synth.meta"},
                       "sc_imagenet.stages.z": {"sc_imagenet.build"},
                       "sc_imagenet.config": {"sc_imagenet.synth.config", "sc_imagenet.synth.render"}}) == [
        "sc_imagenet.config imports sc_imagenet.synth.render: config may import only io, paths, registry, the root "
        "and domain settings modules",
        "sc_imagenet.io.y imports sc_imagenet.synth.meta: io may import only ['', 'io', 'paths', 'registry'] "
        "(the root as '')",
        "sc_imagenet.matching.x imports sc_imagenet.stages.train: matching must not import stages",
        "sc_imagenet.stages.z imports sc_imagenet.build: stages must not import build",
    ]
    # a new package in no layer is named, not silently exempt from every rule
    (problem,) = layer_problems(["sc_imagenet.io.y", "sc_imagenet.newpkg", "sc_imagenet.newpkg.x",
                                 "sc_imagenet.flows.f"])
    assert problem.startswith("sc_imagenet/newpkg is in no layer: add 'newpkg' to one of WIRING, BUILD")


def test_config_import_stays_light() -> None:
    """`sc_imagenet.config` loads at CLI start-up: no torch, OpenCV or synthetic-data renderer."""
    code = ("import sys, sc_imagenet.config; heavy = sorted(m for m in ('torch', 'cv2', 'sc_imagenet.synth.render', "
            "'sc_imagenet.synth.dataset', 'sc_imagenet.matching.cascade') if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
