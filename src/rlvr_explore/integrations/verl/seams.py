"""Where the plugin meets verl: the table of every verl function it wraps or calls, with the
parameters it was written against, fitted as each module loads (one that does not fit is left as
verl wrote it, with a WARNING), and the start-up check that stops a run its trainer and verl
cannot serve."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import inspect
import logging
import sys
from dataclasses import dataclass

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses

from .driver import (make_compute_advantage, make_compute_old_log_prob, make_load_checkpoint, make_save_checkpoint,
                     make_v1_compute_advantage, selected_estimator)
from .engine import make_ppo_loss, make_prepare_model_outputs, make_train_batch
from .rehearsal import dph_settings, make_update_actor, make_v1_update_actor
from .settings import PREFIX, TESTED_VERL, _get, advantage_settings, selected_method, statistics_needed
from .state import STATE

log = logging.getLogger("rlvr_explore.verl")


def _rebind_ppo_loss(original, module):
    replacement = make_ppo_loss(original, module.no_padding_2_padding)
    workers = sys.modules.get("verl.workers.engine_workers")  # imported before this plugin: rebind its name too
    if workers is not None:
        workers.ppo_loss = replacement
    return replacement


def make_startup_check(original, trainer: str):
    """The trainer's start (v1 ``init``, legacy ``init_workers``), after ``check_run`` (below)."""
    def start(self):
        check_run(self.config, trainer)
        return original(self)

    start.rlvr_explore_original = original
    return start


def _original_only(make, *args):
    """A seam's ``wrap`` for a hook made from verl's original alone (and fixed ``args``)."""
    return lambda original, module: make(original, *args)


def _wrap_prepare_model_outputs(original, module):
    from verl.utils import tensordict_utils

    return make_prepare_model_outputs(original, tensordict_utils)


def _wrap_train_batch(original, module):
    from verl.utils import tensordict_utils
    from verl.workers.utils.padding import no_padding_2_padding

    return make_train_batch(original, no_padding_2_padding, tensordict_utils)


@dataclass(frozen=True)
class Seam:
    """An attribute of verl the plugin reads or wraps, with the parameters it was written against.
    ``serves`` names what needs it; ``trainer`` is the driver class it belongs to (None: the
    workers' code, shared by both trainers); ``wrap`` is None for an attribute only called."""
    module: str
    attribute: str
    parameters: tuple[str, ...]
    serves: str
    trainer: str | None = None
    wrap: object = None

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}"


LEGACY, V1 = "legacy (trainer.use_v1=false)", "v1 (trainer.use_v1=true, verl's default)"
CORE, WORKERS = "verl.trainer.ppo.core_algos", "verl.workers.engine.fsdp.transformer_impl"
RAY_TRAINER, V1_TRAINER = "verl.trainer.ppo.ray_trainer", "verl.trainer.ppo.v1.trainer_base"
# what each kind of need is called in messages
NEEDS = {"losses": "the rlvr_* loss modes and estimators", "statistics": "losses that read entropy, top-N or a batch gate",
         "candidates": "losses that read entropy or top-N", "train_batch": "batch gates and DPH-RL's rehearsal",
         "advantage_inputs": "estimators that read old log-probs, entropy, the step or answers",
         "answer_counts": "outcome exploration's answer counts across checkpoints",
         "rehearsal": "DPH-RL's rehearsal term", "startup": "the start-up check"}
SEAMS = (
    Seam(CORE, "register_policy_loss", ("name",), "losses"),
    Seam(CORE, "register_adv_est", ("name_or_enum",), "losses"),
    Seam(CORE, "agg_loss", ("loss_mat", "loss_mask", "loss_agg_mode", "dp_size", "batch_num_tokens",
                            "global_batch_size", "loss_scale_factor"), "losses"),
    Seam("verl.workers.utils.padding", "no_padding_2_padding", ("tensor", "data"), "statistics"),
    Seam("verl.workers.utils.losses", "ppo_loss", ("config", "model_output", "data", "dp_group"), "statistics",
         wrap=_rebind_ppo_loss),
    Seam(WORKERS, "FSDPEngineWithLMHead.prepare_model_outputs",
         ("self", "output", "output_args", "micro_batch", "logits_processor_func"), "candidates",
         wrap=_wrap_prepare_model_outputs),
    Seam(WORKERS, "FSDPEngineWithLMHead.forward_backward_batch", ("self", "data", "loss_function", "forward_only"),
         "train_batch"),
    Seam(WORKERS, "FSDPEngineWithLMHead.train_batch", ("self", "data", "loss_function"), "train_batch",
         wrap=_wrap_train_batch),
    Seam(RAY_TRAINER, "compute_advantage", ("data", "adv_estimator", "gamma", "lam", "num_repeat",
                                            "norm_adv_by_std_in_grpo", "config"), "advantage_inputs",
         wrap=_original_only(make_compute_advantage)),  # both trainers call it
    Seam(RAY_TRAINER, "RayPPOTrainer._compute_old_log_prob", ("self", "batch"), "advantage_inputs", LEGACY,
         _original_only(make_compute_old_log_prob)),
    Seam(RAY_TRAINER, "RayPPOTrainer._save_checkpoint", ("self",), "answer_counts", LEGACY,
         _original_only(make_save_checkpoint)),
    Seam(RAY_TRAINER, "RayPPOTrainer._load_checkpoint", ("self",), "answer_counts", LEGACY,
         _original_only(make_load_checkpoint)),
    Seam(RAY_TRAINER, "RayPPOTrainer._update_actor", ("self", "batch"), "rehearsal", LEGACY,
         _original_only(make_update_actor)),
    Seam(RAY_TRAINER, "RayPPOTrainer.init_workers", ("self",), "startup", LEGACY,
         _original_only(make_startup_check, LEGACY)),
    Seam(V1_TRAINER, "PPOTrainer._compute_advantage", ("self", "batch", "metrics"), "advantage_inputs", V1,
         make_v1_compute_advantage),
    Seam(V1_TRAINER, "PPOTrainer._save_checkpoint", ("self",), "answer_counts", V1,
         _original_only(make_save_checkpoint)),
    Seam(V1_TRAINER, "PPOTrainer._load_checkpoint", ("self",), "answer_counts", V1,
         _original_only(make_load_checkpoint)),
    Seam(V1_TRAINER, "PPOTrainer._update_actor", ("self", "batch", "metrics"), "rehearsal", V1,
         _original_only(make_v1_update_actor)),
    Seam(V1_TRAINER, "PPOTrainer.init", ("self",), "startup", V1,
         _original_only(make_startup_check, V1)),
)


def verl_version() -> str:
    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def supported_verl() -> str:
    """The verl range rlvr-explore declares (its ``verl`` extra in pyproject.toml)."""
    from packaging.requirements import Requirement

    try:
        requirements = importlib.metadata.requires("rlvr-explore") or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "verl":
            return str(requirement.specifier)
    return ""


def check_version() -> None:
    """A WARNING when the installed verl is outside the declared range; each seam is still checked."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    supported, version = supported_verl(), verl_version()
    try:
        inside = not supported or Version(version) in SpecifierSet(supported)
    except InvalidVersion:
        inside = False
    if not inside:
        log.warning("rlvr-explore's verl plugin is declared for verl %s and found verl %s: each hook is checked "
                    "against verl's code as it loads, and one that does not fit is left out (with a warning)",
                    supported, version)


def _resolve(module, attribute: str):
    """(owner, name, value) of ``attribute`` ("function" or "Class.method") in ``module``."""
    owner = module
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, getattr(owner, name)


def fit_seam(seam: Seam, module) -> bool:
    """Wrap (or check) one seam of an imported module when its parameters are those the plugin was
    written against; otherwise leave verl's attribute untouched, record why and say so at WARNING."""
    if seam.name in STATE.fitted:
        return True
    try:
        owner, name, original = _resolve(module, seam.attribute)
        found = tuple(inspect.signature(original).parameters)
    except (AttributeError, TypeError, ValueError) as error:
        found, reason = None, f"not found ({error})"
    if found is not None:
        reason = None if found == seam.parameters else f"has parameters {found}, the plugin expects {seam.parameters}"
    if reason is not None:
        STATE.refused[seam.name] = reason
        log.warning("rlvr-explore left verl %s's %s alone: it %s. Unavailable: %s", verl_version(), seam.name, reason,
                    NEEDS[seam.serves])
        return False
    if seam.wrap is not None and not hasattr(original, "rlvr_explore_original"):
        setattr(owner, name, seam.wrap(original, module))
    STATE.fitted.add(seam.name)
    return True


class PatchAfterImport:
    """A meta-path finder that fits the seams of a verl module right after it executes, before any
    other module can import names from it."""

    def find_spec(self, name, path, target=None):
        if not any(seam.module == name for seam in SEAMS):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def execute_and_patch(module):
                execute(module)
                fit_module(module)

            spec.loader.exec_module = execute_and_patch
        return spec


def fit_module(module) -> None:
    for seam in SEAMS:
        if seam.module == module.__name__:
            fit_seam(seam, module)


def install() -> None:
    check_version()
    for name in {seam.module for seam in SEAMS}:
        if name in sys.modules:
            fit_module(sys.modules[name])
    if not any(isinstance(finder, PatchAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchAfterImport())




# ---------------------------------------------------------------- the start-up check


def needs_of_run(config) -> dict[str, str]:
    """What a verl run's config asks of the plugin: need -> the setting that asks for it. Reading
    the settings also checks them (unknown hyper-parameters, a bad RLVR_EXPLORE_HP)."""
    actor = config.actor_rollout_ref.actor
    needs = {}
    mode = str(_get(_get(actor, "policy_loss"), "loss_mode", ""))
    if mode.startswith(PREFIX):
        needs["losses"] = f"actor_rollout_ref.actor.policy_loss.loss_mode={mode}"
        if selected_method(actor) is None:
            raise RuntimeError(f"{needs['losses']}: rlvr-explore has no method {mode[len(PREFIX):]!r}; "
                               f"its methods: {', '.join(losses.available())}")
        request = statistics_needed(actor)
        if request is not None:
            needs["statistics"] = needs["losses"]
            if request.candidates:
                needs["candidates"] = needs["losses"]
            if request.batch_gate:
                needs["train_batch"] = needs["losses"]
    estimator = selected_estimator(config.algorithm.adv_estimator)
    if estimator is not None:
        needs["losses"] = needs.get("losses", f"algorithm.adv_estimator={PREFIX}{estimator}")
        shaping, hp = advantage_settings()
        unread = sorted(set(hp) - adv_lib.keys_read(estimator, shaping))
        if unread:
            raise RuntimeError(f"RLVR_EXPLORE_HP: {unread} are not read by algorithm.adv_estimator={PREFIX}{estimator}"
                               f"{' with shaping ' + str(list(shaping)) if shaping else ''}")
        reads = adv_lib.inputs_read(estimator, shaping)
        if reads:
            needs["advantage_inputs"] = f"algorithm.adv_estimator={PREFIX}{estimator}" + (
                f" with shaping {list(shaping)}" if shaping else "")
        if "answers" in reads:
            needs["answer_counts"] = needs["advantage_inputs"]
    if dph_settings() is not None:
        needs["rehearsal"] = needs["train_batch"] = "RLVR_EXPLORE_HP dph_rehearsal"
    return needs


def settings_refusal(config, needs: dict[str, str]) -> str | None:
    """A verl setting under which what the run needs cannot work, or None."""
    actor = config.actor_rollout_ref.actor
    worker_side = {"statistics", "candidates", "train_batch", "rehearsal"} & set(needs)
    if worker_side and str(_get(actor, "strategy", "fsdp")) not in ("fsdp", "fsdp2"):
        return (f"{needs[min(worker_side)]} runs in rlvr-explore's hooks on verl's FSDP engine; "
                f"actor_rollout_ref.actor.strategy={_get(actor, 'strategy')} has none (use fsdp or fsdp2)")
    model = config.actor_rollout_ref.model
    if "candidates" in needs and _get(model, "use_fused_kernels", False):
        return f"{needs['candidates']} needs the logits: set actor_rollout_ref.model.use_fused_kernels=False"
    correction = _get(config.algorithm, "rollout_correction")
    if "advantage_inputs" in needs and _get(correction, "bypass_mode", False):
        shaping, _ = advantage_settings()
        if "entropy" in adv_lib.inputs_read(selected_estimator(config.algorithm.adv_estimator), shaping):
            return (f"{needs['advantage_inputs']} reads the old policy's entropy, which verl does not compute in "
                    "bypass mode: set algorithm.rollout_correction.bypass_mode=false")
    return None


def check_run(config, trainer: str) -> None:
    """Stop before any worker starts when the run asks for what this trainer and verl cannot serve."""
    needs = needs_of_run(config)
    refusal = settings_refusal(config, needs)
    used = [seam for seam in SEAMS if seam.serves in needs and seam.trainer in (None, trainer)]
    for seam in used if refusal is None else ():
        if seam.name not in STATE.fitted and seam.name not in STATE.refused:
            importlib.import_module(seam.module)  # its import fits it
        if seam.name in STATE.refused:
            refusal = (f"{needs[seam.serves]} needs rlvr-explore's hook on {seam.name}, which it left alone: "
                       f"in verl {verl_version()} it {STATE.refused[seam.name]} (rlvr-explore supports verl "
                       f"{supported_verl() or TESTED_VERL})")
            break
    if refusal is not None:
        raise RuntimeError(f"rlvr-explore cannot serve this run on verl's {trainer} trainer: {refusal}")
    if needs:  # one line in the driver's log of what the run takes from the plugin
        print(f"rlvr-explore on verl {verl_version()}'s {trainer} trainer: {', '.join(sorted(set(needs.values())))}; "
              f"hooks: {', '.join(seam.name for seam in used)}", flush=True)
