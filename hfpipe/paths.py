"""The pipeline's paths, relative to the repository root: what each stage reads and writes
(dvc.yaml's deps and outs; tests/test_paths.py checks that dvc.yaml names these)."""

from pathlib import Path

# The project's code: the packages a stage's code deps (hfpipe.stage_deps) and imports (hfpipe.io) are in.
CODE_PACKAGES = ("hfpipe", "stages")

# Inputs DVC watches (dvc.yaml: local data and models must live under these).
RAW_DATA = Path("data/raw")
SAMPLES = Path("samples")
PRETRAINED_MODELS = Path("models/pretrained")
PARAMS = Path("params.yaml")
HUB_LOCK = Path("hub.lock.yaml")
REQUIREMENTS = Path("requirements.txt")  # the lock: library versions and the installed-packages corpus

# fetch
FILTERED = Path("data/filtered")
FETCH_STATS = Path("data/stats/fetch.json")
# train_tokenizer
TOKENIZER = Path("models/tokenizer")
# tokenize
TOKENIZED = Path("data/tokenized")
TOKENIZE_STATS = Path("data/stats/tokenize.json")
# train
TRAINED = Path("models/trained")
DVCLIVE = Path("dvclive")
CHECKPOINTS = Path("models/checkpoints")  # scratch (git-ignored, no DVC output): a killed run resumes from it
# evaluate
EVAL_METRICS = Path("metrics/eval.json")
REPORT = Path("metrics/report")
# export
EXPORT = Path("models/export")
EXPORT_METRICS = Path("metrics/export.json")
# plots
TASK_PLOTS = Path("metrics/dvc.yaml")  # the plots only this task draws (dvc.yaml includes it)

# Not pipeline data: each stage's wall-clock timings (git-ignored, no DVC output; hfpipe.io.run_stage)
LOGS = Path("logs")
