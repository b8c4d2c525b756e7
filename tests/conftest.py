import pytest

from rlvr_explore.train.config import load_config

TINY = [
    "run.threads=1", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "task.train_size=40", "task.eval_size=4",
    "task.difficulty=2", "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=8",
    "algorithm.mini_batch_size=16", "algorithm.micro_batch_size=8", "train.steps=2", "train.eval_every=0",
    "train.save_every=0", "eval.n_samples=4", "sft.steps=5", "sft.batch_size=8", "optim.lr=1e-3",
]


@pytest.fixture
def tiny_config(tmp_path):
    def make(*overrides):
        return load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", *overrides])

    return make
