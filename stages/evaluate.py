"""Stage evaluate: validation metrics -> metrics/eval.json; metrics/report/ (a language model's
completions, a classifier's predictions and confusion matrices)."""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.evaluate import run_evaluate
    from hfpipe.tasks import TASKS

    task = TASKS[params.task]
    for line in run_evaluate(params, task, paths.TRAINED, paths.TOKENIZED, paths.EVAL_METRICS, paths.REPORT):
        print(line)


if __name__ == "__main__":
    run_stage(main, "evaluate")
