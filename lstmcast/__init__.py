"""lstmcast: CSV in, trained stacked-LSTM forecaster out, forecasts CSV out."""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import LstmcastError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .predict import load_run, predict  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "LstmcastError", "evaluate", "load_run", "load_config", "predict", "train",
           "__version__"]
