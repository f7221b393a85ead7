"""Stage train_tokenizer: a byte-level BPE trained on the train split (or a pretrained one) -> models/tokenizer."""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.tasks import TASKS
    from hfpipe.tokenize import run_train_tokenizer

    for line in run_train_tokenizer(params, TASKS[params.task], paths.FILTERED, paths.TOKENIZER):
        print(line)


if __name__ == "__main__":
    run_stage(main, "train_tokenizer")
