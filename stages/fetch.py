"""Stage fetch: filtered documents -> data/filtered (Arrow train/validation) + data/stats/fetch.json."""

from pathlib import Path

from hfpipe.io import atomic_dir, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.data import FETCHES
    from hfpipe.hub import locked_commit
    from hfpipe.tasks import TASKS

    fetch, summary = FETCHES[TASKS[params.task].KIND]  # a code corpus, or labelled text (pairs)
    # A Hub dataset: the commit hub.lock.yaml holds for it (resolved and locked on first use).
    commit = locked_commit(params, "dataset")
    with atomic_dir("data/filtered") as out:
        stats = fetch(params.dataset, out, commit)
    write_json_atomic(Path("data/stats/fetch.json"), stats)
    print(summary(stats))


if __name__ == "__main__":
    run_stage(main, "fetch")
