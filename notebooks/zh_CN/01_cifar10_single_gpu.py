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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/01_cifar10_single_gpu.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/01_cifar10_single_gpu.py
# ---

# %% [markdown]
# # 01 · 单 GPU 训练 CIFAR-10：一个为在 Pod 中运行而写的训练程序
#
# **你将做什么：** 准备 CIFAR-10 数据，用实验程序 `labs/cifar10.py` 训练一个 ResNet，实时观察损失和
# 准确率，然后中断一次运行，再从它的[检查点（checkpoint）](../../docs/glossary.md#checkpoint)恢复。
#
# **为什么：** 要在 Kubernetes Pod 中运行的程序必须能安全重启（Pod 会被重新调度），以原子方式写检查点，
# 并输出机器可读的指标。这就是那样一个程序，此时还不涉及任何集群。
#
# **前置条件：** 00_setup。**用时：** 15 分钟（冒烟规模：在笔记本电脑 CPU 上约一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 小规模、合成数据、适合 CPU；False：真实 CIFAR-10、完整训练计划
DATASET = "synthetic"  # "synthetic"（离线，在本机生成）或 "cifar10"（一次性下载 163 MiB）
DEVICE = "auto"  # "auto"、"cpu" 或 "cuda"
EPOCHS = 0  # 0：使用预设的轮数（冒烟：几轮；完整：30 轮）
TIMEOUT_S = 600

# %%
import json
import shutil
import subprocess
import sys

from IPython.display import display

from kubecourse.contract import Done, Resumed, StartLine, parse_line
from kubecourse.course import record_outcome
from kubecourse.lab import plot_metrics, read_metrics, read_tensorboard, run_lab
from kubecourse.manifests import repo_root

ROOT = repo_root()
DATA_DIR = ROOT / "data"
OUT = ROOT / "build" / "lessons" / "01"
shutil.rmtree(OUT, ignore_errors=True)  # every run of this notebook starts from scratch

common = [f"--data-dir={DATA_DIR}", f"--dataset={DATASET}", f"--device={DEVICE}"]
if SMOKE:
    common.append("--smoke")
if EPOCHS:
    common.append(f"--epochs={EPOCHS}")
print("training flags:", common)

# %% [markdown]
# ## 1. 准备数据（只需一次）
# `labs.prepare_data` 写出官方的 CIFAR-10 Python 格式（`data_batch_1..5`、`test_batch`）。
# 对于 `cifar10`，它下载压缩包并校验 MD5；`synthetic` 用生成的图像写出同样的格式，因此加载数据的代码
# 完全相同。在集群上，这一步作为 Job 的 Init 容器运行，写入一个
# [持久卷申领（PersistentVolumeClaim，PVC）](../../docs/glossary.md#pvc)，之后的每次运行都复用它。

# %%
prepare = [
    sys.executable,
    "-m",
    "labs.prepare_data",
    f"--data-dir={DATA_DIR}",
    f"--dataset={DATASET}",
]
print("$ python", " ".join(prepare[1:]))
subprocess.run(prepare, cwd=ROOT, check=True, timeout=TIMEOUT_S)
print(sorted(p.name for p in (DATA_DIR / DATASET / "cifar-10-batches-py").iterdir()))

# %% [markdown]
# ## 2. 训练
# 实验程序把 `step N/M ...` 行输出到标准输出，并向 `metrics.jsonl` 每行写一个 JSON 对象；下面的图在
# 训练进行时反复读取该文件。在 Pod 中，你会用 `kubectl logs -f` 读到同样的行。

# %%
run = run_lab("labs.cifar10", common, OUT / "full", timeout_s=TIMEOUT_S, echo_every=5)
assert run.returncode == 0, "\n".join(run.log[-20:])
result = run.result
print(json.dumps(result, indent=2))

# %%
metrics = read_metrics(OUT / "full")
figure = plot_metrics(metrics, title="CIFAR-10 ResNet (lab 01)")
figure

# %% [markdown]
# ### 在 TensorBoard 中查看同样的指标（可选）
# 装上可选的 `tensorboard` 包（`pip install -e '.[tensorboard]'`）后，训练程序还会把每个指标写到
# `OUT/tensorboard/`。下面的单元把这些事件文件读回来，并检查其中的数字与 `metrics.jsonl` 一致；
# `tensorboard --logdir build/lessons/01/full/tensorboard` 会打开完整的界面。没有这个包时，该单元会说明这一点并继续。

# %%
tb_records = read_tensorboard(OUT / "full")  # None: the optional package is not installed
if tb_records is None:
    print("TensorBoard not installed: pip install -e '.[tensorboard]' (metrics.jsonl has it all)")
else:
    jsonl_loss = {r["step"]: r["loss"] for r in metrics if r["kind"] == "train"}
    tb_loss = {r["step"]: r["loss"] for r in tb_records if r["kind"] == "train" and "loss" in r}
    assert tb_loss.keys() == jsonl_loss.keys(), (sorted(tb_loss), sorted(jsonl_loss))
    assert all(
        abs(tb_loss[s] - jsonl_loss[s]) <= 1e-5 * max(1.0, abs(jsonl_loss[s])) for s in tb_loss
    )
    print(f"TensorBoard events: {len(tb_records)} records, train loss at {len(tb_loss)} steps")
    tb_figure = plot_metrics(tb_records, title="CIFAR-10 ResNet, read back from TensorBoard events")
    display(tb_figure)

# %% [markdown]
# ### 在 GPU 上：bf16 自动混合精度与 channels_last
# 在 CUDA 上，实验程序在 `torch.autocast(dtype=bfloat16)` 下执行前向传播（在不支持 bf16 的 GPU 上用
# fp16 加 GradScaler，即[混合精度（mixed precision）](../../docs/glossary.md#mixed-precision)），
# 并让激活值保持 `channels_last` 内存布局，这正是让张量核心（tensor core）跑得快的关键。
# 下面的单元格在有 GPU 时运行一个简短的 bf16 检查，否则说明跳过的原因。

# %%
from kubecourse.env import torch_info

gpu = torch_info()
if gpu.get("cuda"):
    bf16_run = run_lab(
        "labs.cifar10",
        common + ["--device=cuda", "--precision=bf16", "--max-steps=20"],
        OUT / "gpu-bf16",
        live_plot=False,
        echo_every=0,
        timeout_s=TIMEOUT_S,
    )
    header = next(line for line in bf16_run.log if line.startswith("cifar10:"))
    assert bf16_run.returncode == 0 and "precision=bfloat16" in header, header
    print("GPU path ran:", header)
else:
    print(
        f"GPU cell skipped: no CUDA device here (torch {gpu.get('torch')}); the CPU run above used fp32."
    )

# %% [markdown]
# ## 3. 检查点与恢复
# Kubernetes 随时可能停止一个 Pod（抢占、腾空节点、`backoffLimit` 重试）。实验程序每
# `--checkpoint-every` 步写一次检查点（先写临时文件、fsync、再重命名：绝不会只写一半），启动时从最新的
# 完整检查点恢复。这里我们用 `--max-steps` 让一次运行中途停止，然后再次启动完全相同的命令。

# %%
total_steps = result["steps"]
half = max(1, total_steps // 2)
resume_flags = common + [f"--checkpoint-every={half}"]
first = run_lab(
    "labs.cifar10",
    resume_flags + [f"--max-steps={half}"],
    OUT / "resumed",
    live_plot=False,
    echo_every=0,
    timeout_s=TIMEOUT_S,
)
print(
    "interrupted at step",
    half,
    "checkpoints:",
    sorted(p.name for p in (OUT / "resumed" / "checkpoints").iterdir()),
)
second = run_lab(
    "labs.cifar10",
    resume_flags,
    OUT / "resumed",
    live_plot=False,
    echo_every=0,
    timeout_s=TIMEOUT_S,
)
print("\n".join(t for t in second.log if isinstance(parse_line(t), StartLine | Resumed | Done)))
resumed = second.result

# %% [markdown]
# ## 4. 输入流水线，实测
# 等数据的 GPU 就是空闲的 GPU。教程里的流水线在 `Dataset.__getitem__` 中**一次一张图片**地解码、裁剪、翻转和
# 归一化，再由 `DataLoader` 把它们拼成批次；实验程序则把整个数据集保存为一个 uint8 张量，用张量运算对
# **整个批次**做数据增强（`labs/common/data.py`：`EpochBatches`、`flip_crop`、`normalize`）。下面在这台 CPU
# 上分别测量两者，带和不带后台工作进程（`num_workers`，每个都是一个进程；`prefetch_factor` 是每个工作进程
# 预取排队的批次数）。`pin_memory=True`（页锁定的主机内存，使拷贝到 GPU 的操作可以配合 `non_blocking=True`
# 异步进行）需要 GPU；跳过时该单元会说明。在 GPU 节点上，同样的测量决定一块 GPU 需要多少 CPU 核（第 05 课）。

# %%
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from labs.common.data import EpochBatches, flip_crop, normalize

N, BATCH = (1024, 128) if SMOKE else (8192, 256)
images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)
labels = torch.randint(0, 10, (N,))
mean, std = torch.tensor([125.3, 123.0, 113.9]), torch.tensor([63.0, 62.1, 66.7])


class PerSample(Dataset):
    """The tutorial way: every image augmented on its own."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        img = F.pad(images[i].float(), (4, 4, 4, 4))
        y, x = torch.randint(0, 9, (2,))
        img = img[:, y : y + 32, x : x + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img - mean.view(3, 1, 1)) / std.view(3, 1, 1), labels[i]


def images_per_s(loader, batched: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        x = normalize(flip_crop(batch[0], gen), mean, std) if batched else batch[0]
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32), (x.dtype, x.shape)
        seen += x.shape[0]
    delivered[loader] = seen
    return seen / (time.perf_counter() - start)


delivered = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # one core each, like a pipeline sharing a node with the trainer


pipelines = {
    "per-sample, 0 workers": lambda: DataLoader(PerSample(), batch_size=BATCH, shuffle=True),
    "per-sample, 2 workers": lambda: DataLoader(
        PerSample(), batch_size=BATCH, shuffle=True, num_workers=2, prefetch_factor=2
    ),
    "batched (the lab), 0 workers": lambda: DataLoader(
        EpochBatches(images, labels, torch.randperm(N), BATCH), batch_size=None
    ),
}
loading = {name: images_per_s(make(), "batched" in name) for name, make in pipelines.items()}
torch.set_num_threads(threads)
for name, rate in loading.items():
    print(f"{name:30s} {rate:10,.0f} images/s")
speedup = loading["batched (the lab), 0 workers"] / loading["per-sample, 0 workers"]
print(
    f"batched / per-sample: x{speedup:.1f} (benchmarks/bench_cifar_throughput.py measures it idle)"
)
if torch.cuda.is_available():
    pinned = DataLoader(PerSample(), batch_size=BATCH, pin_memory=True, num_workers=2)
    print(f"{'per-sample, 2 workers, pinned':30s} {images_per_s(pinned, False):10,.0f} images/s")
else:
    print("pin_memory skipped: no CUDA device here (it speeds up host-to-GPU copies only)")

# %% [markdown]
# ## 5. 实验程序的效率技巧：一个小型消融实验
# 实验程序的训练使用线性的**学习率预热**（LR warmup）再接余弦调度（`--warmup-fraction`：在随机权重上用大学习率
# 会发散）、**标签平滑**（label smoothing，`--label-smoothing`：目标取 0.9/0.01 而不是 1/0，这样网络不会被推向
# 无穷大的 logits）、用于评估的权重 **EMA**（指数移动平均，`--ema`，“动量平滑”：最近若干步权重的平均比最后一步更平滑）、
# **梯度累积**（gradient accumulation，`--grad-accum-steps`：每个优化器步包含多个微批次，以更少的激活内存得到
# 相同的全局批次），在 GPU 上还有**混合精度**（mixed precision，`--precision bf16`，第 2 节的 GPU 单元）。
# 三次很小的运行切换这些技巧：带 EMA 的实验程序默认设置、不用任何技巧，以及把同一全局批次拆成 2 个微批次。
# 在冒烟规模（30 步）下，准确率的差异大多是噪声；在 GPU 上设 `SMOKE = False`，每种配置会在真实的 CIFAR-10 上
# 各跑 5 个 epoch。无论规模大小，这张表都能可靠地说明：每种技巧每步的代价，以及梯度累积保持了优化器步数。

# %%
size = ["--train-subset=640", "--test-subset=500", "--epochs=3", "--width=8"] if SMOKE else []
tiny = common + size + ["--epochs=5"] * (not SMOKE) + ["--log-every=100", "--checkpoint-every=0"]
tiny += ["--num-threads=1"] if SMOKE else []
variants = {
    "all tricks (+EMA)": ["--ema"],
    "no tricks": ["--warmup-fraction=0", "--label-smoothing=0"],
    "2 x 32 accumulated": ["--ema", "--batch-size=32", "--grad-accum-steps=2"],
}
ablation = {}
for name, flags in variants.items():
    run = run_lab("labs.cifar10", tiny + flags, OUT / "ablation" / name.split()[0], live_plot=False,
                  echo_every=0, timeout_s=TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, "\n".join(run.log[-20:])
    ablation[name] = run.result
print(f"{'variant':22s} {'test_acc':>8s} {'test_loss':>9s} {'steps':>5s} {'img/s':>7s}")
for name, r in ablation.items():
    print(
        f"{name:22s} {r['test_acc']:8.3f} {r['test_loss']:9.3f} {r['steps']:5d} {r['images_per_s']:7.0f}"
    )
print("mixed precision: on CUDA only (the CPU trains in fp32); see the GPU cell of section 2")

# %% [markdown]
# ## 6. 断言结果
# * 准确率远高于随机猜测（10 个类别：0.10）；
# * 训练损失下降了；
# * 被中断又恢复的运行与未中断的运行结果*完全*一致（相同的批次、相同的随机状态：检查点保存了数据
#   位置和每一个随机数生成器（RNG）的状态）。

# %%
train_losses = [r["loss"] for r in metrics if r.get("kind") == "train"]
assert result["test_acc"] >= 0.4, f"test accuracy {result['test_acc']:.3f} is not far above chance"
assert train_losses[-1] < train_losses[0] * 0.8, (
    f"loss did not fall enough: {train_losses[0]:.3f} -> {train_losses[-1]:.3f}"
)
assert first.returncode == 0 and second.returncode == 0
assert resumed["resumed_from_step"] == half, resumed
assert sorted(delivered.values()) == [N // BATCH * BATCH, N, N], delivered  # every image, once
assert all(r["test_acc"] > 0.1 for r in ablation.values()), ablation  # above chance, each
assert ablation["2 x 32 accumulated"]["steps"] == ablation["all tricks (+EMA)"]["steps"]
assert resumed["test_acc"] == result["test_acc"] and resumed["test_loss"] == result["test_loss"], (
    resumed,
    result,
)
record_outcome(
    "01_cifar10_single_gpu",
    figures={"training": figure},
    test_acc=result["test_acc"],
    first_loss=train_losses[0],
    last_loss=train_losses[-1],
    images_per_s=result["images_per_s"],
    resume_equal=True,
    device=result["device"],
    loading_images_per_s={k: round(v) for k, v in loading.items()},
    ablation_test_acc={k: r["test_acc"] for k, r in ablation.items()},
)

# %% [markdown]
# ## 练习
# 从 `metrics` 中找出测试准确率最高的那一轮（epoch）（`eval` 记录里有 `epoch` 和 `test_acc`）。
# 已填入一个参考答案：修改它，再重新运行检查。

# %%
evals = [r for r in metrics if r.get("kind") == "eval"]
# BEGIN SOLUTION
best_epoch = max(evals, key=lambda r: r["test_acc"])["epoch"]
# END SOLUTION

# %%
from kubecourse.exercises import require

require("01-best-epoch", best_epoch, evals=evals)
print(f"best epoch {best_epoch}")

# %% [markdown]
# ## 在真实集群上
# 下一个笔记本把这条命令原样打包成 Kubernetes Job。要在 GPU 机器上真正训练，请设置
# `SMOKE = False, DATASET = "cifar10"`（实验程序的文档字符串列出了实测数据）：
#
# ```bash
# python -m labs.prepare_data --data-dir data --dataset cifar10
# python -m labs.cifar10 --data-dir data --dataset cifar10 --out-dir runs/cifar10
# ```
#
# ## 清理
# 输出位于 `build/lessons/01`（每次运行开始时删除）；数据保留在 `data/` 中。
