"""Classification data: GLUE raw TSV, split folders, label sets, and bad data as one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfpipe.data import classification_splits, encode_labels, fetch_classification, local_split_files
from hfpipe.io import PipelineError
from hfpipe.params import DatasetParams

GLUE_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
TRAIN_ROWS = [
    (1, 'The board approved the "merger on Monday.', "The merger was approved by the board on Monday."),
    (0, "The court delayed the report.", "The budget was funded by the court."),
    (1, "The team cancelled the festival.", "The festival was cancelled by the team."),
    (0, "The mayor funded the bridge.", 'The policy was rejected by the mayor, calling it "historic.'),
    (1, "The bank announced the plan.", "The plan was announced by the bank."),
    (0, "The agency rejected the budget.", "The contract was approved by the agency."),
]


def write_glue_mrpc(folder: Path, dev_rows=None, test: bool = True) -> Path:
    """A GLUE-MRPC-format folder: BOM, tab-separated, unbalanced quotes, unlabelled test.tsv."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, header: str, rows: list[tuple]) -> None:
        lines = [header] + ["\t".join(str(v) for v in row) + "\n" for row in rows]
        (folder / name).write_text("\ufeff" + "".join(lines), encoding="utf-8")

    write("train.tsv", GLUE_HEADER, [(q, 10 + i, 20 + i, a, b) for i, (q, a, b) in enumerate(TRAIN_ROWS)])
    dev = dev_rows if dev_rows is not None else TRAIN_ROWS[:3]
    write("dev.tsv", GLUE_HEADER, [(q, 30 + i, 40 + i, a, b) for i, (q, a, b) in enumerate(dev)])
    if test:
        write("test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n",
              [(i, 50 + i, 60 + i, a, b) for i, (_, a, b) in enumerate(TRAIN_ROWS[:2])])
    return folder


def mrpc_params(path: Path, **kw) -> DatasetParams:
    return DatasetParams(source="load_dataset", path=str(path), text_column="#1 String", text_pair_column="#2 String",
                         label_column="Quality", label_names=["not_equivalent", "equivalent"], **kw)


def test_glue_raw_tsv_loads_with_bom_and_unbalanced_quotes(tmp_path):
    splits, names, notes = classification_splits(mrpc_params(write_glue_mrpc(tmp_path / "mrpc")))
    assert list(splits) == ["train", "validation", "test"] and notes == {}
    assert names == ["not_equivalent", "equivalent"]
    train = splits["train"]
    assert len(train) == 6  # unbalanced quotes did not swallow the following lines
    assert train[0]["text"] == 'The board approved the "merger on Monday.'
    assert train[3]["text_pair"] == 'The policy was rejected by the mayor, calling it "historic.'
    assert train["label"] == [1, 0, 1, 0, 1, 0]
    assert train.features["label"].names == names
    assert len(splits["validation"]) == 3
    assert splits["test"]["label"] == [-1, -1]  # test.tsv has no Quality column: unlabelled


def test_local_split_files_by_name(tmp_path):
    for name in ["train.csv", "dev.csv", "test.jsonl", "notes.txt.bak", "README.md", "train-extra.csv"]:
        (tmp_path / name).write_text("x\n")
    found = local_split_files(tmp_path)
    assert {k: [p.name for p in v] for k, v in found.items()} == {
        "train": ["train-extra.csv", "train.csv"], "validation": ["dev.csv"], "test": ["test.jsonl"]}


def test_missing_column_names_the_columns_that_exist(tmp_path):
    with pytest.raises(PipelineError) as err:
        classification_splits(DatasetParams(source="load_dataset", path=str(write_glue_mrpc(tmp_path / "m")),
                                            text_column="sentence", label_column="Quality"))
    assert str(err.value) == ("dataset.text_column = 'sentence': no such column in split 'train'; columns are "
                              "['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String']")


def test_missing_label_column_in_validation(tmp_path):
    folder = write_glue_mrpc(tmp_path / "m")
    (folder / "dev.tsv").write_text("#1 String\t#2 String\na\tb\n")
    with pytest.raises(PipelineError, match=r"^dataset.label_column = 'Quality': no such column in split 'validation'"):
        classification_splits(mrpc_params(folder))


def test_label_outside_the_label_set(tmp_path):
    folder = write_glue_mrpc(tmp_path / "m", dev_rows=[(1, "a", "b"), (7, "c", "d"), (0, "e", "f")])
    with pytest.raises(PipelineError) as err:
        classification_splits(mrpc_params(folder))
    assert str(err.value).startswith("dataset.label_column = 'Quality': split 'validation' has 1 label(s) outside "
                                     "the label set ['not_equivalent', 'equivalent'] (7; first at row 1)")


def test_string_labels_outside_given_names(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\nmeh,neutral\n")
    with pytest.raises(PipelineError, match=r"split 'train' has 1 label\(s\) outside the label set \['neg', 'pos'\] "
                                            r"\('neutral'; first at row 2\)"):
        classification_splits(DatasetParams(source="load_dataset", path=str(tmp_path), text_column="text",
                                            label_column="label", label_names=["neg", "pos"]))


def test_empty_split_is_an_error(tmp_path):
    folder = write_glue_mrpc(tmp_path / "m")
    (folder / "dev.tsv").write_text(GLUE_HEADER)
    with pytest.raises(PipelineError, match=r"^dataset.path = '.*': split 'validation' is empty \(0 rows\)$"):
        classification_splits(mrpc_params(folder))


def test_corrupt_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(PipelineError) as err:
        classification_splits(DatasetParams(source="load_dataset", path=str(tmp_path), text_column="text",
                                            label_column="label"))
    assert "could not read train.parquet" in str(err.value) and "\n" not in str(err.value)


def test_no_validation_split_uses_seeded_train_test_split(tmp_path):
    rows = "".join(f"review number {i},{i % 2}\n" for i in range(50))
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    dp = DatasetParams(source="load_dataset", path=str(tmp_path), text_column="text", label_column="label",
                       validation_split_fraction=0.3, seed=3)
    splits, names, notes = classification_splits(dp)
    assert names == ["0", "1"]
    assert (len(splits["train"]), len(splits["validation"])) == (35, 15)
    assert "train_test_split(test_size=0.3, seed=3)" in notes["validation_from"]
    assert not set(splits["train"]["text"]) & set(splits["validation"]["text"])
    again, _, _ = classification_splits(dp)
    assert again["validation"]["text"] == splits["validation"]["text"]
    other, _, _ = classification_splits(dp.model_copy(update={"seed": 4}))
    assert other["validation"]["text"] != splits["validation"]["text"]


def test_caps_and_string_labels_sorted(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(f'{{"review": "r{i}", "y": "{"pos" if i % 3 else "neg"}"}}\n'
                                                  for i in range(20)))
    (tmp_path / "validation.jsonl").write_text("".join(f'{{"review": "v{i}", "y": "pos"}}\n' for i in range(9)))
    splits, names, _ = classification_splits(DatasetParams(
        source="load_dataset", path=str(tmp_path), text_column="review", label_column="y",
        max_train_samples=7, max_eval_samples=4))
    assert names == ["neg", "pos"]
    assert splits["train"]["text"] == [f"r{i}" for i in range(7)]
    assert splits["train"]["label"] == [0, 1, 1, 0, 1, 1, 0]
    assert len(splits["validation"]) == 4 and "text_pair" not in splits["train"].column_names


def test_class_label_feature_of_a_saved_dataset(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    DatasetDict({"train": Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 1]}, features=feats),
                 "test": Dataset.from_dict({"sentence": ["d"], "label": [-1]}, features=feats)}
                ).save_to_disk(str(tmp_path / "saved"))
    splits, names, notes = classification_splits(DatasetParams(
        source="load_dataset", path=str(tmp_path / "saved"), text_column="sentence", label_column="label",
        validation_split_fraction=0.34))
    assert names == ["neg", "pos"] and splits["test"]["label"] == [-1]
    assert len(splits["validation"]) == 2 and "validation_from" in notes


def test_encode_labels_mixed_unlabelled_test_is_refused():
    with pytest.raises(PipelineError, match="mixes labelled and unlabelled rows"):
        encode_labels([0, -1, 1], None, ["a", "b"], "test", "label", allow_unlabelled=True)
    assert encode_labels([1, 0], None, ["a", "b"], "train", "label", allow_unlabelled=False) == [1, 0]
    with pytest.raises(PipelineError, match="split 'train' has 1 label"):
        encode_labels([1, None], None, ["a", "b"], "train", "label", allow_unlabelled=False)


def test_fetch_classification_writes_splits_and_stats(tmp_path):
    from datasets import load_from_disk

    stats = fetch_classification(mrpc_params(write_glue_mrpc(tmp_path / "m")), tmp_path / "out")
    assert stats["split_rows"] == {"train": 6, "validation": 3, "test": 2}
    assert stats["label_counts"] == {"train": {"not_equivalent": 3, "equivalent": 3},
                                     "validation": {"not_equivalent": 1, "equivalent": 2}, "test": {"unlabelled": 2}}
    saved = load_from_disk(str(tmp_path / "out"))
    assert saved["train"].features["label"].names == ["not_equivalent", "equivalent"]


# Inputs users really send: each one line naming the file or column, the row, and the fix.

def _csv(tmp_path: Path, body: str) -> DatasetParams:
    (tmp_path / "data.csv").write_text("text,label\n" + body)
    return DatasetParams(source="load_dataset", path=str(tmp_path / "data.csv"), text_column="text", label_column="label")


def _error(dp: DatasetParams) -> str:
    with pytest.raises(PipelineError) as info:
        classification_splits(dp)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_an_empty_label_cell_names_the_row_not_float_labels(tmp_path):
    # pandas reads an empty cell as NaN, so the column became float and the error listed ['0.0', '1.0']
    assert _error(_csv(tmp_path, "a good film,1\nbad,\nfine,0\n")) == (
        "dataset.label_column = 'label': split 'train' has 1 empty label cell(s) (first at row 1); "
        "fill them in or drop those rows")


def test_an_empty_text_cell_is_refused(tmp_path):
    assert _error(_csv(tmp_path, "a good film,1\n,0\nbad,0\n")) == (
        "dataset.text_column = 'text': split 'train' has 1 empty text cell(s) (first at row 1); "
        "fill them in or drop those rows")
    assert "has 1 empty text cell(s) (first at row 2)" in _error(_csv(tmp_path, "a good film,1\nok,0\n   ,1\n"))


def test_a_numeric_text_column_is_refused(tmp_path):
    assert _error(_csv(tmp_path, "1,1\n2,0\n")) == (
        "dataset.text_column = 'text': split 'train' holds int64 values, not text; name the column that holds the text")


def test_a_ragged_csv_row_names_the_line(tmp_path):
    assert _error(_csv(tmp_path, "a good film,1\nbad,0,extra\n")) == (
        f"dataset.path = '{tmp_path / 'data.csv'}': split 'train' could not be read (ParserError: Error tokenizing "
        "data. C error: Expected 2 fields in line 3, saw 3); give every row as many fields as the header (quote "
        "fields that contain the delimiter)")


def test_an_unlabelled_test_split_is_still_accepted(tmp_path):
    folder = write_glue_mrpc(tmp_path / "mrpc")
    splits, _, _ = classification_splits(mrpc_params(folder))
    assert set(splits["test"]["label"]) == {-1}


@pytest.mark.parametrize("label, problem", [
    ("</script><script>alert(1)</script>", "holds <, > or a control character"),
    ("pos\tneg", "holds <, > or a control character"),
    (" pos", "is empty or padded with spaces"),
    ("x" * 101, "is over 100 characters"),
])
def test_a_label_name_the_plots_page_or_model_card_cannot_carry_is_refused_at_fetch(tmp_path, label, problem):
    """Label names reach the plots page's inline <script> and the model card: refused in one line."""
    quoted = '"' + label.replace('"', '""') + '"'
    error = _error(_csv(tmp_path, f"a good film,{quoted}\nbad,neg\nfine,neg\n"))
    assert error.startswith(f"dataset.label_column = 'label': label name {label[:40]!r} {problem}; "), error


def test_label_names_given_in_params_are_checked_too_and_a_text_column_taken_for_labels_is_named(tmp_path):
    dp = _csv(tmp_path, "a good film,0\nbad,1\n").model_copy(update={"label_names": ["neg", "neg"]})
    assert _error(dp).startswith("dataset.label_names: label name 'neg' is a duplicate; ")
    rows = "".join(f"review {i},{i}\n" for i in range(1001))
    assert _error(_csv(tmp_path, rows)).startswith("dataset.label_column = 'label': 1001 distinct labels (at most 1000)")


def test_a_label_column_of_lists_or_a_nested_text_column_is_one_line(tmp_path):
    """Found by tests/test_data_fuzz.py: these ended in a TypeError traceback."""
    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": [1]}\n{"text": "bad", "label": [0]}\n')
    dp = DatasetParams(source="load_dataset", path=str(tmp_path), text_column="text", label_column="label")
    assert _error(dp) == ("dataset.label_column = 'label': split 'train' holds list (nested) values; labels are "
                          "class names (text) or integer ids: name the column that holds them")
    (tmp_path / "train.jsonl").write_text('{"text": {"a": 1}, "label": 1}\n{"text": {"a": 2}, "label": 0}\n')
    assert _error(dp).startswith("dataset.text_column = 'text': split 'train' holds dict (nested) values, not text")
