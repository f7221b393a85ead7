"""Stage export: models/trained -> models/export (safetensors, tokenizer, model card), checked with pipeline()."""

from pathlib import Path

from hfpipe.io import atomic_dir, read_json, run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.export import export_causal_lm

    data_stats, chunk_stats = read_json("data/stats/fetch.json"), read_json("data/stats/tokenize.json")
    metrics = read_json("metrics/eval.json")
    with atomic_dir("models/export") as out:
        export_causal_lm(Path("models/trained"), out, params, data_stats, chunk_stats, metrics)
    print("exported to models/export; load it with transformers.pipeline('text-generation', model='models/export')")


if __name__ == "__main__":
    run_stage(main, "export")
