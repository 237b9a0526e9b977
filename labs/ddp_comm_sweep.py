"""Measure DDP step time for several communication settings in ONE torchrun launch.

Each setting (bucket size in MB, compression hook) wraps the same course model (labs/common/tiny_lm.llama_config) in a fresh
DistributedDataParallel, runs `--warmup` untimed steps and `--steps` timed ones on the same
per-rank batch, and rank 0 appends {bucket_cap_mb, comm_hook, step_ms, tokens_per_s} to the JSON
file `OUT_DIR/sweep.json`. One launch for all settings, so process start-up (seconds per process) is paid once.
With one process (no torchrun) it times plain training: the baseline of weak scaling.

    torchrun --standalone --nproc-per-node=2 -m labs.ddp_comm_sweep --out-dir runs/sweep \
        --settings 25:none,1:none,25:fp16,25:powersgd
    python -m labs.ddp_comm_sweep --out-dir runs/sweep-1 --settings 25:none

Settings a device cannot run (bf16 on CPU) are recorded with their skip reason instead of a time.
Measured numbers: see benchmarks/bench_ddp_scaling.py and notebook 05.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from labs.common.data import write_bytes_atomic
from labs.common.distributed import (
    cleanup,
    comm_hook_skip_reason,
    dist_info_from_env,
    exit_process,
    init_distributed,
    wrap_ddp,
)
from labs.common.tiny_lm import build_llama, llama_config


def parse_settings(text: str) -> list[tuple[float, str]]:
    """ "25:none,1:fp16" -> [(25.0, "none"), (1.0, "fp16")]."""
    out = []
    for item in text.split(","):
        bucket, _, hook = item.partition(":")
        out.append((float(bucket), hook or "none"))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out-dir", required=True, help="rank 0 writes the timings to OUT_DIR/sweep.json"
    )
    parser.add_argument(
        "--settings",
        default="25:none,1:none,25:fp16,25:powersgd",
        help="comma-separated bucket_cap_mb:comm_hook pairs",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed steps per setting (PowerSGD starts at step 2)",
    )
    parser.add_argument("--dim", type=int, default=128, help="model width")
    parser.add_argument("--n-layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per rank per step")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per sequence")
    return parser


def median_step_s(net: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor, args) -> float:
    """Median wall time of one training step after the warmup steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        logits = net(x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]  # median: robust to a noisy neighbour on a shared CPU


def time_setting(bucket_cap_mb: float, hook: str, cfg, x, args, info, device) -> dict:
    """One sweep row: the step time of a fresh model wrapped with this bucket size and hook."""
    row = {"bucket_cap_mb": bucket_cap_mb, "comm_hook": hook}
    reason = comm_hook_skip_reason(hook, device)
    if reason:
        return {**row, "skipped": reason}
    model = build_llama(cfg, seed=0)
    net = model
    if info.is_distributed:
        # wrap_ddp logs its choices; the sweep prints one row per setting instead.
        net = wrap_ddp(
            model, device, bucket_cap_mb=bucket_cap_mb, comm_hook=hook, log=lambda *a, **k: None
        )
    step_s = median_step_s(net, model, x, args)
    tokens = args.batch_size * args.seq_len * info.world_size
    if info.is_main:
        print(
            f"sweep bucket_cap_mb {bucket_cap_mb} comm_hook {hook} step_ms {step_s * 1000:.1f}",
            flush=True,
        )
    return {
        **row,
        "step_ms": round(step_s * 1000, 2),
        "tokens_per_s": round(tokens / step_s, 1),
        "world_size": info.world_size,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = dist_info_from_env()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device("cpu")
    init_distributed(info, device)
    try:
        cfg = llama_config(
            vocab_size=256,
            hidden_size=args.dim,
            intermediate_size=64 * -(-8 * args.dim // (3 * 64)),
            num_layers=args.n_layers,
            num_heads=4,
            num_kv_heads=2,
            max_positions=args.seq_len,
            tie_word_embeddings=False,
        )
        gen = torch.Generator().manual_seed(info.rank)
        x = torch.randint(0, 256, (args.batch_size, args.seq_len + 1), generator=gen)
        results = [
            time_setting(bucket_cap_mb, hook, cfg, x, args, info, device)
            for bucket_cap_mb, hook in parse_settings(args.settings)
        ]
    finally:
        cleanup(info)
    if info.is_main:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(
            Path(args.out_dir) / "sweep.json", json.dumps(results, indent=2).encode()
        )
    return 0


if __name__ == "__main__":
    exit_process(main())
