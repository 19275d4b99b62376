"""CUDA graphs for the custom cells' time loops (CUDA only).

A layer's time loop launches two kernels a step forward (addmm, the Triton update) and two
backward (the Triton gradient kernel, mm): at lookback 168 and two layers that is ~1,300 launches
a training step, and on an H200 the loops took the same ~55 ms at every hidden size from 32 to
256: Python and launch overhead, not arithmetic. A CUDA graph records the whole loop once and
replays it with one launch.

`run(fn, name, tensors, flags)` calls fn(*tensors, *flags) (every tensor a CUDA tensor or None)
the first time a shape is seen (that call also compiles the Triton kernels), records it as a graph
the second time, and replays the graph from then on: inputs copied into the graph's own tensors,
outputs cloned out (the next replay overwrites them). A shape is recorded only while all graphs
together hold at most GRAPH_MEMORY of the device's memory, and at most MAX_GRAPHS of them; other
shapes run eagerly, which costs only speed. A recording that fails is a recorded fallback (said
once on stderr, metrics.json "fallbacks"), and the loops then run eagerly for the rest of the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..device import record_fallback

USE_GRAPHS = True
MAX_GRAPHS = 16
GRAPH_MEMORY = 0.10     # of the device's total memory, for all graphs' inputs and outputs together
_GRAPHS: dict = {}      # key -> (graph, inputs, outputs, bytes)
_SEEN: dict = {}        # key -> calls so far
REPLAYS = [0]           # graph replays in this process (the tests read it)


def eligible(tensor: Tensor) -> bool:
    return USE_GRAPHS and tensor.is_cuda and not torch.cuda.is_current_stream_capturing()


def budget_bytes(device: torch.device) -> float:
    return GRAPH_MEMORY * torch.cuda.get_device_properties(device).total_memory


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def capture(fn: Callable, inputs: tuple, flags: tuple):
    """(graph, outputs): fn run once on a side stream (kernels compiled, workspaces made), then recorded."""
    stream = torch.cuda.Stream(device=inputs[0].device)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(*inputs, *flags)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(*inputs, *flags)
    return graph, outputs


def run(fn: Callable, name: str, tensors: tuple, flags: tuple):
    global USE_GRAPHS
    if not eligible(tensors[0]):
        return fn(*tensors, *flags)
    key = (name, flags, tuple(None if t is None else (tuple(t.shape), t.stride(), t.dtype, t.device)
                              for t in tensors))
    entry = _GRAPHS.get(key)
    if entry is None:
        _SEEN[key] = _SEEN.get(key, 0) + 1
        held = sum(e[3] for e in _GRAPHS.values())
        if _SEEN[key] < 2 or len(_GRAPHS) >= MAX_GRAPHS or held + 3 * _bytes(tensors) > budget_bytes(tensors[0].device):
            return fn(*tensors, *flags)
        inputs = tuple(None if t is None else t.clone() for t in tensors)
        try:
            graph, outputs = capture(fn, inputs, flags)
        except Exception as exc:  # noqa: BLE001 - said and recorded, never silent
            text = str(exc).strip().splitlines()
            record_fallback("cuda graphs", f"recording the {name} time loop as a CUDA graph failed "
                                           f"({type(exc).__name__}: {text[0] if text else ''}); running it eagerly")
            USE_GRAPHS = False
            return fn(*tensors, *flags)
        entry = _GRAPHS[key] = (graph, inputs, outputs, _bytes(inputs) + _bytes(outputs))
    graph, inputs, outputs, _ = entry
    for mine, given in zip(inputs, tensors, strict=True):
        if mine is not None:
            mine.copy_(given)
    graph.replay()
    REPLAYS[0] += 1
    return tuple(out.clone() for out in outputs)


@contextlib.contextmanager
def off() -> Iterator[None]:
    """Inside: the loops run eagerly (the bf16 probe times nothing and records no graph)."""
    global USE_GRAPHS
    saved, USE_GRAPHS = USE_GRAPHS, False
    try:
        yield
    finally:
        USE_GRAPHS = saved


def clear() -> None:
    """Forget every graph (and its memory) and every shape seen."""
    _GRAPHS.clear()
    _SEEN.clear()
