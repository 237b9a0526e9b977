# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kubecourse_i18n
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   kubecourse_i18n:
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/06_lora.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/06_lora.py
# ---

# %% [markdown]
# # 06 · 用 LoRA 微调语言模型，以 Job 方式运行
#
# **你将做什么：** 先看看 [LoRA（低秩适配，Low-Rank Adaptation）](../../docs/glossary.md#lora)适配器
# 是什么（几行 torch 代码），然后提交 `manifests/03-finetune/` 的微调 Job，在课程的指令数据集上
# [微调（fine-tune）](../../docs/glossary.md#fine-tuning)一个 Llama 风格的模型：微调前后的评估损失和
# 困惑度（perplexity）、微调前后的示例回答、以 safetensors 格式保存的适配器，重新加载、合并进基础模型，
# 并检查二者相等。
#
# **为什么：** 全量微调要更新每一个权重，并为每个权重保存优化器状态：对一个 7B 模型来说约为每参数
# 16 字节，超过 100 GB。LoRA 冻结模型，改为在每层训练两个很窄的矩阵；适配器只有几 MB，优化器状态也随之
# 缩小，而且同一个基础模型可以服务多个适配器。
#
# **前置条件：** 02（Job、本地后端）。**用时：** 20 分钟（冒烟规模：约一分钟）。
# 默认离线运行：在本机上构建一个极小的模型；设置 `MODEL_ID` 可使用真实模型。

# %% tags=["parameters"]
SMOKE = True  # 极小的离线模型和实验程序的 --smoke 预设
BACKEND = "local"  # "local"（本机上的进程）或 "kubernetes"（$KUBECONFIG）
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
JOB_NAME = "finetune-lora-smoke"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
MODEL_ID = ""  # empty: the tiny offline model; on a GPU machine e.g. Qwen/Qwen2.5-0.5B-Instruct
METHOD = "lora"  # "lora" 或 "qlora"（笔记本 07）
LORA_R = 8  # LoRA rank: the adapter's trainable parameters grow linearly with it
STEPS = 0  # optimizer steps; 0: the lab's preset (smoke 50, full 300)
TIMEOUT_S = 600
HF_ENDPOINT = ""  # empty: huggingface.co; e.g. https://hf-mirror.com where the hub is out of reach
PIP_INDEX_URL = ""  # empty: PyPI; e.g. https://mirrors.aliyun.com/pypi/simple/
REGISTRY_PREFIX = ""  # empty: pull images as named; e.g. m.daocloud.io (a registry mirror)

# %%
import json

import torch

from kubecourse import TrainingClient, load_lesson, render
from kubecourse.contract import StartLine, records
from kubecourse.course import record_outcome
from kubecourse.display import diff_view, events_view, yaml_view

client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. 十行代码看懂 LoRA
# 线性层计算 `W x`。LoRA 保持 `W` 冻结，加上一个低秩更新 `(alpha / r) * B A x`，其中 `A`（r x in）
# 随机初始化，`B`（out x r）为**零**：第 0 步时，适配后的层与原始层完全相同，训练只改变 `A` 和 `B`。
# peft 对 `target_modules` 中列出的每个模块都这样做；下面就是这一机制本身。


# %%
class LoRALinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, r: int = 8, alpha: int = 16):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = torch.nn.Parameter(torch.randn(r, base.in_features) / r)
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


base_layer = torch.nn.Linear(4096, 4096, bias=False)  # one attention projection of a 7B model
adapted = LoRALinear(base_layer, r=8)
x = torch.randn(2, 4096)
trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
print(f"frozen {base_layer.weight.numel():,} vs trainable {trainable:,} parameters")
print(f"= {100 * trainable / base_layer.weight.numel():.2f}% of the layer")
assert torch.equal(adapted(x), base_layer(x)), "B = 0: the adapter starts as a no-op"

# %% [markdown]
# ## 2. The fine-tuning Job
# `manifests/03-finetune/job.yaml` runs `python -m labs.finetune`. The model comes from `MODEL_ID`
# (downloaded once into the `model-cache` PVC), the adapter goes to the `finetune-outputs` PVC, and
# the Hugging Face token is a file mounted from a Secret (`HF_TOKEN_PATH`): never in the YAML, never
# in an environment variable.
# `hf-token-secret.example.yaml` shows the Secret's shape with a placeholder; it is marked
# `config.kubernetes.io/local-config`, so `kubectl apply -k` (and `load_lesson`) leave it out.
# For smoke size we point `MODEL_ID` at nothing (the tiny offline model) and use the `--smoke` preset.

# %%
options = {
    "name": JOB_NAME,
    "namespace": NAMESPACE,
    "image": IMAGE,
    "env": {"MODEL_ID": MODEL_ID, "METHOD": METHOD},
    "mirrors": {
        "hf_endpoint": HF_ENDPOINT,
        "pip_index_url": PIP_INDEX_URL,
        "registry_prefix": REGISTRY_PREFIX,
    },
}
if SMOKE:
    # The manifest's explicit --steps/--lr would win over --smoke, so replace the trainer's args.
    options["args"] = [
        "--model-id=$(MODEL_ID)",
        "--method=$(METHOD)",
        "--model-cache=/models/tiny",
        "--out-dir=/outputs/$(JOB_NAME)",
        "--smoke",
        "--no-save-merged",  # lesson 07 compresses a merged model; this one only checks the merge
    ]
    options["deadline_s"] = TIMEOUT_S
run_flags = [f"--lora-r={LORA_R}"] + ([f"--steps={STEPS}"] if STEPS else [])
if SMOKE:
    options["args"] += run_flags
else:
    options["extra_args"] = run_flags  # after the manifest's --steps=300: the last flag wins
base = load_lesson("03")
objects = render("03", **options)
diff_view(base, objects)

# %%
job_manifest = next(o for o in objects if o["kind"] == "Job")
trainer = job_manifest["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e for e in trainer["env"]}
pod_volumes = {v["name"]: v for v in job_manifest["spec"]["template"]["spec"]["volumes"]}
print("the hub token is the file", env["HF_TOKEN_PATH"]["value"], "from", pod_volumes["hf-token"])
assert "HF_TOKEN" not in env, "the token must come from a Secret, not the manifest"
print([o["kind"] for o in objects], "(the example Secret is not among them)")
yaml_view(job_manifest)

# %% [markdown]
# ## 3. 校验、提交、跟踪
# 每个调用对应的 kubectl 命令打印在其输出上方。在本地后端上，PVC 是 `.course/volumes/<namespace>/`
# 下的文件夹。

# %%
print(client.validate(objects))
client.reset_volume("finetune-outputs", JOB_NAME)  # a PVC outlives jobs: start from nothing
job = client.submit(objects)
logs = client.logs(job, follow=True)
status = client.wait(job, timeout_s=TIMEOUT_S)
print(events_view(client.events(job)))

# %% [markdown]
# ## 4. What the run reports
# The lab prints the eval loss before and after, the sample answers, and the results of the
# adapter checks. `client.result(job)` is its result.json (from the final `result` log line) and
# `client.metrics(job)` its metrics.jsonl, read from the outputs PVC: on a cluster by a short-lived
# pod that mounts it.

# %%
texts = [line.text for line in logs]
header = next(s for s in records(texts, StartLine) if s.lab == "finetune")
result = client.result(job)
loss_before = result["eval_before"]["loss"]
loss_after = result["eval_after"]["loss"]
reload_diff = result["reload_max_abs_diff"]
merge_diff = result["merge_max_abs_diff"]
trainable_pct = float(header.fields["trainable_pct"])
print(header)
print(
    f"eval loss {loss_before:.3f} -> {loss_after:.3f}; reload diff {reload_diff}; merge diff {merge_diff}"
)

# %%
metrics = client.metrics(job)
from kubecourse.figures import Figure  # a matplotlib Figure that always shows as a PNG

figure = Figure(figsize=(7, 3))
ax = figure.add_subplot()
train = [r for r in metrics if r["kind"] == "train"]
evals = [r for r in metrics if r["kind"] == "eval"]
ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o--", label="eval loss")
ax.set_xlabel("optimizer step")
ax.set_ylabel("cross-entropy (answer tokens)")
ax.legend()
ax.set_title(  # from what the run reported, not from what we think we asked for
    f"{result['method']} on {result['model']}: {result['trainable_pct']:.2f}% of weights trained"
)
print("adapter files:", result["adapter_files"], f"{result['adapter_bytes']:,} bytes")
for s in result["samples"]:
    print(
        f"Q: {s['question']}\n   expected {s['expected']!r}\n   before   {s['before']!r}\n   after    {s['after']!r}"
    )
figure

# %% [markdown]
# ## 5. May we train on it, and who can read the result?
# Fine-tuning copies what the data and the base model allow into the adapter. Before a run, check
# each input's **card** (`docs/cards/*.yaml`): its licence (a permissive SPDX licence, or terms a
# person has read), where it came from, whether it holds personal data (and on what legal basis),
# and what it is for. A model trained on a non-commercial data set cannot be shipped under a
# permissive licence. `kubecourse.compliance.check_card` does those checks; it flags, a person
# decides (it is not legal advice).
#
# Then protect the weights: they are the product. Outputs go to a PVC (never the image: anyone who
# can pull it has them; never a hostPath: any pod on the node reads it), the namespace's RBAC
# decides who may create pods that mount that PVC (lesson 08's learner Role has no `pods/exec`,
# no Secrets), the hub token comes from a Secret by reference, and the storage class encrypts at
# rest (for example `encrypted: "true"` on AWS EBS, customer-managed keys on GKE; Secrets in etcd
# need the API server's `EncryptionConfiguration`).

# %%
import copy

from kubecourse.compliance import check_card, load_cards, weights_exposure

cards = load_cards()
for name, card in cards.items():
    findings = check_card(card, cards)
    print(
        f"{card['kind']:8s} {name:36s} {card['license']:32s} {'ok' if not findings else findings}"
    )
scraped = {"name": "forum-scrape", "kind": "dataset", "license": "CC-BY-NC-4.0", "source": "a forum",
           "personal_data": "personal", "intended_use": "chat tuning"}  # fmt: skip
shipped = {**cards["tiny-llama"], "name": "my-model", "derived_from": ["forum-scrape"]}
risky_findings = check_card(shipped, {**cards, "forum-scrape": scraped}) + check_card(scraped)
print("\na model trained on a scraped, non-commercial data set:", *risky_findings, sep="\n  ")
exposure = weights_exposure(objects)
leaky = copy.deepcopy(objects)
for volume in next(o for o in leaky if o["kind"] == "Job")["spec"]["template"]["spec"]["volumes"]:
    if volume["name"] == "outputs":
        volume.pop("persistentVolumeClaim", None)
        volume["hostPath"] = {"path": "/var/tmp/outputs"}
leaky_findings = weights_exposure(leaky, dockerfile="FROM x\nCOPY adapter_model.safetensors /m/\n")
print("\nthis Job's weights exposure:", exposure or "none")
print("a leaky variant:", *leaky_findings, sep="\n  ")

# %% [markdown]
# ## 6. Assert the outcome
# * the Job succeeded;
# * eval loss on *held-out* questions fell clearly (to below 60% of where it started);
# * the adapter reloaded onto a fresh base gives identical outputs, and merging it into the weights
#   (`merge_and_unload`) changes the logits by no more than float rounding.

# %%
assert status.phase == "Succeeded", f"job ended {status.phase}: {status.reason} {status.message}"
assert loss_after < 0.6 * loss_before, (
    f"eval loss did not fall enough: {loss_before} -> {loss_after}"
)
assert reload_diff <= 1e-6, f"reloaded adapter differs from the trained one by {reload_diff}"
assert merge_diff <= 1e-3, f"merged model differs from adapter + base by {merge_diff}"
assert not any(check_card(c, cards) for n, c in cards.items() if c["license"] == "Apache-2.0")
assert len(risky_findings) >= 3 and exposure == [] and len(leaky_findings) >= 2, leaky_findings
assert result["merge_ok"] and "adapter_model.safetensors" in result["adapter_files"], result
assert train and evals and train[-1]["step"] == result["steps"], metrics[-3:]
record_outcome(
    "06_lora",
    figures={"loss": figure},
    backend=BACKEND,
    phase=status.phase,
    eval_loss_before=loss_before,
    eval_loss_after=loss_after,
    trainable_pct=trainable_pct,
    reload_max_abs_diff=reload_diff,
    merge_max_abs_diff=merge_diff,
)

# %% [markdown]
# ## Exercise: predict the number of trainable parameters
# LoRA with rank r on a linear layer `in -> out` adds `r * (in + out)` parameters. The lab adapts
# `q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj` in every decoder layer. Write
# `lora_params(config, r)` from a model's `config.json` fields (`hidden_size`, `intermediate_size`,
# `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`: with grouped-query attention
# the k and v projections are narrower than q). The check compares it with peft's count for public
# models and with what the lab counted for this run. (A solution is filled in: change it and re-run
# the check.)


# %%
def lora_params(config: dict, r: int) -> int:
    # BEGIN SOLUTION
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]  # k/v output width
    attention = (h + h) + (h + kv) + (h + kv) + (h + h)  # q, k, v, o
    mlp = (h + inter) + (h + inter) + (inter + h)  # gate, up, down
    return config["num_hidden_layers"] * r * (attention + mlp)
    # END SOLUTION


# %%
from kubecourse.exercises import require

run_config, reported = None, None
if not MODEL_ID:  # this run's tiny model (named in the lab's start line) on the model-cache PVC
    model_dir = header.fields["model"]
    run_config = json.loads(client.read_volume("model-cache", f"tiny/{model_dir}/config.json"))
    reported = int(header.fields["trainable"])  # what the lab counted
require("06-lora-params", lora_params, config=run_config, r=LORA_R, reported=reported)
llama_7b = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32}  # fmt: skip
print(f"Llama-2-7B at r={LORA_R}: {lora_params(llama_7b, LORA_R):,} trainable parameters")

# %% [markdown]
# ## 在真实集群上
# 构建并推送镜像（`labs/Dockerfile` 包含 transformers、peft 和 bitsandbytes），如果你的模型是受限模型
# （gated），先创建令牌 Secret，然后以 `BACKEND = "kubernetes"`、`SMOKE = False` 和
# `MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"` 运行本笔记本，或手动执行：
#
# ```bash
# kubectl create secret generic hf-token --from-literal=token=<your token>   # 仅受限模型需要
# kubectl apply -k manifests/03-finetune/
# kubectl logs -f job/finetune-qlora -c trainer
# kubectl exec <a pod mounting finetune-outputs> -- ls /outputs/finetune-qlora/adapter
# ```
# 在 GPU 上，实验程序使用 bf16 计算，并记录一个训练步的峰值显存。
#
# ## 清理
# 删除作业（它的 Pod 也会一并删除）；PVC 保留缓存的模型和适配器。

# %%
client.delete(job)
client.close()
