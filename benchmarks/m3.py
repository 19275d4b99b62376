"""M3 accuracy (kept for the command in docs/accuracy.md and the issue): `benchmarks/accuracy.py m3-<subset>`.

    python benchmarks/m3.py                        # M3 monthly, no config (accuracy.py's default)
    python benchmarks/m3.py --subset quarterly     # M3 quarterly

Every other option is passed on to accuracy.py (--config, --set, --limit, --holdout, --no-baselines, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--subset", default="monthly", choices=["monthly", "quarterly"])
    known, rest = parser.parse_known_args()
    main([f"m3-{known.subset}", *rest])
