"""Stage train: data/tokenized -> models/trained; curves in dvclive/, resumable checkpoints in models/checkpoints."""

from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    from hfpipe import launch

    if launch.in_distributed_run():  # a worker of torchrun / accelerate launch: never outlive the launcher
        launch.exit_with_parent()
    params = load_params()
    from hfpipe.train import run_train_stage

    run_train_stage(params)


if __name__ == "__main__":
    run_stage(main, "train")
