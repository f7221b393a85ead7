"""F1: the harmonic mean of precision and recall (scikit-learn's `f1_score`), as an `evaluate` metric module.

Load it offline with `evaluate.load(hfpipe.metrics.metric_path("f1"))`.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1: the harmonic mean of precision and recall."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    f1 (float).
"""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0):
        return {"f1": float(f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                                  sample_weight=sample_weight, zero_division=zero_division))}
