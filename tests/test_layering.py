"""The house rules that keep the flow readable: the library never imports the jobs, the
modules never import Ray or MLflow, and no source file grows past 500 lines."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "recmtl").rglob("*.py"))


def _imported_names(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_library_file_names_the_jobs():
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imported_names(p)
                                                  if n.split(".")[0] == "pipelines")
                 for p in LIBRARY}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_a_lazy_import(tmp_path):
    """The AST scan above would catch an import hidden inside a function."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from pipelines.jobs.train import train\n    return train\n")
    assert "pipelines.jobs.train" in _imported_names(probe)


def test_importing_every_library_module_loads_no_job():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in LIBRARY]
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pipelines')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def _loaded(modules: str, watched: set[str]) -> list[str]:
    """The ``watched`` top-level packages that importing ``modules`` loads, in a fresh process."""
    code = (f"import json, sys, {modules}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {watched!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_modules_import_neither_ray_nor_mlflow():
    assert _loaded("recmtl.modules.mmoe, recmtl.models.builder, recmtl.losses",
                   {"ray", "mlflow"}) == []


def test_the_worker_and_the_training_bench_load_without_mlflow():
    """The GPU machine has no MLflow (docs/gpu.md): a worker imports it only for a tracked run."""
    assert _loaded("recmtl.train.entry, recmtl.train.worker, pipelines.bench.training",
                   {"mlflow", "polars"}) == []


def test_no_source_file_over_500_lines():
    files = [*LIBRARY, *(ROOT / "pipelines").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
