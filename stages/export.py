"""Stage export: models/trained -> models/export (safetensors, tokenizer, model card), checked with pipeline();
then models/export/onnx/model.onnx (+ model.int8.onnx), checked against PyTorch -> metrics/export.json."""

from hfpipe import paths
from hfpipe.io import run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.export import ExportRun, run_export
    from hfpipe.tasks import TASKS

    run = ExportRun(model_dir=paths.TRAINED, data_dir=paths.TOKENIZED, fetch_stats=paths.FETCH_STATS,
                    tokenize_stats=paths.TOKENIZE_STATS, eval_metrics=paths.EVAL_METRICS, out_dir=paths.EXPORT,
                    metrics_file=paths.EXPORT_METRICS)
    for line in run_export(params, TASKS[params.task], run):
        print(line)


if __name__ == "__main__":
    run_stage(main, "export")
