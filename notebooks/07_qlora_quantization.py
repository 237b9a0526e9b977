# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · QLoRA and quantization: what 4 bits buy you
#
# **What you will do:** quantize one weight matrix to 4-bit NormalFloat by hand and look at the
# error; fine-tune with QLoRA (LoRA on a 4-bit base model) and measure the bytes of the base
# weights in fp32, bf16, int8 and nf4; then compress the fine-tuned model after training
# (post-training quantization) and compare size, latency and perplexity.
#
# **Why:** the weights dominate fine-tuning memory once LoRA has removed most optimizer state. A 7B
# model is ~14 GB in bf16 but ~3.9 GB in nf4, which is the difference between a data-centre GPU and
# the one in a workstation. The price is rounding error; this lesson measures it.
#
# **Prerequisites:** 06. **Time:** 20 minutes (smoke: about a minute).

# %% tags=["parameters"]
SMOKE = True  # tiny offline model and the labs' --smoke presets
BACKEND = "local"  # used for the "same run as a Job" section: "local" or "kubernetes"
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
DEVICE = "auto"  # "auto", "cpu" or "cuda": the QLoRA run; 4-bit matmuls run on both
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
# ## 1. NF4 by hand
# bitsandbytes cuts a weight matrix into blocks of 64 values, stores each block's absolute maximum
# (`absmax`), and replaces every value by the nearest of 16 levels (4 bits) placed at the quantiles
# of a normal distribution: weights are roughly normal, so each level is used about equally often.
# Double quantization then stores the absmax values themselves in 8 bits.

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
# ## 2. QLoRA: LoRA on a 4-bit base
# `labs/finetune.py --method qlora` loads the base with
# `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
# bnb_4bit_compute_dtype=...)`, runs `prepare_model_for_kbit_training` (norms in fp32, input grads
# for gradient checkpointing) and trains LoRA adapters in 16/32 bit on top. `--memory-table` loads
# the base model four more times (fp32, bf16, int8, nf4) and adds up the bytes of the actual
# tensors, quantization scales included.

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
# "decoder linears" are the layers bitsandbytes quantizes; embeddings and norms stay in 16 bit, so
# on a tiny model (where the embedding is a large share) the whole-model saving is smaller than on
# a 7B one. The peak GPU memory of a training step needs a GPU: the cell says so when there is none.

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
# ## 3. Compress the fine-tuned model after training
# `labs/quantize.py` takes the merged model the QLoRA run saved (`OUT/qlora/merged`) and stores it
# as fp32, bf16, int8 (torch dynamic quantization, and bitsandbytes LLM.int8 weights) and nf4; for
# each it measures size on disk, latency of one batch and perplexity on the held-out questions. It
# is an ordinary function, so we call it in this kernel.

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
# ## 4. Assert the outcome
# * nf4 base weights (the quantized layers) take at most 35% of their bf16 bytes;
# * the QLoRA run's loss fell, on training batches and on held-out questions;
# * compressed to nf4 after training, the model is < 35% of its fp32 size and its perplexity moved
#   by less than 10%.

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
# ## The same QLoRA run as a Job
# The Job of lesson 06 takes `METHOD=qlora`; rendering and validating it is all a cluster needs
# from this notebook (the kubectl twin is printed above each call):

# %%
with TrainingClient(backend=BACKEND, namespace=NAMESPACE) as client:
    objects = render("03", name="finetune-qlora", namespace=NAMESPACE, env={"METHOD": "qlora"})
    print("$ kubectl apply --dry-run=server -k manifests/03-finetune/   # the kubectl twin")
    report = client.validate(objects)
    print(report)
assert report.ok, report

# %% [markdown]
# ## On a real cluster
# ```bash
# kubectl apply -k manifests/03-finetune/          # METHOD=qlora, MODEL_ID=Qwen/Qwen2.5-0.5B-Instruct
# kubectl logs -f job/finetune-qlora -c trainer    # "peak allocated memory of a training step"
# ```
# Or run this notebook on a GPU machine with `MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"` and
# `SMOKE = False`; `python benchmarks/gpu_lora_qlora.py` compares LoRA and QLoRA peak memory.
#
# ## Clean up
# The saved models of this lesson are under `build/lessons/07`; remove the per-format copies.

# %%
shutil.rmtree(OUT / "quantize", ignore_errors=True)
print("removed", OUT / "quantize")
