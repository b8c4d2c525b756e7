"""The package's layers import downward only (docs/architecture.md): the algorithm layer from
itself; the training wing and the studying wing not from each other's top or from the commands;
the engine integrations from the algorithm layer, not from the built-in trainer."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "rlvr_explore"
ALGORITHM = {"documented", "candidates", "fused", "losses", "advantages", "recipe", "metrics", "theory"}
COMMANDS = {"cli", "demo", "bench", "__main__"}
# the one integration file that runs the built-in sampler: `rlvr-explore dph-prepare` builds DPH-RL's data for verl
BUILT_IN_DATA = {"integrations/verl_rehearsal.py"}


def _imports(text: str, here: tuple[str, ...]) -> set[str]:
    """The top-level units of rlvr_explore (``losses``, ``train``, ...) that the source ``text`` of a
    module in the package folder ``here`` (``("losses",)``) imports."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)]
            names = [".".join((*base, node.module)) if node.module else ".".join(base) + "." + alias.name
                     for alias in node.names] if base or node.module else [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlvr_explore"):
            rest = node.module.split(".")[1:]
            names = [".".join(rest)] if rest else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("rlvr_explore.")]
        found |= {name.split(".")[0] for name in names if name}
    return found


def _unit(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


FILES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward(path):
    unit = _unit(path)
    imported = _imports(path.read_text(), path.relative_to(ROOT).parent.parts) - {unit}
    relative = str(path.relative_to(ROOT))
    if unit in ALGORITHM:
        assert imported <= ALGORITHM, f"{relative}: the algorithm layer imports {sorted(imported - ALGORITHM)}"
    if unit in {"train", "rollout", "models", "tasks", "verifiers", "toys"}:
        assert not imported & ({"compare", "report", "integrations"} | COMMANDS), f"{relative} imports above it"
    if unit in {"compare", "report"}:
        assert not imported & ({"integrations"} | COMMANDS), f"{relative} imports above it"
    if unit == "integrations" and relative not in BUILT_IN_DATA:
        assert "train" not in imported, f"{relative}: an engine integration imports the built-in trainer"


def test_the_import_reader_sees_relative_and_absolute_imports():
    """The check above can fail: a module of losses/ importing upward is caught in every spelling."""
    for text in ("from rlvr_explore.train.config import Config\n", "from ..train import config\n",
                 "from .. import train\n", "import rlvr_explore.train.rl\n", "from rlvr_explore import train\n"):
        assert "train" in _imports(text, ("losses",)), text
    assert _imports("from .core import bind\nfrom . import casp\n", ("losses",)) == {"losses"}
