"""Stage plots (after evaluate): metrics/dvc.yaml, the plots only this task draws.

See hfpipe/plots.py for why this is a generated file rather than part of dvc.yaml.
"""

from hfpipe.io import run_stage
from hfpipe.params import load_params
from hfpipe.plots import TASK_PLOTS_FILE, write_task_plots


def main() -> None:
    params = load_params()
    declared = write_task_plots(params.task)
    print(f"plots: {TASK_PLOTS_FILE} declares {', '.join(declared)}" if declared
          else f"plots: task {params.task} draws only dvc.yaml's plots (no {TASK_PLOTS_FILE})")


if __name__ == "__main__":
    run_stage(main, "plots")
