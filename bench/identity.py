"""What a refactor must not change: the outputs of tiny runs of every recipe on both backends.

Runs the tests' tiny configs (tests/e2e.py) of the default recipe and the three classification
recipes, each with `train.backend: trainer` and `accelerate`, under real `dvc repro` in temporary
copies of the repo, and writes a fingerprint of what each produced: the sha256 of the trained
weights, of every metrics file and of every dvclive file (the wall-clock entries left out: runtime,
samples/steps per second). Run it before and after a change, then compare:

    python bench/identity.py -o /tmp/before.json      # on the old code
    python bench/identity.py -o /tmp/after.json       # on the new code
    python bench/identity.py --compare /tmp/before.json /tmp/after.json

Same machine, same environment: the bf16 kernels differ between CPUs, so compare on one machine.
--standins DIR builds the stand-in models there once and reuses them (they are deterministic:
two builds gave the same bytes; reusing them saves the build and keeps the inputs the same).
Takes about 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WALL_CLOCK = ("runtime", "samples_per_second", "steps_per_second", "total_flos")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def dvclive_fingerprint(live: Path) -> dict[str, str]:
    out = {}
    for path in sorted(live.rglob("*")):
        if not path.is_file() or any(w in path.name for w in WALL_CLOCK):
            continue
        if path.name == "metrics.json":  # the summary: drop its wall-clock keys
            summary = json.loads(path.read_text())

            def clean(d):
                return {k: clean(v) if isinstance(v, dict) else v for k, v in d.items()
                        if not any(w in k for w in WALL_CLOCK)}
            out[str(path.relative_to(live))] = hashlib.sha256(json.dumps(clean(summary), sort_keys=True).encode()).hexdigest()[:16]
        else:
            out[str(path.relative_to(live))] = sha(path)
    return out


def runs(standins: dict[str, Path]) -> dict[str, tuple[str, dict, dict[str, Path]]]:
    """name/backend -> (params source, overrides, local folders to put in the copy), as tests/conftest.py
    runs them: local data and models under data/raw/ and models/pretrained/, where dvc.yaml watches.
    The params source is the committed params.yaml for the default recipe, the rendered recipe
    (tests.e2e.make_repo_copy renders it as `hfpipe recipe NAME` does) for the others."""
    from tests.e2e import MRPC, TINY, gpt2_overrides, sentiment_overrides

    recipes = {"code-lm": ("params.yaml", TINY, {}),
               "sentiment": ("sentiment",
                             sentiment_overrides("data/raw/mydata", "models/pretrained/distilbert"),
                             {"data/raw/mydata": standins["sentiment-data"],
                              "models/pretrained/distilbert": standins["distilbert"]}),
               "mrpc": ("mrpc", MRPC, {}),
               "gpt2-classifier": ("gpt2-classifier", gpt2_overrides("models/pretrained/gpt2"),
                                   {"models/pretrained/gpt2": standins["gpt2"]})}
    out = {}
    for name, (recipe, overrides, local) in recipes.items():
        for backend in ("trainer", "accelerate"):
            o = json.loads(json.dumps(overrides, default=str))
            o.setdefault("train", {})["backend"] = backend
            out[f"{name}/{backend}"] = (recipe, o, local)
    return out


def standin_models(folder: Path) -> dict[str, Path]:
    """The tests' local stand-ins for distilbert-base-uncased and gpt2 (and the sentiment samples),
    built into `folder` once."""
    import shutil

    from tests.e2e import gpt2_standin_texts, save_distilbert_standin, save_gpt2_standin

    # the sentiment recipe's local data folder too: its path is a param the Accelerate backend logs
    paths = {"distilbert": folder / "distilbert", "gpt2": folder / "gpt2", "sentiment-data": folder / "sentiment-data"}
    if not paths["sentiment-data"].is_dir():
        shutil.copytree(ROOT / "samples/sentiment", paths["sentiment-data"])
    if not paths["distilbert"].is_dir():
        save_distilbert_standin(paths["distilbert"])
    if not paths["gpt2"].is_dir():
        save_gpt2_standin(paths["gpt2"], gpt2_standin_texts())
    return paths


def fingerprint_all(standins_dir: Path | None = None, only: str | None = None) -> dict:
    from tests.e2e import dvc, make_repo_copy

    result = {}
    with tempfile.TemporaryDirectory(prefix="hfpipe-identity-") as tmp:
        tmp = Path(tmp)
        standins = standin_models(standins_dir or tmp / "standins")
        for name, (recipe, overrides, local) in runs(standins).items():
            if only and not name.startswith(only):
                continue
            repo = make_repo_copy(tmp / name.replace("/", "-"), recipe, overrides, local)
            dvc(repo, "repro")
            result[name] = {"weights": sha(repo / "models/trained/model.safetensors"),
                            "metrics": {str(p.relative_to(repo)): sha(p) for p in sorted((repo / "metrics").rglob("*"))
                                        if p.is_file()},
                            "dvclive": dvclive_fingerprint(repo / "dvclive"),
                            "export": {str(p.relative_to(repo)): sha(p) for p in sorted((repo / "models/export").rglob("*"))
                                       if p.is_file()}}
            print(f"{name}: weights {result[name]['weights']}", flush=True)
    return result


def compare(before: dict, after: dict) -> list[str]:
    diffs = []
    for run in sorted(set(before) | set(after)):
        b, a = before.get(run), after.get(run)
        if b is None or a is None:
            diffs.append(f"{run}: only in {'after' if b is None else 'before'}")
            continue
        for key in ("weights",):
            if b[key] != a[key]:
                diffs.append(f"{run}: {key} differ")
        for group in ("metrics", "dvclive", "export"):
            for path in sorted(set(b.get(group, {})) | set(a.get(group, {}))):
                if b.get(group, {}).get(path) != a.get(group, {}).get(path):
                    diffs.append(f"{run}: {group} {path} differs")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, help="write the fingerprints here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--standins", type=Path, help="build the stand-in models here once and reuse them")
    parser.add_argument("--only", help="only the runs whose name starts with this (e.g. gpt2-classifier)")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        diffs = compare(before, after)
        files = sum(1 + len(r["metrics"]) + len(r["dvclive"]) for r in before.values())
        print("\n".join(diffs) if diffs else f"identical: {len(before)} runs, {files} files")
        sys.exit(1 if diffs else 0)
    if args.standins:
        args.standins.mkdir(parents=True, exist_ok=True)
    result = fingerprint_all(args.standins, args.only)
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
