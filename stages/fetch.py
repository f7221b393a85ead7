"""Stage fetch: filtered documents -> data/filtered (Arrow train/validation) + data/stats/fetch.json."""

from pathlib import Path

from hfpipe.io import atomic_dir, read_json, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    # The Hub commit the inputs stage resolved dataset.revision to (None offline or for local data).
    commit = read_json("data/stats/inputs.json").get("commit")
    if params.task != "causal-lm":  # classification, gpt2-classifier
        from hfpipe.data import fetch_classification

        with atomic_dir("data/filtered") as out:
            stats = fetch_classification(params.dataset, out, commit)
        write_json_atomic(Path("data/stats/fetch.json"), stats)
        print(f"rows {stats['split_rows']}; labels {stats['label_names']}")
        return
    from hfpipe.data import fetch_code_corpus

    with atomic_dir("data/filtered") as out:
        stats = fetch_code_corpus(params.dataset, out, commit)
    write_json_atomic(Path("data/stats/fetch.json"), stats)
    print(f"kept {stats['kept']} of {stats['seen']} documents ({stats['bytes'] / 1e6:.1f} MB): {stats['split_documents']}")


if __name__ == "__main__":
    run_stage(main, "fetch")
