"""Stage export: models/trained -> models/export (safetensors, tokenizer, model card), checked with pipeline();
then models/export/onnx/model.onnx (+ model.int8.onnx), checked against PyTorch -> metrics/export.json."""

from pathlib import Path

from hfpipe.io import atomic_dir, read_json, run_stage, write_json_atomic
from hfpipe.params import Params, load_params


def export_onnx_into(out: Path, params: Params) -> dict:
    """ONNX (+ int8) next to the saved model in `out`, checked on validation examples; the figures
    also go into the model card. Returns the contents of metrics/export.json."""
    if not params.export.onnx:
        return {"onnx": False}
    from hfpipe.export_onnx import card_section, export_and_check, insert_card_section

    figures = export_and_check(out, Path("data/tokenized"), params.task, params.export.onnx_tolerance,
                               params.export.check_examples, params.export.quantize_int8, "models/export")
    card = out / "README.md"
    card.write_text(insert_card_section(card.read_text(), card_section(figures, params.task)))
    return figures


def report(figures: dict) -> None:
    write_json_atomic("metrics/export.json", figures)
    if figures.get("onnx"):
        print(f"onnx: max |logit difference| {figures['onnx']['onnx_max_abs_logit_diff']} on "
              f"{figures['onnx']['examples']} validation examples -> models/export/onnx/")


def main() -> None:
    params = load_params()
    if params.task != "causal-lm":  # classification, gpt2-classifier
        from hfpipe.export import export_classifier

        with atomic_dir("models/export") as out:
            export_classifier(Path("models/trained"), out, params, read_json("data/stats/fetch.json"),
                              read_json("data/stats/tokenize.json"), read_json("metrics/eval.json"))
            figures = export_onnx_into(out, params)
        report(figures)
        task = "text-generation" if params.task == "gpt2-classifier" else "text-classification"
        print(f"exported to models/export; load it with transformers.pipeline('{task}', model='models/export')")
        return
    from hfpipe.export import export_causal_lm

    data_stats, chunk_stats = read_json("data/stats/fetch.json"), read_json("data/stats/tokenize.json")
    metrics = read_json("metrics/eval.json")
    with atomic_dir("models/export") as out:
        export_causal_lm(Path("models/trained"), out, params, data_stats, chunk_stats, metrics)
        figures = export_onnx_into(out, params)
    report(figures)
    print("exported to models/export; load it with transformers.pipeline('text-generation', model='models/export')")


if __name__ == "__main__":
    run_stage(main, "export")
