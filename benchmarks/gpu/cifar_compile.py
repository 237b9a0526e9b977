"""GPU only: does torch.compile pay for the CIFAR lab's ResNet? Eager vs compiled training steps.

    python -m benchmarks.gpu.cifar_compile --out build/gpu-acceptance/cifar-compile.json

The lab's own model (labs.cifar10.ResNet, default width 64) in bf16 autocast + channels_last, SGD,
batch 512 of random images: the median time of a training step eager and compiled (after warm-up
steps, so compilation is counted apart, as `compile_s`). It "pays" when the compiled step is at
least 5% faster AND the compile time is won back within one 3-epoch smoke run of 50000 images.
Part of benchmarks/gpu/acceptance.sh; on a machine without CUDA it says why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def step_times(model, batch: int, steps: int) -> tuple[float, float]:
    """(seconds of the first step, median seconds of the next `steps`)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    x = torch.randn(batch, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device="cuda")
    times = []
    for _ in range(steps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[3:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("build/gpu-acceptance/cifar-compile.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"skipped: no CUDA device (torch {torch.__version__}); this measures GPU steps")
        return 0
    from labs.cifar10 import ResNet

    result = {"batch": args.batch_size}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = ResNet().cuda().to(memory_format=torch.channels_last)
        if mode == "compiled":
            model = torch.compile(model)
        first, median = step_times(model, args.batch_size, args.steps)
        result[f"{mode}_images_per_s"] = round(args.batch_size / median, 1)
        result[f"{mode}_first_step_s"] = round(first, 2)
    result["compile_s"] = round(result["compiled_first_step_s"] - result["eager_first_step_s"], 1)
    speedup = result["compiled_images_per_s"] / result["eager_images_per_s"]
    saved_per_run = (
        3 * 50000 * (1 / result["eager_images_per_s"] - 1 / result["compiled_images_per_s"])
    )
    result["speedup"] = round(speedup, 3)
    result["pays"] = bool(speedup >= 1.05 and saved_per_run > result["compile_s"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
