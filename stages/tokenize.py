"""Stage tokenize: data/filtered -> data/tokenized (a causal LM's packed blocks, or a classifier's
examples) + data/stats/tokenize.json."""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.tasks import TASKS
    from hfpipe.tokenize import run_tokenize

    task = TASKS[params.task]
    for line in run_tokenize(params, task, paths.TOKENIZER, paths.FILTERED, paths.TOKENIZED, paths.TOKENIZE_STATS):
        print(line)


if __name__ == "__main__":
    run_stage(main, "tokenize")
