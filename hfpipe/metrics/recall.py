"""Recall: true positives over actual positives (scikit-learn's `recall_score`), as an `evaluate` metric module.

Load it offline with `evaluate.load(hfpipe.metrics.metric_path("recall"))`.
"""

import datasets
import evaluate
from sklearn.metrics import recall_score

_DESCRIPTION = "Recall: true positives over actual positives."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    recall (float).
"""


class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0):
        return {"recall": float(recall_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                                  sample_weight=sample_weight, zero_division=zero_division))}
