"""The median of ensemble members trained in separate runs, scored offline on a competition.

`benchmarks/accuracy.py DATASET --members-out FILE.npz` saves each member's own forecasts; this
script stacks the members of the files given (all of a file's members, or `FILE.npz:1,3` for
members 1 and 3) and scores their element-wise median (what `train.ensemble` forecasts) with the
protocol of accuracy.py (on the part the files forecast: --holdout test or validation), next to
the mean and each member alone. It answers "would these members
make a good ensemble?" without training them again in one run.

    python benchmarks/accuracy.py m3-monthly --set train.ensemble=1 --set train.members=null \\
        --members-out pool/a.npz
    python benchmarks/accuracy.py m3-monthly --set train.ensemble=1 --set train.members=null \\
        --set model.window_norm=standard --set train.loss=mase --members-out pool/b.npz
    python benchmarks/combine.py m3-monthly pool/a.npz pool/b.npz

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import DATASETS, Competition, holdout_split, load_competition, mase, smape  # noqa: E402


def read_members(item: str) -> tuple[str, np.ndarray, str]:
    """`FILE.npz` or `FILE.npz:1,3` -> (label, (members, series, horizon), the holdout scored)."""
    path, _, picks = item.partition(":")
    with np.load(path) as saved:
        forecasts = saved["forecasts"]
        holdout = str(saved["holdout"]) if "holdout" in saved.files else "test"
    if picks:
        chosen = [int(k) for k in picks.split(",")]
        if not all(1 <= k <= len(forecasts) for k in chosen):
            sys.exit(f"{item}: {path} has members 1..{len(forecasts)}")
        forecasts = forecasts[[k - 1 for k in chosen]]
    return item, forecasts, holdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=[k for k, v in DATASETS.items() if isinstance(v, Competition)])
    parser.add_argument("members", nargs="+", help="FILE.npz or FILE.npz:1,3 from accuracy.py --members-out")
    args = parser.parse_args(argv)

    spec = DATASETS[args.dataset]
    series, histories, actual = load_competition(spec)
    parts = [read_members(item) for item in args.members]
    holdouts = sorted({h for _, _, h in parts})
    if len(holdouts) > 1:
        sys.exit(f"the files forecast different parts ({', '.join(holdouts)}: accuracy.py --holdout); "
                 "combine files of one part")
    histories, actual, _ = holdout_split(histories, actual, series[0].h, holdouts[0])
    stacked = np.concatenate([f for _, f, _ in parts])
    if stacked.shape[1:] != actual.shape:
        sys.exit(f"forecasts of shape {stacked.shape[1:]}, but {args.dataset} has {actual.shape}")
    m = spec.season

    def scores(f: np.ndarray) -> tuple[float, float]:
        return smape(actual, f), mase(histories, actual, f, m)

    print(f"{args.dataset}: median of {len(stacked)} members; scored: the {holdouts[0]} part")
    print(f"{'forecast':<40}{'sMAPE':>8}{'MASE':>8}")
    for label, forecasts, _ in parts:
        for k, f in enumerate(forecasts, start=1):
            print(f"{label + f' member {k}':<40}" + "".join(f"{v:>8.3f}" for v in scores(f)))
    median, mean = scores(np.median(stacked, axis=0)), scores(stacked.mean(axis=0))
    print(f"{'median (the ensemble)':<40}{median[0]:>8.3f}{median[1]:>8.3f}")
    print(f"{'mean':<40}{mean[0]:>8.3f}{mean[1]:>8.3f}")
    print(json.dumps({"dataset": args.dataset, "holdout": holdouts[0], "members": len(stacked), "inputs": args.members,
                      "smape": round(median[0], 3), "mase": round(median[1], 4),
                      "mean_smape": round(mean[0], 3)}))


if __name__ == "__main__":
    main()
