"""`dvc plots`: the plots only the current task draws, which plots a task must have data for, and
HTML that renders offline.

DVC has no conditional plots: a plot declared in `dvc.yaml` whose file a task never writes makes
`dvc plots show` print "DVC failed to load some plots". So the root `dvc.yaml` declares the plots
every task draws (loss, learning rate) and the `plots` stage, which runs on every repro after
evaluate, writes `metrics/dvc.yaml` with the plots of this task alone (accuracy curves, and a
confusion matrix / precision-recall curve per labelled split), or removes it for the causal LM.
It is generated, not a stage output (DVC refuses a dvc.yaml as an output and does not read one
inside an output folder), and always regenerated, so a stage restored from DVC's run-cache cannot
leave another task's plots behind. It is committed with the run, so `dvc plots diff` between
experiments reads each one's own plots.

`dvc plots show`'s HTML loads vega from a CDN. `python -m hfpipe.plots` checks the plots of the
current task first (one error line naming the plot and the missing file, exit 2) and then writes
the HTML with a local copy of the same vega / vega-lite / vega-embed releases (npm, cached in
.dvc/tmp/vega), so the page draws on a machine without internet too:

    python -m hfpipe.plots -o dvc_plots          # then open dvc_plots/index.html
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from hfpipe.io import PipelineError, write_text_atomic

# The releases dvc-render's HTML loads from cdn.jsdelivr.net (dvc_render/vega.py), so the offline
# page behaves like the online one. (vega-lite 5.2.0 declares a peer vega ^5.21.0: npm needs
# --legacy-peer-deps for the exact set dvc uses.)
VEGA_PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
VEGA_CACHE = Path(".dvc/tmp/vega")

TASK_PLOTS_FILE = Path("metrics/dvc.yaml")
SKLEARN_DIR = "metrics/report/confusion/plots/sklearn"  # where evaluate's dvclive writes them
CONFUSION = f"{SKLEARN_DIR}/confusion_matrix_validation.json"
PRECISION_RECALL = f"{SKLEARN_DIR}/precision_recall_validation.json"
# How each kind of dvclive sklearn plot is drawn (its file name: <kind>_<split>.json).
SKLEARN_PLOTS = {"confusion_matrix": ({"template": "confusion", "x": "actual", "y": "predicted"}, "Confusion matrix"),
                 "precision_recall": ({"template": "simple", "x": "recall", "y": "precision"}, "Precision-recall")}
# The classification tasks' train-time evaluation curves (paths relative to metrics/, where the file is).
ACCURACY_CURVES = {"Accuracy": {"template": "linear", "x": "step",
                                "y": {"../dvclive/plots/metrics/eval/accuracy.tsv": "accuracy",
                                      "../dvclive/plots/metrics/eval/f1.tsv": "f1"}}}

# Plots (ids as `dvc plots show` names them) a run must have data for, by the kind of model its task
# trains (hfpipe.tasks: each module's KIND). Test-split plots are optional (GLUE-style test splits
# are unlabelled).
KIND_PLOTS = {
    "language-model": ["Loss", "Learning rate"],
    "classifier": ["Loss", "Learning rate", "Accuracy", CONFUSION, PRECISION_RECALL],
}
WRITTEN_BY = {"dvclive/": "train", "metrics/report/": "evaluate"}


def task_plot_definitions(task: str, root: Path = Path(".")) -> list[dict]:
    """The plots only `task` draws, as `metrics/dvc.yaml` declares them: for the classification
    tasks the accuracy curves and each sklearn plot evaluate wrote (one per labelled split); none
    for the causal LM. A classification run without any evaluate plot is an error (run evaluate)."""
    from hfpipe.tasks import TASKS

    if "Accuracy" not in KIND_PLOTS[TASKS[task].KIND]:  # the language model draws only dvc.yaml's
        return []
    files = sorted((root / SKLEARN_DIR).glob("*.json"))
    if not files:
        raise PipelineError(f"{SKLEARN_DIR} has no plots: run the evaluate stage first (dvc repro)")
    found = []
    for file in files:
        kind, _, split = file.stem.rpartition("_")
        if kind not in SKLEARN_PLOTS or not split:
            raise PipelineError(f"{SKLEARN_DIR}/{file.name}: not a plot evaluate writes "
                                f"({', '.join(SKLEARN_PLOTS)}); remove it")
        found.append((list(SKLEARN_PLOTS).index(kind), split != "validation", split, kind, file.name))
    plots = [ACCURACY_CURVES]
    for *_, split, kind, name in sorted(found):  # by kind, validation first
        props, title = SKLEARN_PLOTS[kind]
        plots.append({f"{Path(SKLEARN_DIR).relative_to('metrics')}/{name}": {**props, "title": f"{title} ({split})"}})
    return plots


def write_task_plots(task: str, root: Path = Path(".")) -> list[str]:
    """Write (or, with no task plots, remove) `metrics/dvc.yaml`; returns the plot ids declared."""
    plots = task_plot_definitions(task, root)
    path = root / TASK_PLOTS_FILE
    if not plots:
        path.unlink(missing_ok=True)
        return []
    header = (f"# Generated by the plots stage (hfpipe/plots.py) for task {task}: the plots only this task draws.\n"
              "# Rewritten on every dvc repro; edit hfpipe/plots.py, not this file.\n")
    write_text_atomic(path, header + yaml.safe_dump({"plots": plots}, sort_keys=False))
    ids = [pid for plot in plots for pid in plot]
    return [pid if pid == "Accuracy" else f"metrics/{pid}" for pid in ids]


def required_plots(task: str, binary: bool = True) -> list[str]:
    """The plot ids `task` must draw (a precision-recall curve only for two-class tasks)."""
    from hfpipe.tasks import TASKS

    return [p for p in KIND_PLOTS[TASKS[task].KIND] if binary or p != PRECISION_RECALL]


def check_plot_data(show: dict, required: list[str]) -> None:
    """Raise one PipelineError line naming every required plot that `dvc plots show --json`
    (`show`) could not load or that dvc.yaml does not declare, with the missing file."""
    declared = set(show.get("data", {}))
    problems = [f"plot {pid!r} is not declared in dvc.yaml or {TASK_PLOTS_FILE}"
                for pid in required if pid not in declared]
    for err in show.get("errors", []):
        if err.get("name") in required and err.get("rev", "workspace") == "workspace":
            source = err.get("source") or err.get("name")
            stage = next((s for prefix, s in WRITTEN_BY.items() if source.startswith(prefix)), None)
            # DataIndexDirError: a DVC-cached output folder neither in the workspace nor in the cache
            missing = err.get("type") in ("FileNotFoundError", "DataIndexDirError")
            reason = "is missing" if missing else f"cannot be read ({err.get('type')})"
            written_by = f" (written by the {stage} stage)" if stage else ""
            problems.append(f"plot {err['name']!r}: {source} {reason}{written_by}")
    if problems:
        raise PipelineError("; ".join(problems) + "; run dvc repro (or dvc pull) first")


def plots_json(repo: Path = Path(".")) -> dict:
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc plots show --json failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(result.stdout)


def vega_scripts(cache: Path = VEGA_CACHE) -> list[Path]:
    """The vega, vega-lite and vega-embed browser bundles, installed with npm into `cache` once."""
    bundles = [cache / "node_modules" / name / "build" / f"{name}.min.js" for name in VEGA_PACKAGES]
    if all(b.is_file() for b in bundles):
        return bundles
    npm = shutil.which("npm")
    if npm is None:
        raise PipelineError("npm not found: it installs vega for the offline plots page (apt-get install npm), "
                            "or use plain `dvc plots show` with internet access")
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    # Two processes installing into one folder at once (parallel test workers, two `plots` pages)
    # break each other's npm (ENOTEMPTY): the second waits for the first, then finds the bundles.
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(b.is_file() for b in bundles):
            return bundles
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps",
                                 "--prefix", str(cache)] + [f"{n}@{v}" for n, v in VEGA_PACKAGES.items()],
                                capture_output=True, text=True)
    if result.returncode != 0 or not all(b.is_file() for b in bundles):
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        raise PipelineError(f"npm install of {', '.join(VEGA_PACKAGES)} into {cache} failed: {last}")
    return bundles


def offline_template(script_names: list[str]) -> str:
    """A dvc-render page template that loads vega from files next to index.html, not a CDN."""
    scripts = "\n".join(f'    <script src="{name}"></script>' for name in script_names)
    return f"""<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def show_offline(out_dir: Path, repo: Path = Path(".")) -> Path:
    """`dvc plots show -o out_dir` with the offline template; returns out_dir/index.html."""
    bundles = vega_scripts(repo / VEGA_CACHE)
    out_dir.mkdir(parents=True, exist_ok=True)
    for bundle in bundles:
        shutil.copy2(bundle, out_dir / bundle.name)
    template = repo / ".dvc/tmp/plots_offline_template.html"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(offline_template([b.name for b in bundles]))
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out_dir.resolve()),
                             "--html-template", str(template.resolve())],
                            cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc plots show failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    return out_dir / "index.html"


def main(argv: list[str] | None = None) -> None:
    from hfpipe.params import load_params

    parser = argparse.ArgumentParser(description="Check the current task's plots, then write dvc plots "
                                                 "HTML that renders offline.")
    parser.add_argument("-o", "--out", default="dvc_plots", help="output folder (index.html)")
    parser.add_argument("--check-only", action="store_true", help="only check that every plot has its data")
    args = parser.parse_args(argv)
    params = load_params()
    binary = params.dataset.label_names is None or len(params.dataset.label_names) == 2
    show = plots_json()
    check_plot_data(show, required_plots(params.task, binary))
    if args.check_only:
        print(f"every plot of task {params.task} has its data")
        return
    print(f"file://{show_offline(Path(args.out)).resolve()}")


if __name__ == "__main__":
    from hfpipe.io import run_stage

    run_stage(main, "plots")
