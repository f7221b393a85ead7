"""Stage plots (after evaluate): metrics/dvc.yaml, the plots only this task draws.

See hfpipe/plots.py for why this is a generated file rather than part of dvc.yaml.
"""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.plots import run_plots
    from hfpipe.tasks import TASKS

    for line in run_plots(params, TASKS[params.task], paths.TASK_PLOTS):
        print(line)


if __name__ == "__main__":
    run_stage(main, "plots")
