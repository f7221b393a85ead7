"""`dvc plots`: which declared plots a task must have data for, and HTML that renders offline.

`dvc plots show` only warns "DVC failed to load some plots" when a data file is missing, and its
HTML loads vega from a CDN. `python -m hfpipe.plots` checks the plots of the current task first
(one error line naming the plot and the missing file, exit 2) and then writes the HTML with a
local copy of the same vega / vega-lite / vega-embed releases (npm, cached in .dvc/tmp/vega), so
the page draws on a machine without internet too:

    python -m hfpipe.plots -o dvc_plots          # then open dvc_plots/index.html
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hfpipe.io import PipelineError

# The releases dvc-render's HTML loads from cdn.jsdelivr.net (dvc_render/vega.py), so the offline
# page behaves like the online one. (vega-lite 5.2.0 declares a peer vega ^5.21.0: npm needs
# --legacy-peer-deps for the exact set dvc uses.)
VEGA_PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
VEGA_CACHE = Path(".dvc/tmp/vega")

CONFUSION = "metrics/report/confusion/plots/sklearn/confusion_matrix_validation.json"
PRECISION_RECALL = "metrics/report/confusion/plots/sklearn/precision_recall_validation.json"
# Plots (ids as dvc.yaml names them) each task's run must have data for. Test-split plots are
# optional (GLUE-style test splits are unlabelled) and the classification ones do not apply to
# the causal LM; `dvc plots show` skips a plot whose files are all missing.
TASK_PLOTS = {
    "causal-lm": ["Loss", "Learning rate"],
    "classification": ["Loss", "Learning rate", "Accuracy", CONFUSION, PRECISION_RECALL],
    "gpt2-classifier": ["Loss", "Learning rate", "Accuracy", CONFUSION, PRECISION_RECALL],
}
WRITTEN_BY = {"dvclive/": "train", "metrics/report/": "evaluate"}


def required_plots(task: str, binary: bool = True) -> list[str]:
    """The plot ids `task` must draw (a precision-recall curve only for two-class tasks)."""
    return [p for p in TASK_PLOTS[task] if binary or p != PRECISION_RECALL]


def check_plot_data(show: dict, required: list[str]) -> None:
    """Raise one PipelineError line naming every required plot that `dvc plots show --json`
    (`show`) could not load or that dvc.yaml does not declare, with the missing file."""
    declared = set(show.get("data", {}))
    problems = [f"plot {pid!r} is not declared in dvc.yaml" for pid in required if pid not in declared]
    for err in show.get("errors", []):
        if err.get("name") in required and err.get("rev", "workspace") == "workspace":
            source = err.get("source") or err.get("name")
            stage = next((s for prefix, s in WRITTEN_BY.items() if source.startswith(prefix)), None)
            reason = "is missing" if err.get("type") == "FileNotFoundError" else f"cannot be read ({err.get('type')})"
            problems.append(f"plot {err['name']!r}: {source} {reason}" + (f" (written by the {stage} stage)" if stage else ""))
    if problems:
        raise PipelineError("; ".join(problems) + "; run dvc repro first")


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
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps",
                             "--prefix", str(cache)] + [f"{n}@{v}" for n, v in VEGA_PACKAGES.items()],
                            capture_output=True, text=True)
    if result.returncode != 0 or not all(b.is_file() for b in bundles):
        last = (result.stderr.strip().splitlines() or [""])[-1]
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


def show_offline(out_dir: Path, repo: Path = Path("."), extra_args: list[str] | None = None) -> Path:
    """`dvc plots show -o out_dir` with the offline template; returns out_dir/index.html."""
    bundles = vega_scripts(repo / VEGA_CACHE)
    out_dir.mkdir(parents=True, exist_ok=True)
    for bundle in bundles:
        shutil.copy2(bundle, out_dir / bundle.name)
    template = repo / ".dvc/tmp/plots_offline_template.html"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(offline_template([b.name for b in bundles]))
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out_dir.resolve()),
                             "--html-template", str(template.resolve()), *(extra_args or [])],
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
    # Only plots with data: the other task's plots (declared in the same dvc.yaml) would draw empty axes.
    # ("dvc.yaml::ID": the definition alone; a bare file-path id would also draw the raw file.)
    missing = {err.get("name") for err in show.get("errors", [])}
    targets = [f"dvc.yaml::{pid}" for pid in show.get("data", {}) if pid not in missing] if missing else []
    print(f"file://{show_offline(Path(args.out), extra_args=targets).resolve()}")


if __name__ == "__main__":
    from hfpipe.io import run_stage

    run_stage(main, "plots")
