"""A method's recipe is resolved once and every engine reads the same object; its keys are typed
in the loss's own module; the registries find their modules; the docs follow the code."""

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.integrations import spelling
from rlvr_explore.recipe import recipes, resolve
from rlvr_explore.train.config import PACKAGED, load_config
from rlvr_explore.train.rl import RLTrainer

ROOT = Path(__file__).resolve().parents[1]


def test_the_trainer_binds_each_recipe_once_not_per_micro_batch(tiny_config, monkeypatch):
    cfg = tiny_config("algorithm.method=casp", "algorithm.warmup_method=grpo", "algorithm.warmup_method_steps=1",
                      "algorithm.micro_batch_size=4", "train.steps=2")
    calls = []
    bind = losses.bind
    monkeypatch.setattr(losses, "bind", lambda *args, **kwargs: calls.append(args[0]) or bind(*args, **kwargs))
    monkeypatch.setattr(losses.core, "bind", losses.bind)
    trainer = RLTrainer(cfg)
    trainer.run()  # 2 steps x 16 responses in micro-batches of 4: 8 loss calls
    assert [getattr(c, "name", c) for c in calls] == ["casp", "grpo"]
    assert trainer.recipes["casp"].loss.config.alpha == 0.01


def test_each_method_reads_its_own_typed_config():
    casp = losses.get_method("casp")
    assert casp.config.__module__ == "rlvr_explore.losses.casp" and casp.config.__name__ == "CaspConfig"
    assert {"alpha", "lam", "top_n", "q"} <= casp.accepted_keys and "kl_cov_ratio" not in casp.accepted_keys
    assert "alpha" not in losses.get_method("grpo").accepted_keys
    assert losses.get_method("kl_cov").config.__module__ == "rlvr_explore.losses.cov"
    with pytest.raises(ValueError, match=r"\['kl_cov_ratio'\] do not apply to loss 'casp'; it takes .*'alpha'"):
        losses.bind("casp", {"kl_cov_ratio": 0.1})
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
        losses.bind("casp", {"alpha": 2})
    bound = losses.bind("forking", {})
    assert bound.config.quantile_scope == "batch" and bound.batch_wide_gate  # the method's own default


def test_a_key_no_part_of_the_recipe_reads_is_refused_naming_what_is_read():
    with pytest.raises(ValueError, match=r"algorithm.loss: .*\['alpah'\] do not apply to loss 'casp'"):
        resolve("casp", {"alpah": 0.3})
    with pytest.raises(ValueError, match=r"algorithm.loss.kl_coef: set algorithm.kl_coef instead"):
        resolve("grpo", {"kl_coef": 0.1})
    with pytest.raises(ValueError, match=r"\['pkpo_k'\] are not read by algorithm.advantage='grpo'"):
        resolve("grpo", advantage_hp={"pkpo_k": 4})
    recipe = resolve("grpo", advantage="pkpo", advantage_hp={"pkpo_k": 2}, kl_coef=0.1)
    assert recipe.advantage_config.pkpo_k == 2 and recipe.loss.config.kl_coef == 0.1 and recipe.estimator == "pkpo"


def test_a_bound_loss_refuses_loose_hyperparameters_beside_it():
    bound = losses.bind("casp", {"alpha": 0.2})
    B, T = 2, 3
    tensors = dict(logp=torch.zeros(B, T), old_logp=torch.zeros(B, T), advantages=torch.ones(B),
                   response_mask=torch.ones(B, T, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"loss 'casp' is bound already; \['alpha'\] would be ignored"):
        losses.policy_loss(bound, **tensors, alpha=0.3)


def _packaged_algorithms() -> list[tuple[str, object]]:
    """(label, config) of every packaged config and of every run of the packaged comparison files."""
    from rlvr_explore.compare import load_comparison
    from rlvr_explore.train.config import apply_mapping, read_yaml

    found = []
    for path in sorted(PACKAGED.glob("*.yaml")):
        if "runs" in read_yaml(path)[0]:
            comparison = load_comparison(path)
            for run, overrides in comparison.runs.items():
                overrides = {k: v for k, v in (overrides or {}).items() if k != "trainer"}
                found.append((f"{path.stem}:{run}", apply_mapping(copy.deepcopy(comparison.base), overrides, run)))
        else:
            found.append((path.stem, load_config(path)))
    return found


@pytest.mark.parametrize("label,cfg", _packaged_algorithms(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_packaged_config_gives_the_same_loss_through_its_recipe_as_through_loose_keywords(label, cfg):
    """The recipe binds what the YAML says: the same values as the method's name with the
    config's settings as keywords, on the same tensors (CaSP's statistics included)."""
    from rlvr_explore.candidates import token_stats

    recipe = recipes(cfg.algorithm)[cfg.algorithm.method]
    generator = torch.Generator().manual_seed(0)
    B, T, V, N = 6, 5, 11, cfg.rollout.top_n
    logits = torch.randn(B, T, V, generator=generator, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=generator)
    stats = token_stats(logits, ids, top_n=N)
    tensors = dict(logp=stats.logp, old_logp=stats.logp.detach() + 0.01, advantages=torch.randn(B, generator=generator,
                   dtype=torch.float64), response_mask=torch.ones(B, T, dtype=torch.bool), response_ids=ids,
                   topn_logp=stats.topn_logp, topn_ids=stats.topn_ids, entropy=stats.entropy,
                   rewards=torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=torch.float64),
                   ref_logp=stats.logp.detach() - 0.02)
    torch.manual_seed(1)  # Clip-Cov draws its tokens
    bound_value, _ = losses.policy_loss(recipe.loss, **tensors)
    torch.manual_seed(1)
    loose_value, _ = losses.policy_loss(cfg.algorithm.method, **tensors, **cfg.algorithm.loss,
                                        kl_coef=cfg.algorithm.kl_coef, entropy_coeff=cfg.algorithm.entropy_coeff)
    assert torch.equal(bound_value, loose_value)


def test_registries_find_a_new_loss_module_without_an_import_list(tmp_path):
    """A copy of the losses package with one more module: importing the package registers it."""
    package = tmp_path / "losses_copy"
    shutil.copytree(Path(losses.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "mine.py").write_text(
        "from .core import clipped_token_loss, ratio, register_loss\n\n\n"
        "@register_loss('my_loss', 'a test')\n"
        "def my_loss(inputs, cfg):\n"
        "    return clipped_token_loss(ratio(inputs), inputs.advantages, cfg)[0], {}\n")
    code = ("import losses_copy; print(sorted(losses_copy.LOSSES))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "my_loss" in out and "casp" in out
    assert not re.search(r"from \. import|import casp", Path(losses.__file__).read_text())


def test_help_config_lists_one_methods_keys():
    out = subprocess.run([sys.executable, "-m", "rlvr_explore", "train", "--help-config", "--method", "casp"],
                         capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^  (\w+): ", out, flags=re.M)
    config_keys = [k for k in losses.core.config_keys(losses.get_method("casp").config) if k not in ("kl_coef", "entropy_coeff")]
    assert listed[: len(config_keys)] == config_keys
    assert "alpha: 0.01  # CaSP smoothing strength" in out and "kl_cov_ratio" not in out
    assert set(listed[len(config_keys):]) == adv_lib.keys_read("grpo")


def test_the_engine_spelling_table_covers_every_loss_key_and_is_the_one_in_the_docs():
    assert spelling.spelled_loss_keys() == set(losses.core.key_types()), "a loss key without its engine spellings"
    text = (ROOT / "docs" / "integrations.md").read_text()
    between = text.split(spelling.BEGIN, 1)[1].split(spelling.END, 1)[0].strip()
    assert between == spelling.markdown(), "run: python -m rlvr_explore.integrations.spelling docs/integrations.md"


def _rows(section: str) -> dict[str, str]:
    """Name cell -> the whole row, for the table under ``section`` of docs/methods.md."""
    text = (ROOT / "docs" / "methods.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1]: line for line in body.splitlines() if line.startswith("| `")}


def _row_of(rows: dict[str, str], name: str) -> str:
    found = [row for cell, row in rows.items() if f"`{name}`" in cell]
    assert len(found) == 1, f"docs/methods.md: no single row for {name!r}"
    row = found[0]
    same = re.search(r"\| as `(\w+)`", row)  # "as `casp`": the settings of another row
    return row + (_row_of(rows, same.group(1)) if same else "")


def _spelled(value) -> list[str]:
    """How docs/methods.md may write a default: 2e-4 and 0.0002, 1 and 1.0, `response`."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float):
        return sorted({repr(value), f"{value:g}", f"{value:.0e}".replace("e-0", "e-")})
    return [str(value)]


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_docs_methods_row_of_each_loss_gives_its_own_keys_and_defaults(name):
    row = _row_of(_rows("Policy losses"), name)
    for key, value in losses.get_method(name).own_defaults().items():
        common = key in losses.core.config_keys(losses.LossConfig)
        assert common or f"`{key}`" in row, f"{name}: key {key} missing from its docs/methods.md row"
        assert any(text in row for text in _spelled(value)), f"{name}: default {key}={value} missing from its row"


@pytest.mark.parametrize("name", sorted({*adv_lib.ESTIMATORS, *adv_lib.SHAPINGS}))
def test_docs_methods_row_of_each_estimator_and_shaping_step_gives_its_keys(name):
    rows = {**_rows("Advantage estimators"), **_rows("Advantage shaping")}
    found = [row for cell, row in rows.items() if f"`{name}`" in cell]
    assert len(found) == 1, f"docs/methods.md: no single row for {name!r}"
    row = found[0] + (_row_of(rows, m.group(1)) if (m := re.search(r"\| as `(\w+)`", found[0])) else "")
    defaults = adv_lib.AdvantageConfig()
    for key in sorted(adv_lib.KEYS[name] - adv_lib.COMMON_KEYS):
        assert f"`{key}`" in row, f"{name}: key {key} missing from its docs/methods.md row"
        assert any(text in row for text in _spelled(getattr(defaults, key))), f"{name}: default of {key} missing"
