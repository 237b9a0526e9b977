"""A tiny Llama-style language model and BPE tokenizer, built here, offline, in a few seconds.

Why: the fine-tuning lessons must run in CI and on a laptop without downloading anything, yet go
through exactly the code a real model takes (`AutoTokenizer/AutoModelForCausalLM.from_pretrained`,
peft, bitsandbytes). So this module *makes* a model folder that looks like one from the Hugging
Face hub: a `LlamaForCausalLM` (RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP:
the same module names `q_proj ... down_proj` as Llama, Qwen and Mistral) and a byte-level BPE
tokenizer with a chat template, briefly pretrained on the course's own sentences
(`instructions.corpus_lines`) so it is a language model, not noise, before fine-tuning starts.

    path = ensure_tiny_lm(".course/models")     # built once, then reused (cached by its spec)
    model = AutoModelForCausalLM.from_pretrained(path)

Caching: the folder name carries a hash of the spec, the pretraining text and the library
versions, so changing any of them builds a new model. Building writes into a temp folder and renames it into place
atomically; two processes building at once both succeed and one result wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labs.common.instructions import corpus_lines

# Llama-3-like chat markup with short special tokens. Each turn renders on its own, so the prompt
# (up to "<|assistant|>\n") is a token prefix of the full conversation: the answer-only loss mask
# in instructions.tokenize_example relies on that.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model (defaults: 0.47M parameters, built in a few seconds on one core)."""

    vocab_size: int = 512  # BPE vocabulary incl. 256 byte tokens and the special tokens
    hidden_size: int = 128  # d_model
    # SwiGLU width (3 x hidden; Llama uses ~2.7x). A multiple of 64, the bitsandbytes 4-bit block
    # size: its CPU kernel for AVX512-BF16 machines cannot handle a partial block (measured).
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, as in Llama 3 / Qwen 2.5
    max_positions: int = 256  # tokens
    pretrain_steps: int = 60  # optimizer steps of next-token pretraining on corpus_lines
    pretrain_batch: int = 16  # lines per step
    pretrain_lr: float = 3e-3
    seed: int = 0

    def key(self, corpus: list[str]) -> str:
        """Cache key: the spec, the pretraining text and the versions that change the result."""
        import tokenizers
        import torch
        import transformers

        blob = json.dumps(
            {
                **asdict(self),
                "format": 1,
                "corpus": hashlib.sha256("\n".join(corpus).encode()).hexdigest(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tokenizer(spec: TinySpec, lines: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on `lines`, wrapped as a `PreTrainedTokenizerFast`
    with pad/bos/eos tokens and the chat template (what `AutoTokenizer` returns for a hub model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.padding_side = "right"
    return fast


def llama_config(
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_positions: int,
    tie_word_embeddings: bool = True,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> Any:
    """THE course model: a Hugging Face `LlamaConfig` (RMSNorm, RoPE, grouped-query attention,
    SwiGLU; module names q_proj ... down_proj). The LM lab pretrains it (DDP, FSDP2, DCP), the
    fine-tuning lab adapts it (LoRA, QLoRA): one definition, built locally, nothing downloaded."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def build_llama(config: Any, seed: int) -> Any:
    """A randomly initialised `LlamaForCausalLM` (seeded: identical on every rank)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_tokenizer(cache_dir: str | os.PathLike, log: Any = print) -> Any:
    """The course tokenizer (byte-level BPE + chat template), from the tiny model's cache folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_tiny_lm(cache_dir, log=log)))


def build_model(spec: TinySpec, tokenizer: Any) -> Any:
    """The tiny fine-tuning base: the course model at the spec's size (seeded)."""
    config = llama_config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        num_kv_heads=spec.num_kv_heads,
        max_positions=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return build_llama(config, spec.seed)


def pretrain(model: Any, tokenizer: Any, lines: list[str], spec: TinySpec) -> list[float]:
    """Next-token pretraining on plain lines (no chat format); returns the loss per step."""
    import torch

    gen = torch.Generator().manual_seed(spec.seed)
    encoded = [
        [tokenizer.bos_token_id] + tokenizer(line, add_special_tokens=False)["input_ids"]
        for line in lines
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(spec.pretrain_steps):
        idx = torch.randint(len(encoded), (spec.pretrain_batch,), generator=gen).tolist()
        rows = [encoded[i][: spec.max_positions] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
        scale = min(1.0, (step + 1) / 10)  # short warmup
        for group in opt.param_groups:
            group["lr"] = spec.pretrain_lr * scale
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_tiny_lm(
    cache_dir: str | os.PathLike, spec: TinySpec | None = None, log: Any = print
) -> Path:
    """The folder of the tiny model (config, safetensors weights, tokenizer), built if missing.

    Safe to call from several processes at once: each builds into its own temp folder and renames
    it into place; a process that loses the race removes its copy and uses the winner's."""
    import torch

    spec = spec or TinySpec()
    cache = Path(cache_dir)
    lines = corpus_lines()
    final = cache / f"tiny-llama-{spec.key(lines)}"
    if (final / "config.json").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        # One thread: the same bits on every machine (thread count changes float sums), and
        # faster for matrices this small (a second thread costs more than it saves).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        tokenizer = build_tokenizer(spec, lines)
        model = build_model(spec, tokenizer)
        try:
            losses = pretrain(model, tokenizer, lines, spec)
        finally:
            torch.set_num_threads(threads)
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "pretraining.json").write_text(
            json.dumps({"spec": asdict(spec), "first_loss": losses[0], "last_loss": losses[-1]})
        )
        staged.chmod(0o755)
        try:
            os.replace(staged, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
            # Another process finished first: keep its folder.
        else:
            log(
                f"built tiny model {final.name}: {sum(p.numel() for p in model.parameters())} "
                f"parameters, pretraining loss {losses[0]:.2f} -> {losses[-1]:.2f}"
            )
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final
