"""The package's import boundaries and house rules, checked on the source so that a change that breaks them
fails here rather than on a user's machine (e.g. a reward worker that suddenly imports torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SSPO = Path(__file__).resolve().parents[1] / "sspo"
MAX_FUNCTION_LINES = 80

# module or package -> top-level packages it must never import, at import time or inside a function
FORBIDDEN = {
    "loss.py": {"verl", "ray", "vllm", "transformers", "hydra", "omegaconf"},
    "segmentation.py": {"verl", "ray", "vllm", "transformers", "hydra", "omegaconf"},
    "reward": {"torch", "verl", "ray", "vllm", "transformers", "numpy"},
    "tools/data.py": {"torch", "verl", "ray", "vllm"},
    "tools/report.py": {"torch", "verl", "ray", "vllm"},
    "tools/evaluation.py": {"torch", "verl", "ray"},  # vLLM only inside `generate`, never verl
}


def _modules(path: Path) -> list[Path]:
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imported_packages(path: Path) -> set[str]:
    """Top-level names of every import statement anywhere in the file (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_import_boundaries_in_the_source(where):
    for module in _modules(SSPO / where):
        bad = _imported_packages(module) & FORBIDDEN[where]
        assert not bad, f"{module.relative_to(SSPO.parent)} imports {sorted(bad)}"


def test_the_algorithm_core_imports_only_torch_at_run_time():
    """What a bare GPU machine with torch alone needs: the loss and the segmentation run without verl."""
    code = (
        "import sys, torch\n"
        "from sspo.loss import SSPOSettings, sspo_token_losses\n"
        "from sspo.segmentation import segment_ids_from_delimiters\n"
        "m = torch.ones(2, 4, dtype=torch.bool)\n"
        "seg = segment_ids_from_delimiters(torch.tensor([[0, 1, 0, 1], [0, 0, 0, 1]]).bool(), m)\n"
        "lp = torch.zeros(2, 4, requires_grad=True)\n"
        "loss, metrics = sspo_token_losses(lp.detach() - 0.1, lp, torch.ones(2, 4), m, SSPOSettings(), 0.2, 0.28,\n"
        "                                  segment_ids=seg, entropy=torch.rand(2, 4))\n"
        "loss.sum().backward()\n"
        "heavy = sorted(p for p in ('verl', 'ray', 'vllm', 'transformers', 'hydra') if p in sys.modules)\n"
        "print(heavy, metrics['actor/sspo/units_per_response'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # a hang guard only: imports are slow on a busy machine
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] 1.5", out.stdout  # 2 and 1 subsentences


def test_functions_stay_short():
    long = []
    for module in _modules(SSPO):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module.relative_to(SSPO.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_nothing_points_outside_the_repository():
    """Users have only the repository: no code or config may send a reader to the developers' ../shared."""
    repo = SSPO.parent
    texts = [*SSPO.rglob("*.py"), *(repo / "recipe").rglob("*.yaml"), *(repo / "docs").glob("*.md"), repo / "README.md"]
    bad = [str(p.relative_to(repo)) for p in texts if "shared/docs" in p.read_text() or "shared/seeds" in p.read_text()]
    assert not bad, bad


def test_every_public_function_has_a_docstring_and_type_hints():
    missing = []
    for module in _modules(SSPO):
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                args = [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
                hinted = node.returns is not None and all(a.annotation is not None for a in args)
                if ast.get_docstring(node) is None or not hinted:
                    missing.append(f"{module.relative_to(SSPO.parent)}:{node.lineno} {node.name}")
    assert not missing, missing
