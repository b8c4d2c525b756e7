"""Tiny models and tokenizers built from code, and any HF causal LM from a local path.

Nothing is downloaded: ``load_policy`` accepts only a directory that exists.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

SPECIAL = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def char_tokenizer(alphabet: str, vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character of ``alphabet`` plus <pad>, <bos>, <eos>, <unk>; ``vocab_size``
    pads the vocabulary with unused tokens (to price a real model's vocabulary with tiny models)."""
    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate(SPECIAL.values())}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    if vocab_size is not None and vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} tokens the alphabet needs")
    for index in range(len(vocab), vocab_size or 0):
        vocab[f"<unused{index}>"] = index
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    # the BOS the trainer puts first, added by the tokenizer itself, so plain `tokenizer(text)` +
    # `generate` on a saved policy sees what training saw
    backend.post_processor = processors.TemplateProcessing(single=f"{SPECIAL['bos_token']} $A",
                                                          special_tokens=[(SPECIAL["bos_token"], vocab[SPECIAL["bos_token"]])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL)
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_gpt2(vocab_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, n_positions: int = 96,
              seed: int = 0, pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2) -> GPT2LMHeadModel:
    """A GPT-2 from config, deterministic in ``seed``."""
    config = GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        n_positions=n_positions, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                        eos_token_id=eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def load_policy(path: str | Path, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local directory written by ``save_pretrained``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path} (nothing is downloaded; give a local path)")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a saved transformers model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype) if dtype else AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
