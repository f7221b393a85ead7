"""hfpipe.plots: which plots a task must draw, the one-line error for missing data, the offline page."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hfpipe.io import PipelineError
from hfpipe.plots import (CONFUSION, PRECISION_RECALL, TASK_PLOTS, check_plot_data, offline_template,
                          required_plots)

ROOT = Path(__file__).resolve().parents[1]


def test_every_required_plot_is_declared_in_dvc_yaml():
    declared = {pid for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] for pid in plot}
    for task, plots in TASK_PLOTS.items():
        assert set(plots) <= declared, task


def test_required_plots_by_task():
    assert required_plots("causal-lm") == ["Loss", "Learning rate"]
    assert CONFUSION in required_plots("classification") and PRECISION_RECALL in required_plots("gpt2-classifier")
    assert PRECISION_RECALL not in required_plots("classification", binary=False)


def test_missing_files_of_required_plots_are_named_in_one_line():
    show = {"data": {"Loss": [], "Learning rate": [], "Accuracy": []},
            "errors": [{"name": "Loss", "rev": "workspace", "source": "dvclive/plots/metrics/eval/loss.tsv",
                        "type": "FileNotFoundError", "msg": "..."},
                       {"name": "Accuracy", "rev": "workspace", "source": "dvclive/plots/metrics/eval/accuracy.tsv",
                        "type": "FileNotFoundError", "msg": "..."}]}
    with pytest.raises(PipelineError) as err:
        check_plot_data(show, ["Loss", "Learning rate"])  # Accuracy is not required: not reported
    assert str(err.value) == ("plot 'Loss': dvclive/plots/metrics/eval/loss.tsv is missing (written by the train "
                              "stage); run dvc repro first")
    with pytest.raises(PipelineError, match="'Accuracy': dvclive/plots/metrics/eval/accuracy.tsv is missing"):
        check_plot_data(show, ["Accuracy"])
    check_plot_data(show, ["Learning rate"])  # has its data: no error
    with pytest.raises(PipelineError, match="plot 'Precision' is not declared in dvc.yaml"):
        check_plot_data(show, ["Precision"])


def test_offline_template_loads_local_scripts_and_keeps_dvcs_placeholder():
    page = offline_template(["vega.min.js", "vega-lite.min.js", "vega-embed.min.js"])
    assert "{plot_divs}" in page and "http" not in page and "{scripts}" not in page
    assert page.index('src="vega.min.js"') < page.index('src="vega-embed.min.js"')
