"""Shared helpers of the verl / TRL integration tests."""

from __future__ import annotations

import importlib
import os

import pytest

# CI installs the extras and sets this, so that a broken install fails instead of skipping.
REQUIRE_ENV = "FAIRKERNELS_REQUIRE_INTEGRATIONS"


def require(module: str, extra: str):
    """Imports ``module`` or skips the calling test module with the reason (fails under CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not importable: pip install 'fairkernels[{extra}]'")


CHARS = "abcdefghijklmnopqrstuvwxyz "


def char_tokenizer():
    """A character-level tokenizer built in code (no download): a-z, space and four specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", *CHARS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_causal_lm(tokenizer, seed: int = 0):
    """A two-layer Llama of ~30k parameters, randomly initialised from a config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)
