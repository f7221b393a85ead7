"""Writes the tiny synthetic datasets in samples/ (run from the repo root: python samples/make_samples.py).

Every sentence is generated from the templates below with a seeded RNG: no copied data.
  samples/mrpc/       GLUE MRPC raw format: train.tsv, dev.tsv (Quality, #1 ID, #2 ID, #1 String,
                      #2 String), test.tsv without labels (index, ...); a UTF-8 byte-order mark and
                      unbalanced double quotes inside sentences, as in GLUE's files.
  samples/sentiment/  train.csv and test.csv (text, label 0/1), no validation split.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEOPLE = ["the committee", "the company", "the mayor", "the team", "the board", "the council", "the agency",
          "the school", "the court", "the bank"]
ACTS = [("approved", "was approved by"), ("rejected", "was rejected by"), ("announced", "was announced by"),
        ("delayed", "was delayed by"), ("funded", "was funded by"), ("cancelled", "was cancelled by")]
THINGS = ["the budget", "the merger", "the new plan", "the bridge project", "the report", "the contract",
          "the proposal", "the festival", "the policy", "the hiring freeze"]
DAYS = ["on Monday", "on Tuesday", "last week", "in March", "on Friday", "this morning"]
GOOD = ["wonderful", "moving", "funny", "brilliant", "charming", "delightful", "gripping", "beautiful"]
BAD = ["dull", "tedious", "clumsy", "boring", "awful", "lifeless", "messy", "forgettable"]
NOUNS = ["film", "story", "cast", "script", "ending", "soundtrack", "plot", "director's work"]


def pair(rng: random.Random, paraphrase: bool) -> tuple[str, str]:
    who, (act, passive), what, day = rng.choice(PEOPLE), rng.choice(ACTS), rng.choice(THINGS), rng.choice(DAYS)
    first = f"{who.capitalize()} {act} {what} {day}."
    if rng.random() < 0.15:
        first = first[:-1] + ' , calling it "historic.'  # an unbalanced quote, as GLUE has
    if paraphrase:
        second = f"{what.capitalize()} {passive} {who} {day}."
    else:  # same shape, different facts
        other_what = rng.choice([t for t in THINGS if t != what])
        other_act = rng.choice([a for a in ACTS if a[0] != act])
        second = f"{other_what.capitalize()} {other_act[1]} {who} {day}."
    return first, second


def review(rng: random.Random, positive: bool) -> str:
    words = GOOD if positive else BAD
    noun, adj, adj2 = rng.choice(NOUNS), rng.choice(words), rng.choice(words)
    templates = ["the {n} is {a} and {b} .", "a {a} {n} , {b} from start to finish .",
                 "i found the {n} {a} , even {b} .", "{a} ! the {n} felt {b} ."]
    return rng.choice(templates).format(n=noun, a=adj, b=adj2)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as f:  # utf-8-sig: a BOM, as GLUE's files
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, quotechar=None,
                            lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(20240601)
    mrpc = HERE / "mrpc"
    mrpc.mkdir(exist_ok=True)
    ids = iter(range(100000, 999999, 7))
    for name, n in [("train", 120), ("dev", 40)]:
        rows = []
        for _ in range(n):
            label = int(rng.random() < 0.6)  # MRPC is ~2/3 paraphrases
            a, b = pair(rng, bool(label))
            rows.append([label, next(ids), next(ids), a, b])
        write_tsv(mrpc / f"{name}.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], rows)
    rows = [[i, next(ids), next(ids), *pair(rng, rng.random() < 0.6)] for i in range(20)]
    write_tsv(mrpc / "test.tsv", ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], rows)

    sentiment = HERE / "sentiment"
    sentiment.mkdir(exist_ok=True)
    for name, n in [("train", 200), ("test", 60)]:
        with (sentiment / f"{name}.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            for _ in range(n):
                label = rng.randrange(2)
                writer.writerow([review(rng, bool(label)), label])


if __name__ == "__main__":
    main()
