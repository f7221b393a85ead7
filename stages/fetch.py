"""Stage fetch: filtered documents -> data/filtered (Arrow train/validation) + data/stats/fetch.json."""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.data import run_fetch
    from hfpipe.tasks import TASKS

    for line in run_fetch(params, TASKS[params.task], paths.FILTERED, paths.FETCH_STATS):
        print(line)


if __name__ == "__main__":
    run_stage(main, "fetch")
