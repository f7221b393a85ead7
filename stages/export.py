"""Stage export: models/trained -> models/export (safetensors, tokenizer, model card), checked with pipeline();
then models/export/onnx/model.onnx (+ model.int8.onnx), checked against PyTorch -> metrics/export.json."""

from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.export import run_export_stage

    run_export_stage(params)


if __name__ == "__main__":
    run_stage(main, "export")
