"""Benchmark (not a test): which default code model learns most in the default's train-stage time.

Each point is a set of params overrides of params.yaml (the default recipe). For each one, in a
clone of this repository (HEAD, so the working tree may change meanwhile; its own DVC cache):
  1. `dvc repro tokenize` with the point's params (the tokenizer and blocks it trains on);
  2. a probe: the train stage's own Trainer (same params, compile, precision, threads) for
     --probe-steps steps, timed from step --skip on (after the compile): its steps/s;
  3. the train stage (forced: trained in this run, never restored) and `dvc repro evaluate`, with train.max_steps = the default's max_steps x (the point's steps/s /
     the default's steps/s): every point trains for the default's wall time, measured in this run;
  4. metrics/eval.json: validation loss per token, per byte of text (comparable across
     vocabularies), perplexity, idiom accuracy; the train stage's runtime;
  5. the trained model's bits per byte on the baseline's validation documents (one fixed text for
     every point, for points that change the data) and the idioms it gets wrong.
Prints a table and writes bench/default_sweep_results.json and bench/default_sweep.svg (validation
bits per byte against the train stage's seconds, one point each; --out names both).

    python bench/default_sweep.py                      # every point (about 5 minutes each)
    python bench/default_sweep.py --only lr2e-3,vocab2048-lr2e-3 --out bench/default_sweep2_results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> params overrides (dotted keys). The first is the default as it is.
POINTS: dict[str, dict] = {
    "baseline": {},
    "vocab4096": {"tokenizer.vocab_size": 4096},
    "vocab2048": {"tokenizer.vocab_size": 2048},
    "vocab4096-lr2e-3": {"tokenizer.vocab_size": 4096, "lr": 0.002},
    "vocab4096-batch32": {"tokenizer.vocab_size": 4096, "train.batch_size": 32},
    "vocab4096-4x192": {"tokenizer.vocab_size": 4096, "model.n_layer": 4, "model.n_embd": 192},
    "vocab4096-ctx64-batch32": {"tokenizer.vocab_size": 4096, "tokenize.context_length": 64, "train.batch_size": 32},
    # the second round, around the first round's best (the lr mattered most)
    "lr2e-3": {"lr": 0.002},
    "vocab4096-lr1.5e-3": {"tokenizer.vocab_size": 4096, "lr": 0.0015},
    "vocab2048-lr2e-3": {"tokenizer.vocab_size": 2048, "lr": 0.002},
    "vocab2048-lr1.5e-3": {"tokenizer.vocab_size": 2048, "lr": 0.0015},
    "vocab4096-ctx64-batch32-lr2e-3": {"tokenizer.vocab_size": 4096, "tokenize.context_length": 64,
                                       "train.batch_size": 32, "lr": 0.002},
    "vocab2048-ctx64-batch32-lr2e-3": {"tokenizer.vocab_size": 2048, "tokenize.context_length": 64,
                                       "train.batch_size": 32, "lr": 0.002},
    # with the new default as the baseline: the same steps in fp32 (does the result hinge on bf16 kernels?)
    "fp32": {"train.mixed_precision": "no", "train.max_steps": 2300},
    # the data: train files cut to their head, so the byte budget spans more files (each with its
    # imports). The model's shape and so its step time are the baseline's: each trains the
    # baseline's steps (the probe's steps/s, noisy here, would hand them 8-23% more). They change
    # the validation text too: compare them by reference_bits_per_byte.
    **{f"doc{n // 1000}k": {"dataset.max_document_bytes": n, "dataset.max_documents": None, "train.max_steps": 2300}
       for n in (8000, 4000, 3000, 2000)},
    # round 4, with the data-science stack in the corpus (requirements.in: matplotlib, seaborn,
    # statsmodels, dask), whose matching files outgrow the 12 MB budget: every matching file, cut to
    # its head, at the baseline's steps
    **{f"stack-all-doc{n // 1000}k": {"dataset.max_document_bytes": n, "dataset.max_documents": None,
                                      "dataset.max_bytes": None, "train.max_steps": 2300}
       for n in (4000, 3000, 2000)},
}


def set_dotted(params: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for part in path:
        params = params.setdefault(part, {})
    params[last] = value


def write_params(repo: Path, base: dict, overrides: dict) -> None:
    import copy

    import yaml

    params = copy.deepcopy(base)
    for key, value in overrides.items():
        set_dotted(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(repo: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed in {repo}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def probe(steps: int, skip: int) -> None:
    """Run in the repo copy (cwd): the train stage's Trainer for `steps` steps on data/tokenized;
    prints {"steps_per_second": ...} timed from step `skip` to the end."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TrainerCallback

    from hfpipe.io import read_json
    from hfpipe.params import load_params
    from hfpipe.tasks import TASKS
    from hfpipe.train.common import RunFiles, use_deterministic_algorithms
    from hfpipe.train.trainer import train_with_trainer

    params = load_params()
    params = params.model_copy(update={"train": params.train.model_copy(update={
        "max_steps": steps, "eval_steps": 10 * steps, "save_steps": 10 * steps, "logging_steps": steps})})
    use_deterministic_algorithms(params.train.deterministic)
    task = TASKS[params.task]
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    data = load_from_disk("data/tokenized")
    length = task.sequence_length(read_json("data/stats/tokenize.json"))
    model = task.build_model(params.model, tokenizer, data["train"], length, params.seed)
    setup = task.training_setup(params, tokenizer, data["train"], data["validation"])
    times: dict[int, float] = {}

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as work:
        train_with_trainer(params, model, tokenizer, setup, RunFiles(Path(work) / "out", Path(work) / "live"),
                           callbacks=(StepTimes(),))
    print(json.dumps({"steps_per_second": (steps - skip) / (times[steps] - times[skip])}))


def score_reference(texts_file: Path) -> None:
    """Run in the repo copy (cwd): the trained model's bits per byte on the texts in `texts_file`
    (the baseline's validation documents, the same text for every point) and its idiom results;
    prints them as JSON."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfpipe.evaluate import causal_lm_metrics, idiom_results
    from hfpipe.params import load_params
    from hfpipe.tokenize import ChunkStats, pack_into_blocks

    params = load_params()
    texts = json.loads(texts_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    model = AutoModelForCausalLM.from_pretrained("models/trained")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stats = ChunkStats()
    blocks = list(pack_into_blocks([ids], tokenizer.eos_token_id, params.tokenize.context_length, stats))
    data = Dataset.from_dict({"input_ids": [row.tolist() for b in blocks for row in b]})
    metrics = causal_lm_metrics(model, data, [], params.evaluate.batch_size)
    bytes_per_token = sum(len(t.encode()) for t in texts) / stats.tokens
    idioms = idiom_results(model, tokenizer)
    print(json.dumps({"reference_bits_per_byte": round(metrics["loss"] / bytes_per_token / math.log(2), 4),
                      "reference_tokens": metrics["tokens"],
                      "idioms_wrong": [r["prompt"] for r in idioms if not r["right"]]}))


def validation_bytes_per_token(repo: Path) -> float:
    """UTF-8 bytes of the validation documents per validation token (to turn loss per token into
    loss per byte, which does not depend on the vocabulary)."""
    from datasets import load_from_disk

    docs = load_from_disk(str(repo / "data" / "filtered"))["validation"]
    n_bytes = sum(len(t.encode()) for t in docs["content"])
    tokens = json.loads((repo / "data" / "stats" / "tokenize.json").read_text())["validation"]["tokens"]
    return n_bytes / tokens


def svg_plot(results: list[dict], path: Path) -> None:
    """Bits per byte (y: on the baseline's validation text when every point has it) against
    train-stage seconds (x), one labelled dot per point."""
    w, h, pad = 640, 400, 60
    xs = [r["train_seconds"] for r in results]
    # points that change the data have their own validation text: then plot the one fixed text's
    key = "reference_bits_per_byte" if all("reference_bits_per_byte" in r for r in results) else "bits_per_byte"
    ys = [r[key] for r in results]
    label = "validation bits per byte" if key == "bits_per_byte" else "bits per byte, baseline's validation text"
    x0, x1 = min(xs) * 0.9, max(xs) * 1.1
    y0, y1 = min(ys) * 0.97, max(ys) * 1.03

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y):
        return h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">train stage seconds (same budget)</text>',
             f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">'
             f'{label} (lower is better)</text>']
    for v in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{pad - 5}" y="{sy(v) + 4}" text-anchor="end">{v:.3f}</text>')
    for v in (x0, (x0 + x1) / 2, x1):
        parts.append(f'<text x="{sx(v)}" y="{h - pad + 15}" text-anchor="middle">{v:.0f}</text>')
    for r in results:
        x, y = sx(r["train_seconds"]), sy(r[key])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f77b4"/>')
        parts.append(f'<text x="{x + 6:.1f}" y="{y - 6:.1f}">{r["point"]} ({r["idioms_right"]}/{r["idioms"]})</text>')
    path.write_text("\n".join(parts + ["</svg>"]) + "\n")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    flags = Path("/proc/cpuinfo").read_text()
    features = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {', '.join(features) or 'no native bf16'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated point names (default: all)")
    ap.add_argument("--probe-steps", type=int, default=60)
    ap.add_argument("--skip", type=int, default=20, help="probe steps left out of the timing (compile, warm-up)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "default_sweep_results.json")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # internal: run in the repo copy
    ap.add_argument("--score-reference", type=Path, help=argparse.SUPPRESS)  # internal: run in the repo copy
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.probe or args.score_reference:
        sys.path.insert(0, os.getcwd())
        return probe(args.probe_steps, args.skip) if args.probe else score_reference(args.score_reference)
    import yaml

    names = args.only.split(",") if args.only else list(POINTS)
    if "baseline" not in names:
        names.insert(0, "baseline")  # the budget is the baseline's measured steps/s
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    default_steps = base["train"]["max_steps"]
    tmp = Path(tempfile.mkdtemp(prefix="sweep-"))
    repo = tmp / "repo"
    run(ROOT, "git", "clone", "-q", str(ROOT), str(repo))
    shutil.copytree(ROOT / ".dvc" / "cache", repo / ".dvc" / "cache")  # the committed run's outputs
    run(repo, "dvc", "checkout", "-q")
    results, baseline_sps = [], None
    for name in names:
        overrides = POINTS[name]
        write_params(repo, base, overrides)
        run(repo, "dvc", "repro", "-q", "tokenize")
        sps = json.loads(run(repo, sys.executable, str(ROOT / "bench" / "default_sweep.py"), "--probe",
                             "--probe-steps", str(args.probe_steps), "--skip", str(args.skip)).splitlines()[-1])[
            "steps_per_second"]
        baseline_sps = baseline_sps or sps
        # a point may fix its steps (say, to match the baseline's whole train-stage time, evaluations
        # included, which the probe's steps/s leave out)
        steps = overrides.get("train.max_steps") or round(default_steps * sps / baseline_sps)
        write_params(repo, base, {**overrides, "train.max_steps": steps})
        t0 = time.perf_counter()
        run(repo, "dvc", "repro", "-q", "-f", "-s", "train")  # trained here, now (not restored from a cache)
        run(repo, "dvc", "repro", "-q", "evaluate")
        wall = time.perf_counter() - t0
        metrics = json.loads((repo / "metrics" / "eval.json").read_text())
        live = json.loads((repo / "dvclive" / "metrics.json").read_text())
        bpt = validation_bytes_per_token(repo)
        reference = tmp / "reference_validation.json"
        if not reference.exists():  # the first point's (the baseline's) validation documents
            from datasets import load_from_disk

            validation = load_from_disk(str(repo / "data" / "filtered"))["validation"]
            reference.write_text(json.dumps(list(validation["content"])))
        scored = json.loads(run(repo, sys.executable, str(ROOT / "bench" / "default_sweep.py"),
                                "--score-reference", str(reference)).splitlines()[-1])
        row = {"point": name, "overrides": overrides, "steps_per_second": round(sps, 3), "max_steps": steps,
               "steps_from": "the point" if "train.max_steps" in overrides else "the probe",
               "train_seconds": round(live["train"]["runtime"], 1), "repro_seconds": round(wall, 1),
               "loss": metrics["loss"], "perplexity": metrics["perplexity"],
               "bits_per_byte": round(metrics["loss"] / bpt / math.log(2), 4), "bytes_per_token": round(bpt, 3),
               "idiom_accuracy": metrics["idiom_accuracy"], "idioms_right": metrics["idioms_right"],
               "idioms": metrics["idioms"], **scored}
        results.append(row)
        print(json.dumps(row), flush=True)
        args.out.write_text(json.dumps({"machine": machine(), "default_max_steps": default_steps,
                                        "points": results}, indent=2) + "\n")
    svg_plot(results, args.out.with_name(args.out.stem.removesuffix("_results") + ".svg"))
    print(f"\n{machine()}; every point trains for the baseline's {default_steps} steps' time")
    print(f"{'point':34} {'steps/s':>8} {'steps':>6} {'train s':>8} {'bits/byte':>9} {'ref b/B':>8} {'ppl':>8} "
          f"{'idioms':>7}")
    for r in results:
        print(f"{r['point']:34} {r['steps_per_second']:8.2f} {r['max_steps']:6d} {r['train_seconds']:8.1f} "
              f"{r['bits_per_byte']:9.4f} {r['reference_bits_per_byte']:8.4f} {r['perplexity']:8.2f} "
              f"{r['idioms_right']:>3}/{r['idioms']}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
