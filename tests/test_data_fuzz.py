"""Fuzzed datasets (hypothesis): local files a user could hand the fetch stage, with cells of every
type (text, numbers, booleans, nulls, lists, objects, empty), missing and extra columns, empty
splits, in JSON lines and CSV. Each is fetched, or refused in one line (PipelineError): never a
traceback. The classes of bad input are closed at the fetch boundary, not case by case.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")  # tests/requirements-test.txt
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hfpipe.data import classification_splits, fetch_code_corpus  # noqa: E402
from hfpipe.io import PipelineError  # noqa: E402
from hfpipe.params import DatasetParams  # noqa: E402

CELL = st.one_of(st.text(max_size=12), st.sampled_from(["pos", "neg", "import pandas as pd", "", " ", "0", "1"]),
                 st.integers(-2, 3), st.floats(allow_nan=True, allow_infinity=False, width=32), st.booleans(),
                 st.none(), st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from("ab"),
                                                                                     st.integers(0, 2), max_size=1))
COLUMNS = ["text", "label", "other"]
ROW = st.dictionaries(st.sampled_from(COLUMNS), CELL, min_size=0, max_size=3)
SPLIT = st.lists(ROW, min_size=0, max_size=8)


def write_split(folder: Path, split: str, rows: list[dict], kind: str) -> None:
    if kind == "jsonl":
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return
    with open(folder / f"{split}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v for k, v in row.items()})


def one_line_or_ok(call) -> None:
    try:
        call()
    except PipelineError as err:
        assert str(err) and "\n" not in str(err), str(err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=SPLIT, validation=st.one_of(st.none(), SPLIT), kind=st.sampled_from(["jsonl", "csv"]),
       label_names=st.one_of(st.none(), st.just(["neg", "pos"])))
def test_any_classification_dataset_is_fetched_or_refused_in_one_line(tmp_path_factory, train, validation, kind,
                                                                      label_names):
    folder = tmp_path_factory.mktemp("data")
    write_split(folder, "train", train, kind)
    if validation is not None:
        write_split(folder, "validation", validation, kind)
    dp = DatasetParams(source="load_dataset", path=str(folder), text_column="text", label_column="label",
                       label_names=label_names)
    one_line_or_ok(lambda: classification_splits(dp))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=SPLIT, kind=st.sampled_from(["jsonl", "csv"]))
def test_any_code_corpus_is_fetched_or_refused_in_one_line(tmp_path_factory, train, kind):
    folder = tmp_path_factory.mktemp("corpus")
    write_split(folder, "train", train, kind)
    dp = DatasetParams(source="load_dataset", path=str(folder), text_column="text", streaming=False,
                       filter_keywords=["pandas", "pos"], validation_fraction=0.5)
    out = tmp_path_factory.mktemp("out") / "filtered"
    one_line_or_ok(lambda: fetch_code_corpus(dp, out))
