"""labs/common/instructions.py: the course's instruction data set, its split and its tokenisation.

The tokenizer is the course's own (tiny_lm.build_tokenizer on corpus_lines: what the tiny model
folder holds), trained here in well under a second; nothing is downloaded or cached.
"""

from __future__ import annotations

import re

import pytest

from labs.common import instructions
from labs.common.instructions import IGNORE_INDEX, Example
from labs.common.tiny_lm import TinySpec, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TinySpec(), instructions.corpus_lines())


# ------------------------------------------------------------------------------------------------
# The data set.


def test_examples_are_deterministic_and_the_split_is_disjoint():
    train_a, eval_a = instructions.make_examples(120, 30, seed=3)
    train_b, eval_b = instructions.make_examples(120, 30, seed=3)
    assert (train_a, eval_a) == (train_b, eval_b)
    assert instructions.make_examples(120, 30, seed=4)[0] != train_a
    assert not {e.question for e in eval_a} & {e.question for e in train_a}
    assert {e.kind for e in eval_a} == {e.kind for e in train_a}  # every template in both


@pytest.mark.parametrize(
    ("n_train", "n_eval"), [(0, 5), (5, 0), (100, 100_000)], ids=["no-train", "no-eval", "too-many"]
)
def test_bad_split_sizes_are_refused(n_train, n_eval):
    with pytest.raises(ValueError, match="n_train|n_eval|eval questions"):
        instructions.make_examples(n_train, n_eval)


@pytest.mark.parametrize(("n_train", "n_eval", "seed"), [(1, 1, 0), (24, 12, 1), (200, 60, 7)])
def test_split_sizes_are_exact_and_no_eval_question_repeats(n_train, n_eval, seed):
    train, evals = instructions.make_examples(n_train, n_eval, seed=seed)
    assert (len(train), len(evals)) == (n_train, n_eval)
    assert len({e.question for e in evals}) == n_eval
    assert instructions.make_examples(n_train, n_eval, seed=seed + 1)[1] != evals


def _numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]


# Per template: where the question names its objects; the answer must act on exactly those.
NAMED = {
    "pods": r"job (\S+) in namespace (\S+)\?",
    "logs": r"job (\S+) in namespace (\S+)\.",
    "delete": r"job (\S+) in namespace (\S+)\.",
    "describe": r"job (\S+) in namespace (\S+) not",
    "scale": r"deployment (\S+) to (\d+) replicas",
    "gpus": r"ask for (\d+) GPUs",
    "pvc": r"claim (\S+) in (\S+) bound",
    "drain": r"node (\S+) out",
    "target_modules": r"adapt (\S+) in layer",
}
# Per template: the arithmetic the answer shows, from the question's numbers.
ARITHMETIC = {
    "lora_params": lambda rank, dim, _dim: [2, rank, dim, 2 * rank * dim],
    "global_batch": lambda per_gpu, accum, gpus: [per_gpu, accum, gpus, per_gpu * accum * gpus],
    "memory": lambda billions, _bf16, _bits: [2 * billions, 16, billions / 2, 4],
}


@pytest.mark.parametrize("kind", [*NAMED, *ARITHMETIC])
def test_every_answer_is_right_for_its_question(kind):
    train, evals = instructions.make_examples(120, 60, seed=0)
    examples = [e for e in train + evals if e.kind == kind]
    assert examples, f"no {kind} examples"
    for ex in examples:
        if kind in NAMED:
            names = re.search(NAMED[kind], ex.question).groups()
            for name in names:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", ex.answer), ex
        else:
            assert _numbers(ex.answer) == ARITHMETIC[kind](*_numbers(ex.question)), ex


@pytest.mark.parametrize(
    ("with_answer", "roles"), [(True, ["user", "assistant"]), (False, ["user"])]
)
def test_messages_are_chat_turns(with_answer, roles):
    ex = Example("logs", "Show the logs?", "kubectl logs job/x")
    turns = ex.messages(with_answer=with_answer)
    assert [t["role"] for t in turns] == roles
    assert [t["content"] for t in turns] == ["Show the logs?", "kubectl logs job/x"][: len(roles)]


def test_corpus_lines_are_plain_question_and_answer_lines_deterministic_in_the_seed():
    lines = instructions.corpus_lines()
    assert lines == instructions.corpus_lines() != instructions.corpus_lines(seed=1)
    assert len(lines) == 2 * 240 and len(instructions.corpus_lines(n=300)) == 2 * 300
    assert not any("<|" in line for line in lines)  # no chat markup: fine-tuning teaches it
    assert lines[0].endswith("?") and lines[1].startswith("kubectl")  # question, then answer


# ------------------------------------------------------------------------------------------------
# Tokenisation.


def test_loss_is_masked_to_the_answer(tokenizer):
    example = instructions.make_examples(1, 1)[0][0]
    row = instructions.tokenize_example(tokenizer, example, max_length=256)
    assert len(row["input_ids"]) == len(row["labels"])
    answer_ids = [
        t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100
    ]
    assert tokenizer.decode(answer_ids).startswith(example.answer + tokenizer.eos_token)
    first = row["labels"].index(next(label for label in row["labels"] if label != -100))
    assert example.question in tokenizer.decode(row["input_ids"][:first])  # the prompt is masked
    batch = instructions.collate([row, {"input_ids": [5], "labels": [5]}], pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(row["input_ids"]))
    assert batch["attention_mask"][1].sum() == 1 and (batch["labels"][1, 1:] == -100).all()


@pytest.mark.parametrize("cut", [1, 0.5, 2], ids=["inside-prompt", "inside-answer", "no-cut"])
def test_truncation_keeps_ids_and_labels_aligned(tokenizer, cut):
    example = instructions.make_examples(1, 1)[0][0]
    full = instructions.tokenize_example(tokenizer, example, max_length=10_000)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    max_length = {1: n_prompt - 2, 0.5: n_prompt + 2, 2: 10_000}[cut]
    row = instructions.tokenize_example(tokenizer, example, max_length=max_length)
    assert row["input_ids"] == full["input_ids"][:max_length]
    assert row["labels"] == full["labels"][:max_length]


class NotAPrefixTemplate:
    """A tokenizer whose chat template renders the prompt differently from the conversation."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt=False):
        return "PROMPT:" if add_generation_prompt else "USER: ... ASSISTANT: ..."


def test_a_chat_template_whose_prompt_is_not_a_prefix_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        instructions.tokenize_example(NotAPrefixTemplate(), Example("k", "q", "a"), 16)


def test_collate_right_pads_ids_labels_and_mask():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    batch = instructions.collate(rows, pad_id=9)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
