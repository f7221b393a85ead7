"""Stage evaluate: validation metrics -> metrics/eval.json; metrics/report/ (a language model's
completions, a classifier's predictions and confusion matrices)."""

from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.evaluate import run_evaluate_stage

    run_evaluate_stage(params)


if __name__ == "__main__":
    run_stage(main, "evaluate")
