"""Scale: lstmcast predict and train set-up on N series x 120 monthly points, against pandas
reading the same file (its dates parsed): the floor any CSV tool pays, measured in the same run.

    python benchmarks/scale.py --series 1000 10000 100000
    python benchmarks/scale.py --series 100000 --no-train --workdir /tmp/scale   # keep the files
    python benchmarks/scale.py --series 100000 1000000 --format parquet --no-train --data-dir /data \
        --out-format parquet --no-reference-above 100000   # streamed predict of 1M series

`--format parquet` writes (and reads) the inputs as Parquet, made in chunks with pyarrow's
ParquetWriter (never the whole file in memory); pandas' reference is then pd.read_parquet.
`--chunk-series N` is predict's option (its default when not given); `--out-format` the suffix of
its output. `--data-dir` holds the generated inputs (made when missing, else reused, read only).

A small model is trained once on a 200-series file; predict then runs on each generated file in
its own process (wall time and peak resident memory of that process). Train set-up is everything
`lstmcast train` does before its first epoch on the same file (one epoch of 256 sampled windows):
the process's wall time less metrics.json's timing from the first epoch on; the wrap-up after the
epochs (validation metrics, model.pt) is printed apart.
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

POINTS = 120


def chunks(n: int, seed: int = 0, chunk: int = 20_000):
    """(ids, y) of N series x POINTS monthly points, `chunk` series at a time: ids (k,) text,
    y (k, POINTS), a level x season x trend with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(POINTS)
    for lo in range(0, n, chunk):
        k = min(chunk, n - lo)
        level = rng.uniform(50, 500, (k, 1))
        season = 1 + 0.2 * np.sin(2 * np.pi * (t[None, :] + rng.integers(0, 12, (k, 1))) / 12)
        y = level * season * (1 + 0.002 * t[None, :]) + rng.normal(0, 5, (k, POINTS))
        yield np.char.add("s", np.char.zfill(np.arange(lo, lo + k).astype(str), 7)), np.round(y, 2)


def make_file(path: Path, n: int, seed: int = 0) -> None:
    """N series x POINTS monthly points, long format (unique_id, ds, y), written in chunks."""
    dates = pd.date_range("2010-01-01", periods=POINTS, freq="MS").strftime("%Y-%m-%d").to_numpy()
    for number, (ids, y) in enumerate(chunks(n, seed)):
        frame = pd.DataFrame({"unique_id": np.repeat(ids, POINTS), "ds": np.tile(dates, len(ids)),
                              "y": y.ravel()})
        frame.to_csv(path, index=False, mode="a" if number else "w", header=not number)


def make_parquet(path: Path, n: int, seed: int = 0, chunk: int = 20_000) -> None:
    """The same series as make_file, as Parquet (unique_id text, ds timestamp, y float64), written
    `chunk` series at a time to a temporary name, renamed when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    dates = pd.date_range("2010-01-01", periods=POINTS, freq="MS").values.astype("datetime64[ns]")
    schema = pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("ns")), ("y", pa.float64())])
    partial = path.with_name(f".{path.name}.part")
    with pq.ParquetWriter(partial, schema) as writer:
        for ids, y in chunks(n, seed, chunk):
            writer.write_table(pa.table({"unique_id": np.repeat(ids, POINTS), "ds": np.tile(dates, len(ids)),
                                         "y": y.ravel()}, schema=schema))
    partial.replace(path)


def measured(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a child process (GNU time when there is one)."""
    began = time.perf_counter()
    if Path("/usr/bin/time").exists():
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
        return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


def pandas_read(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return [sys.executable, "-c", f"import pandas as pd; pd.read_parquet({str(path)!r})"]
    return [sys.executable, "-c", f"import pandas as pd; pd.read_csv({str(path)!r}, parse_dates=['ds'])"]


def lstmcast(*args: str) -> list[str]:
    return [sys.executable, "-m", "lstmcast", *args]


def before_first_epoch(run_dir: Path, wall: float) -> float:
    """The set-up: train's wall time (process start to exit) less what metrics.json's timing counts
    from the first epoch on (epochs, checkpoints, wrap-up): interpreter start, imports, reading,
    checks, the recipe and the device buffer."""
    timing = json.loads((run_dir / "metrics.json").read_text())["timing"]
    return wall - float(timing["from_first_epoch"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--no-train", action="store_true", help="predict only (no train set-up figure)")
    parser.add_argument("--workdir", default=None, help="keep the generated files here")
    parser.add_argument("--data-dir", default=None, help="inputs here (made when missing; default: workdir)")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="the inputs' format")
    parser.add_argument("--out-format", choices=["csv", "parquet"], default="csv", help="predict's output")
    parser.add_argument("--chunk-series", type=int, default=None, help="predict --chunk-series (default: its own)")
    parser.add_argument("--no-reference-above", type=int, default=None,
                        help="skip pandas' whole-file read above this many series (it may not fit in memory)")
    args = parser.parse_args(argv)
    env_note = f"{os.cpu_count()} CPUs"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        small = work / "small.csv"
        make_file(small, 200, seed=1)
        model = work / "model"
        subprocess.run(lstmcast("train", str(small), "--out", str(model), "--overwrite", "--quiet",
                                "--set", "train.recipe=none", "--set", "model.hidden_size=16",
                                "--set", "model.layers=1", "--set", "train.epochs=1", "--horizon", "18",
                                "--set", "data.lookback=36"), check=True)
        data_dir = Path(args.data_dir) if args.data_dir else work
        chunk = [] if args.chunk_series is None else ["--chunk-series", str(args.chunk_series)]
        for n in args.series:
            data = data_dir / f"data_{n}.{args.format}"
            if not data.exists():
                (make_parquet if args.format == "parquet" else make_file)(data, n)
            out = work / f"forecast_{n}.{args.out_format}"
            predict_s, predict_mb = measured(lstmcast("predict", str(data), "--model", str(model),
                                                      "--out", str(out), *chunk))
            row = {"series": n, "rows": n * POINTS, "format": args.format, "out": args.out_format,
                   "chunk_series": args.chunk_series, "predict_s": round(predict_s, 2),
                   "predict_mb": round(predict_mb)}
            if args.no_reference_above is None or n <= args.no_reference_above:
                read_s, read_mb = measured(pandas_read(data))
                row.update(read_s=round(read_s, 2), read_mb=round(read_mb),
                           predict_ratio=round(predict_s / read_s, 2), memory_ratio=round(predict_mb / read_mb, 2))
            if not args.no_train:
                run = work / f"train_{n}"
                train_s, train_mb = measured(lstmcast(
                    "train", str(data), "--out", str(run), "--overwrite", "--quiet", "--horizon", "18",
                    "--set", "train.recipe=none", "--set", "model.hidden_size=16", "--set", "model.layers=1",
                    "--set", "train.epochs=1", "--set", "train.windows_per_epoch=256",
                    "--set", "data.lookback=36"))
                setup = before_first_epoch(run, train_s)
                row.update(train_s=round(train_s, 2), train_mb=round(train_mb), setup_s=round(setup, 2),
                           after_setup_s=round(train_s - setup, 2))
                if "read_s" in row:
                    row.update(setup_ratio=round(setup / row["read_s"], 2))
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    print(json.dumps({"points": POINTS, "machine": env_note, "rows": rows}))


if __name__ == "__main__":
    main()
