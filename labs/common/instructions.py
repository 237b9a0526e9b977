"""An instruction dataset written by the course: Kubernetes and ML-training questions with answers.

Why generate it: fine-tuning lessons need data that is offline, small, licence-free and has a
clear right answer, so that "the model learned the task" is measurable (eval loss on held-out
questions). Every example comes from a template filled with names drawn by a seeded generator:

    question: "Show the logs of the job llama-sft in namespace research."
    answer:   "kubectl logs job/llama-sft -n research"

Same seed, same examples, same split. The eval split holds *different* fills of the same
templates (other names and numbers), so a model that only memorised the training answers does not
score well on it.

Tokenisation (`tokenize_example`) renders the conversation with the tokenizer's chat template and
masks the prompt: labels are -100 (ignored by the loss) everywhere except the answer tokens and the
end-of-turn token, so the model is trained to answer, not to repeat questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips

_NAMESPACES = ["default", "research", "team-a", "team-b", "ml-prod", "vision", "nlp", "batch"]
_NAMESPACES += ["staging", "speech", "robotics", "infra"]
_JOBS = ["llama-sft", "cifar10-train", "bert-finetune", "resnet-ddp", "gpt-pretrain", "qlora-run"]
_JOBS += ["eval-nightly", "sweep-7", "vit-train", "lora-chat"]
_DEPLOYMENTS = ["inference", "tokenizer-svc", "metrics-api", "chat-ui", "model-server"]
_PVCS = ["model-cache", "checkpoints", "datasets", "adapters", "hf-cache"]
_NODES = ["gpu-node-", "a100-pool-", "h100-", "cpu-node-", "l4-spot-"]
_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def _pick(rng: random.Random, items: list[str]) -> str:
    return items[rng.randrange(len(items))]


def _pods(r: random.Random) -> tuple[str, str]:
    job, ns = _pick(r, _JOBS), _pick(r, _NAMESPACES)
    return (
        f"How do I list the pods of the job {job} in namespace {ns}?",
        f"kubectl get pods -l job-name={job} -n {ns}",
    )


def _logs(r: random.Random) -> tuple[str, str]:
    job, ns = _pick(r, _JOBS), _pick(r, _NAMESPACES)
    return (
        f"Show the logs of the job {job} in namespace {ns}.",
        f"kubectl logs job/{job} -n {ns}",
    )


def _delete(r: random.Random) -> tuple[str, str]:
    job, ns = _pick(r, _JOBS), _pick(r, _NAMESPACES)
    return f"Delete the job {job} in namespace {ns}.", f"kubectl delete job {job} -n {ns}"


def _describe(r: random.Random) -> tuple[str, str]:
    job, ns = _pick(r, _JOBS), _pick(r, _NAMESPACES)
    return (
        f"Why is the job {job} in namespace {ns} not starting?",
        f"kubectl describe job {job} -n {ns}",
    )


def _scale(r: random.Random) -> tuple[str, str]:
    dep, n = _pick(r, _DEPLOYMENTS), r.randint(1, 9)
    return (
        f"Scale the deployment {dep} to {n} replicas.",
        f"kubectl scale deployment {dep} --replicas={n}",
    )


def _gpus(r: random.Random) -> tuple[str, str]:
    n, job = r.randint(1, 8), _pick(r, _JOBS)
    return (
        f"How do I ask for {n} GPUs in the pods of {job}?",
        f"Set resources.limits nvidia.com/gpu: {n} (requests equal limits for GPUs).",
    )


def _pvc(r: random.Random) -> tuple[str, str]:
    claim, ns = _pick(r, _PVCS), _pick(r, _NAMESPACES)
    return f"Is the volume claim {claim} in {ns} bound?", f"kubectl get pvc {claim} -n {ns}"


def _drain(r: random.Random) -> tuple[str, str]:
    node = f"{_pick(r, _NODES)}{r.randint(0, 9)}"
    return (
        f"Take the node {node} out of service.",
        f"kubectl drain {node} --ignore-daemonsets",
    )


def _lora_params(r: random.Random) -> tuple[str, str]:
    rank, dim = r.choice([4, 8, 16, 32]), r.choice([512, 1024, 2048, 4096])
    return (
        f"How many parameters does LoRA rank {rank} add to a {dim}x{dim} matrix?",
        f"2 x {rank} x {dim} = {2 * rank * dim} parameters.",
    )


def _target(r: random.Random) -> tuple[str, str]:
    module, layer = _pick(r, _MODULES), r.randint(0, 31)
    return (
        f"Should LoRA adapt {module} in layer {layer}?",
        f"Yes: {module} is a linear layer, list it in target_modules.",
    )


def _batch(r: random.Random) -> tuple[str, str]:
    per_gpu, accum, gpus_ = r.choice([4, 8, 16]), r.choice([1, 2, 4, 8]), r.choice([1, 2, 4])
    return (
        f"Batch {per_gpu} per GPU, {accum} accumulation steps, {gpus_} GPUs: global batch?",
        f"{per_gpu} x {accum} x {gpus_} = {per_gpu * accum * gpus_} sequences.",
    )


def _memory(r: random.Random) -> tuple[str, str]:
    billions = r.choice([1, 2, 3, 4, 7, 8, 13, 14, 32, 70])
    return (
        f"How much memory do the weights of a {billions}B model take in bf16 and in 4 bit?",
        f"About {2 * billions} GB in bf16 and {billions / 2:g} GB in 4 bit.",
    )


# (kind, fill) pairs: `fill(rng)` returns one (question, answer). The order fixes the data set.
_TEMPLATES: tuple[tuple[str, Any], ...] = (
    ("pods", _pods),
    ("logs", _logs),
    ("delete", _delete),
    ("describe", _describe),
    ("scale", _scale),
    ("gpus", _gpus),
    ("pvc", _pvc),
    ("drain", _drain),
    ("lora_params", _lora_params),
    ("target_modules", _target),
    ("global_batch", _batch),
    ("memory", _memory),
)


def _templates() -> list[tuple[str, Any]]:
    return list(_TEMPLATES)


@dataclass(frozen=True)
class Example:
    """One question/answer pair and the template it came from."""

    kind: str
    question: str
    answer: str

    def messages(self, with_answer: bool = True) -> list[dict[str, str]]:
        """The conversation in the chat-template format (`role`/`content` dicts)."""
        # No system turn: it would be the same ~20 tokens in every example (a real chat model
        # adds its default one through its own template).
        turns = [{"role": "user", "content": self.question}]
        if with_answer:
            turns.append({"role": "assistant", "content": self.answer})
        return turns


def make_examples(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """`n_train` training and `n_eval` held-out examples, deterministic in `seed`.

    Templates are used round-robin, so every kind is in both splits while it has unused fills. A
    question that appeared in the training split is never put in the eval split."""
    if n_train < 1 or n_eval < 1:
        raise ValueError(f"n_train and n_eval must be >= 1 (got {n_train}, {n_eval})")
    templates = _templates()
    rng = random.Random(seed)
    train: list[Example] = []
    seen: set[str] = set()
    for i in range(n_train):
        kind, fill = templates[i % len(templates)]
        question, answer = fill(rng)
        train.append(Example(kind, question, answer))
        seen.add(question)
    evals: list[Example] = []
    i = misses = 0
    while len(evals) < n_eval:
        kind, fill = templates[i % len(templates)]
        question, answer = fill(rng)
        if question in seen:
            misses += 1
            if misses > 50 * len(templates):
                raise ValueError(f"could not draw {n_eval} eval questions unseen in training")
            if misses % 50 == 0:
                i += 1  # this template's fills are all used up: try the next one
            continue
        evals.append(Example(kind, question, answer))
        seen.add(question)
        i, misses = i + 1, 0
    return train, evals


def tokenize_example(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of one example, with the prompt masked out of the loss.

    The prompt is the chat template rendered up to the assistant's turn
    (`add_generation_prompt=True`); the full text adds the answer and the end-of-turn token. The
    prompt must be a prefix of the full text in tokens, which holds for chat templates that render
    turns independently (this course's tiny model, Llama, Qwen, Mistral)."""
    prompt = tokenizer.apply_chat_template(
        example.messages(with_answer=False), tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(example.messages(), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the answer")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        # BPE merged across the boundary: tokenise the answer part separately instead.
        full_ids = (
            prompt_ids + tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        )
    full_ids = full_ids[:max_length]
    labels = [IGNORE_INDEX] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids) :]
    return {"input_ids": full_ids, "labels": labels}


def collate(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of tokenised examples into tensors (input_ids, attention_mask, labels)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def corpus_lines(seed: int = 12345, n: int = 0) -> list[str]:
    """Plain sentences in the dataset's vocabulary, for the tokenizer and the tiny model's
    pretraining: the question/answer *parts* as separate lines, never joined as a chat. A
    different seed from the fine-tuning data, and no chat format, so fine-tuning still has the
    task (answer the question in the chat format) to learn."""
    templates = _templates()
    rng = random.Random(seed)
    lines = []
    for i in range(max(n, 240)):
        ex = Example(*(templates[i % len(templates)][0],), *templates[i % len(templates)][1](rng))
        lines += [ex.question, ex.answer]
    return lines
