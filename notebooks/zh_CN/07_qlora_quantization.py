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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/07_qlora_quantization.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/07_qlora_quantization.py
# ---

# %% [markdown]
# # 07 · QLoRA 与量化：4 比特能换来什么
#
# **你将做什么：** 手工把一个权重矩阵[量化（quantize）](../../docs/glossary.md#quantization)为
# 4 比特 NormalFloat（NF4）并查看误差；用 [QLoRA](../../docs/glossary.md#qlora)（在 4 比特基础模型上做
# LoRA）进行微调，并测量基础权重在 fp32、bf16、int8 和 nf4 下的字节数；然后在训练后压缩微调好的模型
# （训练后量化，post-training quantization），比较大小、延迟和困惑度。
#
# **为什么：** 一旦 LoRA 去掉了大部分优化器状态，权重就成了微调内存的大头。一个 7B 模型在 bf16 下约
# 14 GB，在 nf4 下约 3.9 GB，这正是数据中心 GPU 与工作站 GPU 之间的差别。代价是舍入误差；本课就来测量它。
#
# **前置条件：** 06。**用时：** 20 分钟（冒烟规模：约一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 极小的离线模型和各实验程序的 --smoke 预设
BACKEND = "local"  # 用于“同一运行作为 Job”一节："local" 或 "kubernetes"
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
DEVICE = "auto"  # "auto"、"cpu" 或 "cuda"：QLoRA 运行所用设备；4 比特矩阵乘法在两者上都能运行
MODEL_ID = ""  # empty: the tiny offline model; on a GPU machine e.g. Qwen/Qwen2.5-0.5B-Instruct
TIMEOUT_S = 600

# %%
import json
import shutil

import bitsandbytes.functional as bnbf
import torch

from kubecourse import TrainingClient, render
from kubecourse.course import record_outcome
from kubecourse.figures import Figure  # a matplotlib Figure that always shows as a PNG
from kubecourse.lab import run_lab
from kubecourse.manifests import repo_root

ROOT = repo_root()
OUT = ROOT / "build" / "lessons" / "07"
shutil.rmtree(OUT, ignore_errors=True)  # every run of this notebook starts from scratch
common = [f"--model-id={MODEL_ID}", f"--model-cache={ROOT / '.course' / 'models'}"]
common += [f"--device={DEVICE}"] + (["--smoke"] if SMOKE else [])

# %% [markdown]
# ## 1. 手工实现 NF4
# bitsandbytes 把权重矩阵切成每块 64 个值，保存每块的绝对值最大值（`absmax`），并把每个值替换为
# 16 个等级（4 比特）中最接近的那个；这些等级位于正态分布的分位点上：权重大致服从正态分布，所以每个等级
# 被使用的频率大致相同。双重量化（double quantization）再把 absmax 值本身用 8 比特存储。

# %%
torch.manual_seed(0)
weight = torch.randn(1024, 1024) * 0.02  # like a trained projection matrix
packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
restored = bnbf.dequantize_4bit(packed, state)
nf4_bytes = (
    packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
)
nf4_bytes += state.state2.absmax.numel() * 4 + state.state2.code.numel() * 4
error = (restored - weight).abs()
print("16 NF4 levels:", [round(v, 3) for v in state.code[:16].tolist()])
print(
    f"bf16: {weight.numel() * 2:,} bytes, nf4: {nf4_bytes:,} bytes ({nf4_bytes * 8 / weight.numel():.3f} bits/weight)"
)
print(f"mean |error| {error.mean():.2e} (weights have mean |w| {weight.abs().mean():.2e})")
assert nf4_bytes < 0.3 * weight.numel() * 2

# %% [markdown]
# ## 2. QLoRA：在 4 比特基础模型上做 LoRA
# `labs/finetune.py --method qlora` 用
# `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
# bnb_4bit_compute_dtype=...)` 加载基础模型，运行 `prepare_model_for_kbit_training`（归一化层用 fp32，
# 为[梯度检查点（gradient checkpointing）](../../docs/glossary.md#gradient-checkpointing)启用输入梯度），
# 并在其上以 16/32 比特训练 LoRA 适配器。`--memory-table` 再把基础模型加载四次（fp32、bf16、int8、nf4），
# 并累加实际张量的字节数，包括量化缩放因子。

# %%
qlora = run_lab(
    "labs.finetune",
    common + ["--method=qlora", "--memory-table"],
    OUT / "qlora",
    live_plot=False,
    echo_every=5,
    timeout_s=TIMEOUT_S,
)
assert qlora.returncode == 0, "\n".join(qlora.log[-20:])
result = qlora.result
table = {row["format"]: row for row in result["memory_table"]}
print(f"{'format':6} {'all weights':>12} {'decoder linears':>16} {'vs bf16':>8}")
for fmt, row in table.items():
    print(
        f"{fmt:6} {row['total']:>12,} {row['quantizable']:>16,} {row['vs_bf16_quantizable']:>8.3f}"
    )

# %% [markdown]
# “decoder linears”（解码器线性层）是 bitsandbytes 会量化的层；嵌入层和归一化层保持 16 比特，因此在
# 极小的模型上（嵌入层占比很大），整个模型节省的比例比 7B 模型小。一个训练步的 GPU 峰值显存需要 GPU
# 才能测量：没有 GPU 时，单元格会说明这一点。

# %%
if result["peak_step_bytes"] is not None:
    print(
        f"peak allocated memory of a QLoRA training step: {result['peak_step_bytes'] / 2**20:.1f} MiB"
    )
else:
    print(
        f"GPU measurement skipped: {result['peak_step_note']} (torch {torch.__version__}); "
        "benchmarks/gpu_lora_qlora.py compares LoRA and QLoRA peak memory on a GPU."
    )

# %% [markdown]
# ## 3. 训练后压缩微调好的模型
# `labs/quantize.py` 读取 QLoRA 运行保存的合并模型（`OUT/qlora/merged`），把它分别存成 fp32、bf16、
# int8（torch 动态量化，以及 bitsandbytes 的 LLM.int8 权重）和 nf4；对每种格式测量磁盘大小、一个批次的
# 延迟以及在留出问题上的困惑度。它是一个普通函数，所以我们直接在这个内核中调用它。

# %%
from labs.quantize import QuantizeConfig
from labs.quantize import run as quantize

qcfg = QuantizeConfig(
    model_dir=str(OUT / "qlora" / "merged"),
    out_dir=str(OUT / "quantize"),
    eval_examples=48 if SMOKE else 200,
    latency_repeats=3 if SMOKE else 10,
    num_threads=1 if SMOKE else 0,
)
ptq = quantize(qcfg)
rows = [r for r in ptq["rows"] if "skipped" not in r]
skipped = [r for r in ptq["rows"] if "skipped" in r]
print("skipped:", skipped or "none")

# %%
figure = Figure(figsize=(10, 3.2))
size_ax, ppl_ax, lat_ax = figure.subplots(1, 3)
names = [r["format"] for r in rows]
size_ax.bar(names, [r["size_bytes"] / 2**20 for r in rows], color="tab:blue")
size_ax.set_title("size on disk (MiB)")
ppl_ax.bar(names, [r["ppl_delta_pct"] for r in rows], color="tab:orange")
ppl_ax.set_title("perplexity change vs fp32 (%)")
lat_ax.bar(names, [r["latency_ms"] for r in rows], color="tab:green")
lat_ax.set_title("latency per batch (ms)")
for ax in (size_ax, ppl_ax, lat_ax):
    ax.tick_params(axis="x", rotation=45)
figure.tight_layout()
figure

# %% [markdown]
# ## 4. 断言结果
# * nf4 基础权重（被量化的层）最多占其 bf16 字节数的 35%；
# * QLoRA 运行的损失下降了，在训练批次和留出问题上都是如此；
# * 训练后压缩为 nf4 的模型小于其 fp32 大小的 35%，困惑度变化小于 10%。

# %%
train_losses = [
    json.loads(line)["loss"]
    for line in (OUT / "qlora" / "metrics.jsonl").read_text().splitlines()
    if '"train"' in line
]
nf4_ratio = table["nf4"]["quantizable"] / table["bf16"]["quantizable"]
by_format = {r["format"]: r for r in rows}
assert nf4_ratio <= 0.35, f"nf4 weights are {nf4_ratio:.3f} of bf16"
assert (
    table["fp32"]["total"] > table["bf16"]["total"] > table["int8"]["total"] > table["nf4"]["total"]
)
assert train_losses[-1] < 0.7 * train_losses[0], (
    f"QLoRA train loss {train_losses[0]} -> {train_losses[-1]}"
)
assert result["eval_after"]["loss"] < 0.6 * result["eval_before"]["loss"], result["eval_after"]
assert by_format["nf4"]["size_vs_fp32"] < 0.35, by_format["nf4"]
assert abs(by_format["nf4"]["ppl_delta_pct"]) < 10, by_format["nf4"]
record_outcome(
    "07_qlora_quantization",
    figures={"ptq": figure},
    nf4_vs_bf16=round(nf4_ratio, 4),
    bytes_fp32=table["fp32"]["quantizable"],
    bytes_bf16=table["bf16"]["quantizable"],
    bytes_int8=table["int8"]["quantizable"],
    bytes_nf4=table["nf4"]["quantizable"],
    qlora_eval_loss_before=result["eval_before"]["loss"],
    qlora_eval_loss_after=result["eval_after"]["loss"],
    nf4_ppl_delta_pct=by_format["nf4"]["ppl_delta_pct"],
    peak_step_bytes=result["peak_step_bytes"],
)

# %% [markdown]
# ## Exercise: bits per weight
# Predict, from the layout described in section 1 (blocks of 64 weights, 4 bits per weight, one
# absmax per block, the absmax values double-quantized to 8 bits), how many bits one weight costs
# in nf4. The check compares your number with what the tensors of section 1 really occupy.
# (A solution is filled in: change it and re-run the check.)

# %%
# BEGIN SOLUTION
bits_per_weight = 4 + 8 / 64  # the 4-bit code + one 8-bit absmax shared by 64 weights
# END SOLUTION

# %%
from kubecourse.exercises import require

measured_bits = nf4_bytes * 8 / weight.numel()  # section 1, scales and code book included
require("07-nf4-bits", bits_per_weight, measured=measured_bits)
print(f"predicted {bits_per_weight:.4f}, measured {measured_bits:.4f} bits per weight")

# %% [markdown]
# ## 同一个 QLoRA 运行作为 Job
# 第 06 课的 Job 接受 `METHOD=qlora`；集群从本笔记本需要的只是渲染并校验它（每个调用对应的 kubectl 命令
# 打印在其上方）：

# %%
with TrainingClient(backend=BACKEND, namespace=NAMESPACE) as client:
    objects = render("03", name="finetune-qlora", namespace=NAMESPACE, env={"METHOD": "qlora"})
    print("$ kubectl apply --dry-run=server -k manifests/03-finetune/   # the kubectl twin")
    report = client.validate(objects)
    print(report)
assert report.ok, report

# %% [markdown]
# ## 在真实集群上
# ```bash
# kubectl apply -k manifests/03-finetune/          # METHOD=qlora, MODEL_ID=Qwen/Qwen2.5-0.5B-Instruct
# kubectl logs -f job/finetune-qlora -c trainer    # "peak allocated memory of a training step"
# ```
# 或者在 GPU 机器上以 `MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"` 和 `SMOKE = False` 运行本笔记本；
# `python benchmarks/gpu_lora_qlora.py` 比较 LoRA 与 QLoRA 的峰值显存。
#
# ## 清理
# 本课保存的模型位于 `build/lessons/07` 下；删除各种格式的副本即可。

# %%
shutil.rmtree(OUT / "quantize", ignore_errors=True)
print("removed", OUT / "quantize")
