"""End-to-end: the three classification recipes under real `dvc`, offline, on the repo's samples/.

Each recipe runs as written, with only its Hub inputs swapped for local stand-ins of the same kind
and its sizes shrunk (conftest's finished runs: sentiment_run, mrpc_run, gpt2_classifier_run). Per
recipe: what the run produced; `dvc exp run -S lr=...` on a copy, which must rerun exactly train,
evaluate and export and compare in `dvc metrics diff` / `dvc plots diff`; edits of the local data
files (outside the repository for sentiment, inside it for mrpc) that must rerun fetch. Models:
sentiment a tiny DistilBERT (random weights, no token_type_ids), mrpc all-MiniLM-L6-v2 from its pip
package (a BERT, with token_type_ids), gpt2-classifier a tiny GPT-2 with a GPT-2-kind tokenizer.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e import GPT2_SCRATCH, ROOT, checkpoints, copy_run, dvc, git, make_repo_copy, set_train, stages_run

pytestmark = pytest.mark.e2e

def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_lr_experiment_reruns_train_evaluate_export(repo: Path, lr: float) -> dict:
    import hashlib

    def weights() -> str:
        return hashlib.sha256((repo / "models/trained/model.safetensors").read_bytes()).hexdigest()

    before, before_weights = json.loads((repo / "metrics/eval.json").read_text()), weights()
    result = dvc(repo, "exp", "run", "-S", f"lr={lr}")
    assert stages_run(result.stdout) == {"train", "evaluate", "export"}
    assert json.loads(dvc(repo, "params", "diff", "--json").stdout)["params.yaml"]["lr"]["new"] == lr
    after = json.loads((repo / "metrics/eval.json").read_text())
    assert weights() != before_weights  # another lr trained another model
    # dvc metrics diff compares the experiment's metrics with HEAD's, metric by metric
    diff = json.loads(dvc(repo, "metrics", "diff", "--all", "--json").stdout)["metrics/eval.json"]
    for split, metrics in after.items():
        for name in ("accuracy", "f1"):
            entry = diff[f"{split}.{name}"]
            assert (entry["old"], entry["new"]) == (before[split][name], metrics[name]), (split, name, entry)
    # dvc plots diff draws both runs' task plots (metrics/dvc.yaml, written by the plots stage) and fails to load none
    plots = json.loads(dvc(repo, "plots", "diff", "HEAD", "--json").stdout)
    assert plots.get("errors") is None, plots["errors"]
    for plot in ("Loss", "Accuracy", "metrics/report/confusion/plots/sklearn/confusion_matrix_validation.json"):
        rows = [row for item in plots["data"][plot] for row in item["content"]["data"]["values"]]
        assert {row["rev"] for row in rows} == {"HEAD", "workspace"}, plot  # data from both runs
    assert "failed to load" not in dvc(repo, "plots", "diff", "HEAD").stderr
    return diff


def assert_table_matches_metrics(report: Path, split: str, metrics: dict, label_names: list[str]) -> list[dict]:
    rows = read_csv(report / f"predictions_{split}.csv")
    assert list(rows[0]) [:1] == ["text"] and {"label", "prediction", "probability"} <= set(rows[0])
    assert len(rows) == metrics["examples"]
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert all(r["prediction"] in label_names and 0.5 <= float(r["probability"]) <= 1.0 for r in rows)
    confusion = json.loads((report / f"confusion/plots/sklearn/confusion_matrix_{split}.json").read_text())
    assert [(c["actual"], c["predicted"]) for c in confusion] == [(r["label"], r["prediction"]) for r in rows]
    return rows


def test_sentiment_recipe_on_local_files_outside_the_repo(sentiment_run):
    repo = sentiment_run
    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    # samples/sentiment has no validation split: 30% of its 200 train rows, then the 100-row cap
    assert fetch["split_rows"] == {"train": 100, "validation": 60, "test": 60}
    assert fetch["validation_from"].startswith("train_test_split(test_size=0.3, seed=0)")
    tok = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert tok["train"]["examples"] == 100 and tok["train"]["truncation_rate"] == 0.0
    assert 5 < tok["train"]["length_mean"] < 32
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"validation", "test"}
    for split in ("validation", "test"):
        assert metrics[split]["accuracy"] >= 0.9, metrics  # the samples' words carry the sentiment
        assert_table_matches_metrics(repo / "metrics/report", split, metrics[split], ["neg", "pos"])
    # train-time evaluation every eval_steps, logged by dvclive at the global step
    steps = [line.split("\t")[0] for line in (repo / "dvclive/plots/metrics/eval/accuracy.tsv").read_text().splitlines()[1:]]
    assert steps == ["20", "40"]
    assert json.loads((repo / "models/export/config.json").read_text())["model_type"] == "distilbert"
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(repo / "models/export"))
    assert clf("a wonderful , charming film .")[0]["label"] == "pos"
    assert clf("the plot is dull and tedious .")[0]["label"] == "neg"
    assert "Labels: 0 = neg, 1 = pos" in (repo / "models/export/README.md").read_text()
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]  # DistilBERT: no token_type_ids
    assert onnx["inputs"] == ["input_ids", "attention_mask"] and onnx["onnx_max_abs_logit_diff"] < 1e-3
    from tests.test_export_onnx import quantized_ops

    # 60 validation examples: int8 predicts as PyTorch does on nearly all, and the file is quantized
    assert onnx["int8_prediction_agreement"] >= 0.9, onnx
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= quantized_ops(repo / "models/export/onnx/model.int8.onnx")
    print(f"sentiment onnx: {onnx}")


def test_sentiment_lr_experiment(sentiment_run, tmp_path):
    assert_lr_experiment_reruns_train_evaluate_export(copy_run(sentiment_run, tmp_path / "repo"), 2e-3)


def test_sentiment_local_data_is_a_dependency_inside_the_repo_and_imported_from_outside(sentiment_run, tmp_path):
    repo = copy_run(sentiment_run, tmp_path / "repo")
    mydata = repo / "data/raw/mydata"  # the user's folder of CSVs, where dvc.yaml watches local data
    assert stages_run(dvc(repo, "repro").stdout) == set()  # nothing changed: nothing reruns
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    (mydata / "notes.txt").write_text("where these reviews came from\n")  # a file added, read by no split
    result = dvc(repo, "repro")
    assert "Running stage 'fetch'" in result.stdout and stages_run(result.stdout) == {"fetch"}  # same data: cached after
    rows = (mydata / "train.csv").read_text().splitlines()
    text, label = rows[1].rsplit(",", 1)
    rows[1] = f"{text},{1 - int(label)}"  # flip one label
    (mydata / "train.csv").write_text("\n".join(rows) + "\n")
    before = json.loads((repo / "data/stats/fetch.json").read_text())["label_counts"]
    result = dvc(repo, "repro", "fetch")  # (the stages after it: their deps changed, checked below)
    assert stages_run(result.stdout) == {"fetch"}
    assert json.loads((repo / "data/stats/fetch.json").read_text())["label_counts"] != before
    assert {"train_tokenizer", "tokenize"} <= set(json.loads(dvc(repo, "status", "--json").stdout))
    (mydata / "test.csv").unlink()  # a split deleted
    result = dvc(repo, "repro", "fetch")
    assert stages_run(result.stdout) == {"fetch"}
    assert "test" not in json.loads((repo / "data/stats/fetch.json").read_text())["split_rows"]

    # Outside the repository: refused in one line (DVC would not see an edit there) ...
    outside = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "samples/sentiment", outside)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"]["path"] = str(outside)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro", "fetch", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "outside data/raw/ and samples/" in errors[0] and "dvc import-url" in errors[0], errors
    # ... and brought in as the line says: dvc import-url, locked until `dvc update` takes a new version.
    dvc(repo, "import-url", str(outside), "data/raw/elsewhere")
    params["dataset"]["path"] = "data/raw/elsewhere"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'fetch'" in dvc(repo, "repro", "fetch").stdout
    (outside / "train.csv").write_text((outside / "train.csv").read_text().replace(",1\n", ",0\n", 1))
    assert stages_run(dvc(repo, "repro", "fetch").stdout) == set()  # the import is locked: nothing moved
    dvc(repo, "update", "data/raw/elsewhere.dvc")
    assert stages_run(dvc(repo, "repro", "fetch").stdout) == {"fetch"}


def test_mrpc_recipe_on_glue_raw_tsv(mrpc_run):
    repo = mrpc_run
    assert json.loads((repo / "data/stats/fetch.json").read_text())["split_rows"] == {
        "train": 96, "validation": 40, "test": 20}
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"validation"}  # GLUE's test.tsv has no labels: predictions only
    names = ["not_equivalent", "equivalent"]
    rows = assert_table_matches_metrics(repo / "metrics/report", "validation", metrics["validation"], names)
    assert {"text", "text_pair"} <= set(rows[0])
    test_rows = read_csv(repo / "metrics/report/predictions_test.csv")
    assert len(test_rows) == 20 and all(r["label"] == "" and r["prediction"] in names for r in test_rows)
    dev = (repo / "samples/mrpc/dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    assert [r["text"] for r in rows] == [line.split("\t")[3] for line in dev]  # quotes kept verbatim
    config = json.loads((repo / "models/export/config.json").read_text())
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]  # a BERT: token_type_ids too
    assert onnx["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and onnx["onnx_max_abs_logit_diff"] < 1e-3


def test_mrpc_data_inside_the_repo_is_a_dependency_and_a_bad_label_is_one_line(mrpc_run, tmp_path):
    # Data inside the repository (samples/mrpc, tracked by git) is a dependency too: an edited row
    # reruns fetch, and the new data reruns what reads it.
    repo = copy_run(mrpc_run, tmp_path / "repo")
    train = repo / "samples/mrpc/train.tsv"
    lines = train.read_text(encoding="utf-8-sig").splitlines()
    fields = lines[1].split("\t")
    fields[0] = "1" if fields[0] == "0" else "0"
    lines[1] = "\t".join(fields)
    train.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    result = dvc(repo, "repro", "fetch")
    assert "Running stage 'fetch'" in result.stdout
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert {"train_tokenizer", "tokenize"} & set(status), status  # the fetched data changed: what reads it would rerun

    # Bad data: a label outside the label set stops fetch with one line, nothing half-written.
    (repo / "data/raw/bad").mkdir()
    (repo / "data/raw/bad/train.tsv").write_text("\ufeffQuality\t#1 String\t#2 String\n1\ta\tb\n0\tc\td\n2\te\tf\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"]["path"] = "data/raw/bad"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: dataset.label_column = 'Quality': split 'train' has 1 label(s) outside the label set "
                      "['not_equivalent', 'equivalent'] (2; first at row 2); fix the data or set dataset.label_names"]
    assert not (repo / "data/filtered").exists()
    assert not [p for p in (repo / "data").iterdir() if ".tmp-" in p.name]


def test_gpt2_classifier_recipe(gpt2_classifier_run, standins):
    repo = gpt2_classifier_run
    tokenizer = json.loads((repo / "models/tokenizer/tokenizer_config.json").read_text())
    assert tokenizer["pad_token"] == "[PAD]"  # GPT-2 has none: the recipe adds its own, distinct from EOS
    provenance = json.loads((repo / "models/trained/hub_provenance.json").read_text())
    assert provenance["model"] == {"name_or_path": "models/pretrained/gpt2", "revision": None, "commit": None}
    assert "### Hub sources" in (repo / "models/export/README.md").read_text()
    tok = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert tok["label_names"] == ["neg", "pos"] and len(set(tok["label_tokens"])) == 2
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.8, metrics
    for split in ("validation", "test"):
        assert_table_matches_metrics(repo / "metrics/report", split, metrics[split], ["neg", "pos"])
    # The Trainer's eval (label-token logits via preprocess_logits_for_metrics) and the evaluate
    # stage (logits at label_position) score the same final model identically.
    last = (repo / "dvclive/plots/metrics/eval/accuracy.tsv").read_text().splitlines()[-1].split("\t")
    assert last[0] == "150" and float(last[1]) == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
    config = json.loads((repo / "models/export/config.json").read_text())
    assert config["n_layer"] == 1 and config["n_positions"] == 64  # the stand-in's, loaded pretrained
    # The ONNX check scores the exported causal LM as evaluate does: the label tokens' logits at the
    # label position, on the first validation examples (a whole-vocabulary argmax would be no label)
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]
    rows = read_csv(repo / "metrics/report/predictions_validation.csv")[:onnx["examples"]]
    assert onnx["examples"] >= 16
    assert onnx["pytorch_accuracy"] == pytest.approx(sum(r["label"] == r["prediction"] for r in rows) / len(rows), abs=1e-6)
    assert onnx["onnx_max_abs_logit_diff"] < 1e-3 and onnx["int8_prediction_agreement"] >= 0.8, onnx



# ------------------------------------------------------------------------------------------------
# A multi-process run of a classification recipe (gpt2-classifier, tiny, from scratch) whose launcher
# is killed. (Killed-and-resumed runs to identical results: under real dvc in tests/test_train_e2e.py
# for both backends; for the classifiers, with per-epoch evaluation and the best model kept, in
# tests/train/test_accelerate_loop.py and tests/train/test_classifier_training.py.)

RESUME_TRAIN = {"max_steps": -1, "epochs": 6, "save_steps": 5, "eval_steps": 10, "logging_steps": 5,
                "batch_size": 16, "threads": 1, "group_by_length": True}  # 140 examples: 9 steps an epoch


@pytest.fixture(scope="module")
def gpt2_scratch(tmp_path_factory) -> Path:
    import copy

    overrides = copy.deepcopy(GPT2_SCRATCH)
    overrides["train"].update(RESUME_TRAIN)
    overrides["model"]["dropout"] = 0.1  # so resuming must also restore the RNG streams exactly
    repo = make_repo_copy(tmp_path_factory.mktemp("clf-resume") / "repo", "gpt2-classifier", overrides)
    dvc(repo, "repro", "tokenize")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data stages")
    return repo


def _kill_after_checkpoint(repo: Path, min_step: int, *cmd: str, group: bool = True) -> dict[int, str]:
    """Start cmd; SIGKILL it (its whole process group, as a crash or an OOM kill of dvc would, or with
    group=False the stage process alone) once a complete checkpoint of step >= min_step exists.
    Returns {pid: command line} of the processes it had started (the killed process's descendants)."""
    import os
    import shutil
    import signal
    import subprocess
    import time

    import psutil

    from tests.e2e import env

    shutil.rmtree(repo / "models" / "trained", ignore_errors=True)  # as dvc does before running the stage
    shutil.rmtree(repo / "dvclive", ignore_errors=True)
    # Output to a file, not a pipe: orphaned workers writing to a pipe whose reader has gone would die
    # of the broken pipe, which would hide whether they stop when their launcher is killed.
    log = repo.parent / "killed-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    descendants: dict[int, str] = {}
    try:
        while not [m for m in (repo / "models" / "checkpoints").glob("run-*/checkpoint-*/hfpipe_checkpoint.json")
                   if int(m.parent.name.split("-")[1]) >= min_step]:
            assert proc.poll() is None, f"finished before checkpoint {min_step}:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no checkpoint {min_step} within 120 s"
            time.sleep(0.01)
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                descendants[child.pid] = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                pass
    finally:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (repo / "models" / "trained").exists()  # it did not get to the end
    return descendants


def _resumed_step(output: str) -> int:
    import re

    found = re.findall(r"^resumed from models/checkpoints/run-\w+/checkpoint-(\d+) at step (\d+)", output, re.M)
    assert len(found) == 1, output[-3000:]
    assert found[0][0] == found[0][1]
    return int(found[0][0])


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_classifier_with_two_processes_survives_a_killed_launcher_and_completes(gpt2_scratch, tmp_path):
    """train.num_processes: 2 (torchrun, gloo, Trainer DDP): a SIGKILL of the stage (torchrun) alone
    takes its workers down; the next `dvc repro` resumes with 2 processes and completes, rank 0
    alone writing checkpoints, dvclive and the model, at the 1-process run's validation loss."""
    import re
    import time

    repo = copy_run(gpt2_scratch, tmp_path / "repo")
    set_train(repo, backend="trainer", num_processes=2, batch_size=8)  # global batch 16, as before
    workers = _kill_after_checkpoint(repo, 5, sys.executable, "-m", "stages.train", group=False)
    # torchrun's two workers, in sessions of their own (so not in the killed process group either)
    assert sum("-m stages.train" in cmdline for cmdline in workers.values()) == 2, workers
    saved = checkpoints(repo)
    deadline = time.time() + 3  # they get SIGTERM at once; orphaned, they would train on for seconds
    while alive := [p for p in workers if _alive(p)]:
        assert time.time() < deadline, f"processes outlived the killed launcher: {alive}"
        time.sleep(0.05)
    time.sleep(0.5)
    assert checkpoints(repo) == saved and not (repo / "models" / "trained").exists()  # nothing trains on

    result = dvc(repo, "repro", "evaluate")
    out = result.stdout
    assert "relaunching as -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train" in out
    _resumed_step(out)  # once: only rank 0 reports
    saved = re.findall(r"^saved checkpoint models/checkpoints/run-\w+/checkpoint-(\d+)$", out, re.M)
    assert saved and len(saved) == len(set(saved))  # one line per checkpoint
    steps = [r[0] for r in _tsv(repo / "dvclive/plots/metrics/loss.tsv")]
    assert steps == sorted(set(steps), key=int)
    assert checkpoints(repo) == [] and (repo / "models/trained/model.safetensors").is_file()
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    print(f"2 processes: validation {metrics['validation']}")
    assert metrics["validation"]["accuracy"] >= 0.8


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

