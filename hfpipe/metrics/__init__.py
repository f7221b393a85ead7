"""Metric modules for `evaluate.load(path)`, shipped with the project.

`evaluate.load("accuracy")` fetches its script from the Hub; these files are the same kind of
module (an `evaluate.Metric` computed with scikit-learn) and load offline from this folder.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("accuracy", "f1", "precision", "recall")


def metric_path(name: str) -> str:
    return str(METRICS_DIR / f"{name}.py")
