"""What runs an nn.LSTM in bf16 on this GPU: autocast vs the module cast to bf16 outside autocast.

Prints, for a 2 x 256 LSTM at batch 1024 and lookback 168 (forward + backward): the output dtype,
milliseconds per step, and the RNN ops the profiler saw (aten::_cudnn_rnn = cuDNN's fused RNN).
Measured on an H200 (torch 2.11, cuDNN 9.19): autocast bf16 runs cuDNN in float16; the module and
input cast to bf16 outside autocast run cuDNN in bf16 (docs/speed.md, GPU).

    python benchmarks/bf16_lstm.py        # needs CUDA
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

BATCH, LOOKBACK, HIDDEN, LAYERS = 1024, 168, 256, 2


def step(lstm: torch.nn.LSTM, inputs: torch.Tensor, autocast: torch.dtype | None) -> torch.dtype:
    with torch.autocast("cuda", dtype=autocast or torch.float32, enabled=autocast is not None):
        out, _ = lstm(inputs)
    out.float().sum().backward()
    return out.dtype


def ms_per_step(lstm, inputs, autocast, repeats: int = 10) -> float:
    for _ in range(3):
        step(lstm, inputs, autocast)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        step(lstm, inputs, autocast)
    torch.cuda.synchronize()
    return (time.perf_counter() - began) * 1000 / repeats


def main() -> None:
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    cases = [("fp32 ieee", torch.float32, None), ("autocast bf16", torch.float32, torch.bfloat16),
             ("explicit bf16", torch.bfloat16, None), ("explicit fp16", torch.float16, None)]
    for name, dtype, autocast in cases:
        lstm = torch.nn.LSTM(2, HIDDEN, LAYERS, batch_first=True).cuda().to(dtype)
        lstm.flatten_parameters()
        inputs = torch.randn(BATCH, LOOKBACK, 2, device="cuda", dtype=torch.float32 if autocast else dtype)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out_dtype = step(lstm, inputs, autocast)
        ops = sorted({e.key for e in prof.key_averages() if "rnn" in e.key.lower()})
        print(f"{name}: output {out_dtype}, {ms_per_step(lstm, inputs, autocast):.2f} ms/step, ops {ops}")
    torch.backends.cudnn.rnn.fp32_precision = "tf32"
    lstm = torch.nn.LSTM(2, HIDDEN, LAYERS, batch_first=True).cuda()
    inputs = torch.randn(BATCH, LOOKBACK, 2, device="cuda")
    print(f"fp32 tf32: {ms_per_step(lstm, inputs, None):.2f} ms/step")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
