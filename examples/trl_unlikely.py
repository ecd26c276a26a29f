"""Train a tiny causal LM with TRL's GRPO + the unlikeliness reward, on the CPU, in well under a minute.

The model (a two-layer Llama of ~30k parameters) and a character-level tokenizer are built in
code, so nothing is downloaded.  The task is rule-based: a prompt is one letter, and a
completion earns the fraction of its characters that repeat that letter.  The only change
from a plain TRL script is the import of GRPOTrainer and ``advantage_options``:

    python examples/trl_unlikely.py               # 60 steps (20-70 s on 2 shared cores)
    python examples/trl_unlikely.py --steps 3     # a smoke run (CI)
"""

from __future__ import annotations

import argparse
import string
import tempfile

import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig

from fairkernels.integrations.trl import GRPOTrainer

LETTERS = "abcde"


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *string.ascii_lowercase, " "])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_llama(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def repeats_the_letter(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    """Fraction of the completion's characters equal to the prompt's letter (0 if empty)."""
    return [c.count(p) / len(c) if c else 0.0 for p, c in zip(prompts, completions)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--beta-rank", type=float, default=0.25, help="unlikeliness strength (0: plain GRPO)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    tokenizer = char_tokenizer()
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
            per_device_train_batch_size=16, num_generations=8, max_completion_length=8,
            max_steps=args.steps, learning_rate=1e-2, logging_steps=max(1, args.steps // 10), seed=args.seed,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            tiny_llama(tokenizer),
            reward_funcs=repeats_the_letter,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": list(LETTERS) * 20}),
            processing_class=tokenizer,
            advantage_options={"beta_rank": args.beta_rank},
        )
        trainer.train()
    rewards = [(e["step"], e["reward"], e["loss"]) for e in trainer.state.log_history if "reward" in e]
    print("step  mean reward  loss")
    for step, reward, loss in rewards:
        print(f"{step:4d}  {reward:11.3f}  {loss:.4f}")
    batch = trainer.fairkernels_batch
    print(f"last batch: {batch.advantages.numel()} advantages from fairkernels, "
          f"mean |A| = {batch.advantages.abs().mean():.3f}, beta_rank = {args.beta_rank}")


if __name__ == "__main__":
    main()
