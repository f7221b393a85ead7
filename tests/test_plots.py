"""hfpipe.plots: which plots a task must draw, the one-line error for missing data, the offline page."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hfpipe.io import PipelineError
from hfpipe.plots import (
    SKLEARN_DIR,
    TASK_PLOTS_FILE,
    check_plot_data,
    offline_template,
    required_plots,
    task_plot_definitions,
    write_task_plots,
)
from hfpipe.tasks import TASKS
from hfpipe.tasks.common import CONFUSION, PRECISION_RECALL

ROOT = Path(__file__).resolve().parents[1]


def root_plot_ids() -> list[str]:
    return [pid for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] for pid in plot]


def test_dvc_yaml_declares_only_the_plots_every_task_draws():
    # a plot there that one task does not draw makes that task's `dvc plots show` fail to load it
    assert root_plot_ids() == list(TASKS["causal-lm"].PLOTS)
    for name, task in TASKS.items():
        assert set(root_plot_ids()) <= set(task.PLOTS), name


def sklearn_files(root: Path, *names: str) -> None:
    (root / SKLEARN_DIR).mkdir(parents=True)
    for name in names:
        (root / SKLEARN_DIR / name).write_text("[]")


@pytest.mark.parametrize("task_name", ["classification", "gpt2-classifier"])
def test_a_classification_run_declares_its_own_plots_in_metrics_dvc_yaml(tmp_path, task_name):
    task = TASKS[task_name]
    sklearn_files(tmp_path, "confusion_matrix_validation.json", "confusion_matrix_test.json",
                  "precision_recall_validation.json")
    declared = write_task_plots(task, tmp_path)
    assert declared == ["Accuracy", CONFUSION, f"{SKLEARN_DIR}/confusion_matrix_test.json", PRECISION_RECALL]
    # with dvc.yaml's plots, every plot the task must draw is declared, and nothing else
    assert set(root_plot_ids()) | set(declared) >= set(required_plots(task))
    written = yaml.safe_load((tmp_path / TASK_PLOTS_FILE).read_text())["plots"]
    by_id = {pid: props for plot in written for pid, props in plot.items()}
    # paths are relative to metrics/, where the file lives
    assert by_id["report/confusion/plots/sklearn/confusion_matrix_validation.json"] == {
        "template": "confusion", "x": "actual", "y": "predicted", "title": "Confusion matrix (validation)"}
    assert by_id["report/confusion/plots/sklearn/precision_recall_validation.json"] == {
        "template": "simple", "x": "recall", "y": "precision", "title": "Precision-recall (validation)"}
    assert set(by_id["Accuracy"]["y"]) == {"../dvclive/plots/metrics/eval/accuracy.tsv",
                                           "../dvclive/plots/metrics/eval/f1.tsv"}


def test_the_causal_lm_has_no_plots_of_its_own_and_a_stale_file_is_removed(tmp_path):
    sklearn_files(tmp_path, "confusion_matrix_validation.json")
    write_task_plots(TASKS["classification"], tmp_path)
    assert (tmp_path / TASK_PLOTS_FILE).is_file()
    assert write_task_plots(TASKS["causal-lm"], tmp_path) == [] and task_plot_definitions(TASKS["causal-lm"], tmp_path) == []
    assert not (tmp_path / TASK_PLOTS_FILE).exists()  # another task's plots would fail to load


def test_classification_plots_without_evaluate_output_or_with_a_stray_file_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="has no plots: run the evaluate stage first"):
        write_task_plots(TASKS["classification"], tmp_path)
    sklearn_files(tmp_path, "confusion_matrix_validation.json", "roc_validation.json")
    with pytest.raises(PipelineError, match="roc_validation.json: not a plot evaluate writes"):
        write_task_plots(TASKS["classification"], tmp_path)
    assert not (tmp_path / TASK_PLOTS_FILE).exists()
    (tmp_path / SKLEARN_DIR / "roc_validation.json").unlink()
    (tmp_path / SKLEARN_DIR / "notes.json").write_text("{}")  # a name without the _<split> part too
    with pytest.raises(PipelineError, match="notes.json: not a plot evaluate writes"):
        write_task_plots(TASKS["classification"], tmp_path)


def test_required_plots_by_task():
    assert required_plots(TASKS["causal-lm"]) == ["Loss", "Learning rate"]
    assert CONFUSION in required_plots(TASKS["classification"]) and PRECISION_RECALL in required_plots(TASKS["gpt2-classifier"])
    assert PRECISION_RECALL not in required_plots(TASKS["classification"], binary=False)


def test_missing_files_of_required_plots_are_named_in_one_line():
    show = {"data": {"Loss": [], "Learning rate": [], "Accuracy": []},
            "errors": [{"name": "Loss", "rev": "workspace", "source": "dvclive/plots/metrics/eval/loss.tsv",
                        "type": "FileNotFoundError", "msg": "..."},
                       {"name": "Accuracy", "rev": "workspace", "source": "dvclive/plots/metrics/eval/accuracy.tsv",
                        "type": "FileNotFoundError", "msg": "..."}]}
    with pytest.raises(PipelineError) as err:
        check_plot_data(show, ["Loss", "Learning rate"])  # Accuracy is not required: not reported
    assert str(err.value) == ("plot 'Loss': dvclive/plots/metrics/eval/loss.tsv is missing (written by the train "
                              "stage); run dvc repro (or dvc pull) first")
    with pytest.raises(PipelineError, match="'Accuracy': dvclive/plots/metrics/eval/accuracy.tsv is missing"):
        check_plot_data(show, ["Accuracy"])
    check_plot_data(show, ["Learning rate"])  # has its data: no error
    with pytest.raises(PipelineError, match="plot 'Precision' is not declared in dvc.yaml or metrics/dvc.yaml"):
        check_plot_data(show, ["Precision"])


def test_offline_template_loads_local_scripts_and_keeps_dvcs_placeholder():
    page = offline_template(["vega.min.js", "vega-lite.min.js", "vega-embed.min.js"])
    assert "{plot_divs}" in page and "http" not in page and "{scripts}" not in page
    assert page.index('src="vega.min.js"') < page.index('src="vega-embed.min.js"')
