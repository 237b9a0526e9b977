"""labs/common/tiny_lm.py: the course's tiny Llama and its BPE tokenizer, built offline.

Every model here is a few thousand parameters (hidden size 32) so a build takes about a second;
the default-size model is built (and cached) by tests/labs/test_finetune.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from labs.common import tiny_lm
from labs.common.instructions import corpus_lines
from labs.common.tiny_lm import TinySpec, ensure_tiny_lm
from tests.guards import HANG_GUARD_S

SMALL = TinySpec(vocab_size=300, hidden_size=32, intermediate_size=64, pretrain_steps=2)
LINES = corpus_lines()


@pytest.fixture(autouse=True)
def keep_thread_count():
    # Building sets one thread while it pretrains; later tests must not inherit a changed count.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_lm.build_tokenizer(SMALL, LINES)


# ------------------------------------------------------------------------------------------------
# The tokenizer.


@pytest.mark.parametrize(
    "text",
    [
        "kubectl logs job/llama-sft -n research",
        "How many parameters does LoRA rank 8 add to a 1024x1024 matrix?",
        "words it never saw: Zürich, naïve, 東京, emoji 🚀",  # byte-level: nothing is unknown
        "  two spaces,\ttabs\nand newlines  ",
        "",
    ],
    ids=["command", "question", "unseen-unicode", "whitespace", "empty"],
)
def test_the_tokenizer_round_trips_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_the_tokenizer_has_the_spec_vocabulary_and_one_id_per_special_token(tokenizer):
    assert len(tokenizer) == SMALL.vocab_size
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tiny_lm.SPECIAL_TOKENS]
    assert len(set(ids)) == len(tiny_lm.SPECIAL_TOKENS)
    for token, token_id in zip(tiny_lm.SPECIAL_TOKENS, ids, strict=True):
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]
    assert [tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token] == [
        "<|pad|>",
        "<|bos|>",
        "<|end|>",
    ]


def test_the_chat_prompt_is_a_token_prefix_of_the_conversation(tokenizer):
    """What the answer-only loss mask (instructions.tokenize_example) relies on."""
    turns = [{"role": "user", "content": "Delete the job x."}]
    answer = {"role": "assistant", "content": "kubectl delete job x"}
    prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*turns, answer], tokenize=False)
    assert prompt == "<|user|>\nDelete the job x.<|end|>\n<|assistant|>\n"
    assert full == prompt + "kubectl delete job x<|end|>\n"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids


# ------------------------------------------------------------------------------------------------
# The model.


@pytest.mark.parametrize(
    "spec",
    [SMALL, replace(SMALL, num_layers=3, num_heads=8, num_kv_heads=4, intermediate_size=128)],
    ids=["2-layers-gqa-2", "3-layers-gqa-4"],
)
def test_the_model_has_the_configured_sizes(tokenizer, spec):
    model = tiny_lm.build_model(spec, tokenizer)
    head_dim = spec.hidden_size // spec.num_heads
    layers = model.model.layers
    assert len(layers) == spec.num_layers
    attn, mlp = layers[0].self_attn, layers[0].mlp
    assert attn.q_proj.out_features == spec.num_heads * head_dim == spec.hidden_size
    assert attn.k_proj.out_features == attn.v_proj.out_features == spec.num_kv_heads * head_dim
    assert mlp.up_proj.out_features == mlp.gate_proj.out_features == spec.intermediate_size
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), spec.hidden_size)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied
    assert model.config.max_position_embeddings == spec.max_positions
    assert (model.config.pad_token_id, model.config.eos_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
    )
    # The module names LoRA targets in Llama, Qwen and Mistral.
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


@pytest.mark.parametrize(("seed", "same"), [(0, True), (1, False)])
def test_the_initial_weights_are_a_function_of_the_seed(tokenizer, seed, same):
    a = tiny_lm.build_model(SMALL, tokenizer).state_dict()
    b = tiny_lm.build_model(replace(SMALL, seed=seed), tokenizer).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) is same


def test_pretraining_lowers_the_loss(tokenizer):
    spec = replace(SMALL, pretrain_steps=16, pretrain_batch=8)
    model = tiny_lm.build_model(spec, tokenizer)
    losses = tiny_lm.pretrain(model, tokenizer, LINES, spec)
    assert len(losses) == spec.pretrain_steps
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    assert not model.training  # handed back ready for evaluation


# ------------------------------------------------------------------------------------------------
# The cached model folder.


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda spec, lines: (spec, list(lines)), True),
        (lambda spec, lines: (replace(spec, hidden_size=64), lines), False),
        (lambda spec, lines: (replace(spec, pretrain_steps=3), lines), False),
        (lambda spec, lines: (spec, [*lines, "one more sentence"]), False),
    ],
    ids=["equal", "other-size", "other-training", "other-corpus"],
)
def test_the_cache_key_changes_with_the_spec_and_the_text(change, same):
    spec, lines = change(SMALL, LINES)
    assert (spec.key(lines) == SMALL.key(LINES)) is same


def test_a_built_folder_loads_as_a_hub_model(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    logged: list[str] = []
    path = ensure_tiny_lm(tmp_path, SMALL, log=logged.append)
    assert torch.get_num_threads() == threads  # pretraining's single thread is undone
    assert path.name == f"tiny-llama-{SMALL.key(LINES)}" and "built tiny model" in logged[0]
    model = AutoModelForCausalLM.from_pretrained(path)
    loaded = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == SMALL.hidden_size
    text = "kubectl get pvc model-cache -n nlp"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]  # the same BPE, rebuilt
    report = json.loads((path / "pretraining.json").read_text())
    assert report["spec"]["hidden_size"] == SMALL.hidden_size and report["first_loss"] > 0


def test_tiny_model_is_cached_and_safe_to_build_concurrently(tmp_path):
    spec = TinySpec(vocab_size=300, hidden_size=32, intermediate_size=64, pretrain_steps=2)
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(ensure_tiny_lm(tmp_path, spec, log=str)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=HANG_GUARD_S)
    assert len(paths) == 2 and paths[0] == paths[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[0].name]  # no temp folders left
    stamp = (paths[0] / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_lm(tmp_path, spec) == paths[0]
    assert (paths[0] / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = ensure_tiny_lm(tmp_path, TinySpec(**{**spec.__dict__, "hidden_size": 48}), log=str)
    assert other != paths[0]  # a different spec is a different model
