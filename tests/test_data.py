"""hfpipe.data: keyword filter, hash split, dedup, caps, Arrow splits, and the fetch stage's corpus."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from hfpipe.data import (
    any_keyword_in_string,
    code_corpus_summary,
    document_head,
    fetch_code_corpus,
    filter_documents,
    hash_fraction,
    iter_load_dataset_documents,
    load_source,
    looks_local,
    write_document_splits,
)
from hfpipe.io import PipelineError
from hfpipe.params import DatasetParams

KEYWORDS = ["pandas", "sklearn", "matplotlib", "seaborn"]


def new_stats() -> dict:
    # The shape fetch_code_corpus gives filter_documents.
    return {"seen": 0, "kept": 0, "duplicates": 0, "truncated": 0, "too_large": 0, "bytes": 0, "split_documents": Counter(),
            "sources": Counter()}


def run_filter(docs, keywords=KEYWORDS, seed=0, validation_fraction=0.3, max_documents=None, max_bytes=None,
               max_document_bytes=None):
    stats = {**new_stats(), "max_document_bytes": max_document_bytes}
    rows = list(filter_documents(iter(docs), keywords, seed, validation_fraction, max_documents, max_bytes, stats,
                                 max_document_bytes))
    return rows, stats


def doc(text, source="pkg==1.0"):
    return {"content": text, "source": source}


# --- any_keyword_in_string / hash_fraction -------------------------------------------------------

def test_any_keyword_in_string():
    assert any_keyword_in_string("import pandas as pd", KEYWORDS)
    assert any_keyword_in_string("from sklearn.svm import SVC", KEYWORDS)
    assert any_keyword_in_string("import seaborn", ["pandas", "seaborn"])
    assert any_keyword_in_string("xpandasx", ["pandas"])  # a substring match, as in seed 04
    assert not any_keyword_in_string("import numpy as np", KEYWORDS)
    assert not any_keyword_in_string("import Pandas", ["pandas"])  # case-sensitive
    assert not any_keyword_in_string("import pandas", [])


def test_hash_fraction_is_stable_pinned_value():
    # Pinned: changing the hash would silently reshuffle the train/validation split.
    assert hash_fraction("import pandas as pd\n", 0) == 0.5042984653994261
    assert hash_fraction("import pandas as pd\n", 1) == 0.3380958673746516
    assert hash_fraction("import pandas as pd\n", 42) == 0.03187407768629765
    assert hash_fraction("import pandas as pd\n", 0) == hash_fraction("import pandas as pd\n", 0)


def test_hash_fraction_range_and_seed_dependence(synthetic_docs):
    texts = sorted(set(synthetic_docs))
    a = [hash_fraction(t, 0) for t in texts]
    b = [hash_fraction(t, 1) for t in texts]
    assert all(0.0 <= x < 1.0 for x in a + b)
    assert a != b
    assert sum(x != y for x, y in zip(a, b, strict=True)) == len(texts)  # every value changes with the seed
    assert len(set(a)) == len(texts)
    # roughly uniform: a 0.3 fraction of a few hundred documents lands near 30 %
    assert 0.2 < sum(x < 0.3 for x in a) / len(a) < 0.4


def test_hash_fraction_handles_unicode_and_lone_surrogates():
    assert 0 <= hash_fraction("import pandas  # é ✓", 0) < 1
    assert 0 <= hash_fraction("bad \udcff byte", 0) < 1


# --- filter_documents -------------------------------------------------------------------------------

def test_filter_keeps_keyword_documents_and_drops_exact_duplicates():
    docs = [doc("import pandas as pd", "a==1"),   # kept
            doc("import numpy as np", "a==1"),    # no keyword
            doc("import pandas as pd", "b==2"),   # exact duplicate (other source)
            doc("", "a==1"),                      # empty
            doc("from sklearn import svm", "b==2"),
            doc("import pandas as pd ", "c==3"),  # not an exact duplicate
            doc("import seaborn as sns", "a==1")]
    rows, stats = run_filter(docs)
    assert [r["content"] for _, r in rows] == ["import pandas as pd", "from sklearn import svm",
                                             "import pandas as pd ", "import seaborn as sns"]
    assert stats["seen"] == 7
    assert stats["kept"] == 4
    assert stats["duplicates"] == 1
    assert stats["bytes"] == sum(len(r["content"].encode()) for _, r in rows) == 19 + 23 + 20 + 21
    assert stats["sources"] == Counter({"a==1": 2, "b==2": 1, "c==3": 1})
    assert sum(stats["split_documents"].values()) == 4


def test_filter_split_routing_matches_hash_fraction(synthetic_docs):
    docs = [doc(t) for t in dict.fromkeys(synthetic_docs)]  # unique, in order
    rows, stats = run_filter(docs, keywords=["pd", "plt", "fit", "import"], seed=7, validation_fraction=0.3)
    assert len(rows) == stats["kept"] > 100
    for split, row in rows:
        expected = "validation" if hash_fraction(row["content"], 7) < 0.3 else "train"
        assert split == expected
    assert stats["split_documents"] == Counter(split for split, _ in rows)
    assert set(stats["split_documents"]) == {"train", "validation"}
    # the split of a document does not depend on the order the source yields documents in
    reversed_rows, _ = run_filter(list(reversed(docs)), keywords=["pd", "plt", "fit", "import"], seed=7,
                                  validation_fraction=0.3)
    assert dict((r["content"], s) for s, r in rows) == dict((r["content"], s) for s, r in reversed_rows)
    # another seed routes some documents differently
    other, _ = run_filter(docs, keywords=["pd", "plt", "fit", "import"], seed=8, validation_fraction=0.3)
    assert [s for s, _ in other] != [s for s, _ in rows]


def test_filter_max_documents_stops_at_the_cap():
    docs = [doc(f"import pandas as pd  # {i}") for i in range(10)]
    docs.insert(1, doc("no keyword"))
    rows, stats = run_filter(docs, max_documents=3)
    assert [r["content"] for _, r in rows] == [f"import pandas as pd  # {i}" for i in range(3)]
    assert stats["kept"] == 3
    assert stats["seen"] == 4  # stopped right after the third kept document
    assert sum(stats["split_documents"].values()) == 3


def test_filter_max_bytes_caps_total_utf8_bytes():
    ten = [doc(f"pandas {i:03d}") for i in range(5)]  # 10 bytes each
    rows, stats = run_filter(ten, max_bytes=25)
    assert [r["content"] for _, r in rows] == ["pandas 000", "pandas 001"]
    assert stats["bytes"] == 20 and stats["kept"] == 2
    assert stats["seen"] == 3  # the third would exceed the cap: stop there

    # bytes are UTF-8 bytes, not characters: "pandas éé" is 11 bytes, 9 characters
    rows, stats = run_filter([doc("pandas éé"), doc("pandas 01")], max_bytes=20)
    assert stats["bytes"] == 20 and stats["kept"] == 2
    rows, stats = run_filter([doc("pandas éé"), doc("pandas 012")], max_bytes=20)
    assert stats["bytes"] == 11 and stats["kept"] == 1


def test_document_head_keeps_whole_lines_within_the_byte_cap():
    text = "import pandas as pd\nimport numpy as np\n\ndf = pd.DataFrame()\n"
    assert document_head(text, 1000) == text
    assert document_head(text, 45) == "import pandas as pd\nimport numpy as np\n\n"  # 40 bytes: line 4 would cut
    assert document_head(text, 39) == "import pandas as pd\nimport numpy as np\n"
    assert document_head(text, 38) == "import pandas as pd\n"
    assert document_head("x" * 50, 10) == "x" * 10  # one long line: cut mid-line
    assert document_head("é" * 10, 5) == "éé"  # never half a UTF-8 character (2 bytes each)


def test_filter_cuts_train_documents_to_their_head_and_keeps_validation_whole():
    body = "".join(f"x_{i} = pd.Series([{i}])\n" for i in range(40))  # ~900 bytes
    docs = [doc(f"import pandas as pd  # file {i}\n" + body) for i in range(30)]
    whole, whole_stats = run_filter(docs)
    rows, stats = run_filter(docs, max_document_bytes=100)
    # the same files in the same splits: the split reads the whole file
    assert [s for s, _ in rows] == [s for s, _ in whole]
    assert {"train", "validation"} == set(s for s, _ in rows)
    for (split, r), (_, w) in zip(rows, whole, strict=True):
        if split == "train":
            assert w["content"].startswith(r["content"]) and len(r["content"].encode()) <= 100
            assert r["content"].startswith("import pandas as pd  # file") and r["content"].endswith("\n")
        else:
            assert r["content"] == w["content"]
    n_train = stats["split_documents"]["train"]
    assert stats["truncated"] == n_train and whole_stats["truncated"] == 0
    assert stats["bytes"] == sum(len(r["content"].encode()) for _, r in rows) < whole_stats["bytes"]

    assert code_corpus_summary(stats) == (f"kept 30 of 30 documents ({stats['bytes'] / 1e6:.1f} MB; {n_train} train "
                                          f"documents cut to their first 100 bytes): {stats['split_documents']}")
    assert "cut" not in code_corpus_summary(whole_stats)

    # a byte budget spans more (cut) files
    few, _ = run_filter(docs, max_bytes=3000)
    many, _ = run_filter(docs, max_bytes=3000, max_document_bytes=100)
    assert len(many) > 2 * len(few)


def test_filter_max_bytes_skips_a_first_document_larger_than_the_cap():
    docs = [doc("pandas " + "x" * 100), doc("pandas 000"), doc("pandas 001")]
    rows, stats = run_filter(docs, max_bytes=25)
    assert [r["content"] for _, r in rows] == ["pandas 000", "pandas 001"]
    assert stats["bytes"] == 20 and stats["seen"] == 3


# --- write_document_splits ---------------------------------------------------------------------------

def test_write_document_splits_round_trip(tmp_path):
    from datasets import load_from_disk

    # more rows than one Arrow write batch (256), so buffered flushing is exercised
    rows = [("train" if i % 3 else "validation", {"content": f"pandas {i}", "source": f"s{i % 4}", "extra": i})
            for i in range(700)]
    out = tmp_path / "filtered"
    counts = write_document_splits(iter(rows), out, ["content", "source"])
    assert counts == {"train": 466, "validation": 234}
    dd = load_from_disk(str(out))
    assert sorted(dd) == ["train", "validation"]
    for split in dd:
        assert dd[split].column_names == ["content", "source"]
        expected = [r for s, r in rows if s == split]
        assert list(dd[split]["content"]) == [r["content"] for r in expected]
        assert list(dd[split]["source"]) == [r["source"] for r in expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filtered"]  # scratch folder removed


# --- sources -------------------------------------------------------------------------------------------

def test_looks_local():
    assert not looks_local("nyu-mll/glue")
    assert not looks_local("imdb")
    for path in ["./data", "/abs/path", "~/x", "data.csv", "docs.jsonl", "not a hub id"]:
        assert looks_local(path), path


def test_load_source_missing_local_path_names_dataset_path(tmp_path):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(PipelineError) as info:
        load_source(DatasetParams(source="load_dataset", path=str(missing)), streaming=True)
    assert str(info.value).startswith(f"dataset.path = {str(missing)!r}: no such file or folder")


def test_load_source_unsupported_file_type(tmp_path):
    path = tmp_path / "docs.xyz"
    path.write_text("pandas")
    with pytest.raises(PipelineError, match=r"dataset.path = .*unsupported file type '\.xyz'"):
        load_source(DatasetParams(source="load_dataset", path=str(path)), streaming=True)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_iter_load_dataset_documents_from_a_split_folder(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"content": f"pandas {i}", "path": f"f{i}.py"} for i in range(3)])
    write_jsonl(folder / "validation.jsonl", [{"content": "sklearn 0", "path": "v.py"}])
    docs = list(iter_load_dataset_documents(DatasetParams(source="load_dataset", path=str(folder))))
    assert docs == [{"content": "pandas 0", "source": "train"}, {"content": "pandas 1", "source": "train"},
                    {"content": "pandas 2", "source": "train"}, {"content": "sklearn 0", "source": "validation"}]


def test_iter_load_dataset_documents_missing_text_column(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "pandas"}])
    with pytest.raises(PipelineError, match=r"^dataset.text_column = 'content': no such column in split 'train'; "
                                            r"columns are \['text'\]$"):
        list(iter_load_dataset_documents(DatasetParams(source="load_dataset", path=str(path))))


def test_iter_load_dataset_documents_skips_or_keeps_rows_with_empty_text(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("content,label\nimport pandas,1\n,2\nimport seaborn,3\n")
    docs = list(iter_load_dataset_documents(DatasetParams(source="load_dataset", path=str(path))))
    assert [d["content"] for d in docs if d["content"]] == ["import pandas", "import seaborn"]


# --- fetch_code_corpus ----------------------------------------------------------------------------

def test_fetch_installed_packages_keeps_max_documents(tmp_path):
    from datasets import load_from_disk

    dp = DatasetParams(max_documents=20, validation_fraction=0.3, seed=0, max_bytes=None, max_document_bytes=None)
    out = tmp_path / "filtered"
    stats = fetch_code_corpus(dp, out)
    assert stats["kept"] == 20
    assert stats["seen"] >= 20
    assert stats["fraction_kept"] == round(20 / stats["seen"], 6)
    assert stats["source"] == "installed-packages" and stats["filter_keywords"] == KEYWORDS
    assert sum(stats["split_documents"].values()) == 20
    assert set(stats["split_documents"]) == {"train", "validation"}
    assert sum(stats["documents_by_source"].values()) == 20
    assert all(re.fullmatch(r"[^=\s]+==\S+", s) for s in stats["documents_by_source"])
    assert not any(s.lower().startswith("hfpipe==") for s in stats["documents_by_source"])
    assert "sources" not in stats
    json.dumps(stats)  # the stage writes it as JSON

    dd = load_from_disk(str(out))
    assert {s: len(dd[s]) for s in dd} == stats["split_documents"]
    total_bytes = 0
    for split in dd:
        for text in list(dd[split]["content"]):
            assert any_keyword_in_string(text, KEYWORDS)
            assert ("validation" if hash_fraction(text, 0) < 0.3 else "train") == split
            total_bytes += len(text.encode("utf-8", "surrogatepass"))
    assert total_bytes == stats["bytes"]
    assert len(set(list(dd["train"]["content"]) + list(dd["validation"]["content"]))) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filtered"]


def test_fetch_keyword_matching_nothing_is_a_pipeline_error(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"content": f"x = {i}"} for i in range(10)])
    dp = DatasetParams(source="load_dataset", path=str(path), filter_keywords=["zzqq"])
    with pytest.raises(PipelineError) as info:
        fetch_code_corpus(dp, tmp_path / "out")
    assert str(info.value).startswith("dataset.filter_keywords = ['zzqq']: kept 0 of 10 documents")


def test_fetch_from_local_file(tmp_path):
    from datasets import load_from_disk

    texts = [f"import pandas as pd\nx = {i}" for i in range(30)] + ["import numpy"] + ["import pandas as pd\nx = 0"]
    path = write_jsonl(tmp_path / "docs.jsonl", [{"content": t} for t in texts])
    dp = DatasetParams(source="load_dataset", path=str(path), validation_fraction=0.3)
    stats = fetch_code_corpus(dp, tmp_path / "out")
    assert (stats["seen"], stats["kept"], stats["duplicates"]) == (32, 30, 1)
    dd = load_from_disk(str(tmp_path / "out"))
    expected_val = [t for t in texts[:30] if hash_fraction(t, 0) < 0.3]
    assert list(dd["validation"]["content"]) == expected_val
    assert list(dd["train"]["content"]) == [t for t in texts[:30] if t not in expected_val]
    assert stats["documents_by_source"] == {"train": 30}


def test_fetch_empty_validation_split_is_a_pipeline_error(tmp_path):
    # one document: it lands in train (hash >= fraction), validation is empty
    text = "import pandas as pd"
    assert hash_fraction(text, 0) >= 0.05
    path = write_jsonl(tmp_path / "docs.jsonl", [{"content": text}])
    dp = DatasetParams(source="load_dataset", path=str(path))
    with pytest.raises(PipelineError, match=r"^the validation split is empty \(1 documents kept\)"):
        fetch_code_corpus(dp, tmp_path / "out")


# --- Hub-scale path: a streamed Hub dataset, offline ------------------------------------------------

HUB_ID = "transformersbook/codeparrot-train"


def hub_like_stream(monkeypatch, texts: list[str]) -> dict:
    """Make datasets.load_dataset return a streamed IterableDatasetDict over `texts` (codeparrot's
    columns), built from a local generator, as the Hub would for HUB_ID with streaming=True.
    Returns a record of the calls and of how many rows the generator has yielded."""
    import datasets

    record: dict = {"calls": [], "pulled": 0}

    def rows():
        for i, text in enumerate(texts):
            record["pulled"] += 1
            yield {"repo_name": f"user/repo{i % 7}", "path": f"src/file_{i}.py", "content": text,
                   "license": "mit", "size": str(len(text))}

    def fake_load_dataset(path, name=None, *, streaming=False, **kwargs):
        record["calls"].append({"path": path, "name": name, "streaming": streaming, **kwargs})
        if path != HUB_ID or not streaming:
            raise AssertionError(f"unexpected load_dataset({path!r}, streaming={streaming})")
        return datasets.IterableDatasetDict({"train": datasets.IterableDataset.from_generator(rows)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return record


def hub_texts() -> list[str]:
    texts = []
    for i in range(600):
        if i % 3 == 0:
            texts.append(f"import numpy as np\nx{i} = np.zeros({i})\n")           # no keyword
        elif i % 10 == 1:
            texts.append("import pandas as pd\ndf = pd.read_csv('a.csv')\n")     # the same file again and again
        else:
            texts.append(f"import pandas as pd\nfrom sklearn.svm import SVC\nmodel_{i} = SVC(C={i})\n"
                         + "# pad\n" * (i % 9))
    return texts


def test_fetch_streams_a_hub_dataset_filters_dedupes_splits_and_shards(monkeypatch, tmp_path, capsys):
    from datasets import load_from_disk

    texts = hub_texts()
    record = hub_like_stream(monkeypatch, texts)
    dp = DatasetParams(source="load_dataset", path=HUB_ID, streaming=True, validation_fraction=0.2,
                       max_shard_size="3KB")
    out = tmp_path / "filtered"
    stats = fetch_code_corpus(dp, out)

    assert record["calls"] == [{"path": HUB_ID, "name": None, "streaming": True}]
    assert record["pulled"] == len(texts) == stats["seen"] == 600
    keyword = [t for t in texts if any_keyword_in_string(t, KEYWORDS)]
    unique = list(dict.fromkeys(keyword))
    assert stats["kept"] == len(unique) == 361  # 200 without a keyword, 40 copies of one file
    assert stats["duplicates"] == len(keyword) - len(unique) == 39
    assert stats["bytes"] == sum(len(t.encode()) for t in unique)
    assert stats["documents_by_source"] == {"train": len(unique)}  # Hub stats count by split, not by repo
    expected = {"train": [t for t in unique if hash_fraction(t, 0) >= 0.2],
                "validation": [t for t in unique if hash_fraction(t, 0) < 0.2]}
    assert stats["split_documents"] == {s: len(v) for s, v in expected.items()}
    dd = load_from_disk(str(out))
    for split, want in expected.items():
        assert dd[split]["content"][:] == want  # stream order kept within each split
        shards = sorted(p.name for p in (out / split).glob("*.arrow"))
        assert len(shards) >= (3 if split == "train" else 2), shards  # 3KB shards: sharded
        assert shards == [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    # the progress bar reports documents seen and kept
    err = capsys.readouterr().err
    assert "fetch/filter" in err and "600 docs" in err and f"kept={stats['kept']}, duplicates=39" in err


def test_fetch_streaming_stops_pulling_at_max_documents(monkeypatch, tmp_path):
    texts = hub_texts() * 1000  # 600,000 rows: only the first few may be read
    record = hub_like_stream(monkeypatch, texts)
    dp = DatasetParams(source="load_dataset", path=HUB_ID, validation_fraction=0.3, max_documents=25)
    stats = fetch_code_corpus(dp, tmp_path / "out")
    assert stats["kept"] == 25
    assert record["pulled"] == stats["seen"] < 50  # stopped right after the 25th kept document

    record = hub_like_stream(monkeypatch, texts)
    dp = DatasetParams(source="load_dataset", path=HUB_ID, validation_fraction=0.3, max_bytes=2000)
    stats = fetch_code_corpus(dp, tmp_path / "out2")
    assert 0 < stats["bytes"] <= 2000
    assert record["pulled"] == stats["seen"] < 100


def test_write_document_splits_tiny_shards_keep_order(tmp_path):
    from datasets import load_from_disk

    rows = [("train" if i % 4 else "validation", {"content": f"import pandas  # {i}" + "x" * (i % 40), "source": "s"})
            for i in range(3000)]
    out = tmp_path / "filtered"
    counts = write_document_splits(iter(rows), out, ["content", "source"], max_shard_size=5000)
    assert counts == {"train": 2250, "validation": 750}
    dd = load_from_disk(str(out))
    for split in ("train", "validation"):
        assert dd[split]["content"][:] == [r["content"] for s, r in rows if s == split]
        assert len(list((out / split).glob("data-*.arrow"))) > 5
    assert sorted(p.name for p in out.iterdir()) == ["dataset_dict.json", "train", "validation"]


def test_max_shard_size_param_is_checked():
    from hfpipe.params import parse_params

    assert DatasetParams().max_shard_size == "500MB"
    assert parse_params({"dataset": {"max_shard_size": 1000}}).dataset.max_shard_size == 1000
    with pytest.raises(PipelineError) as info:
        parse_params({"dataset": {"max_shard_size": "5 parsecs"}})
    assert str(info.value) == ("params.yaml: dataset.max_shard_size = '5 parsecs': must be a positive number of "
                               "bytes or a size such as 500MB, 1GB or 64MiB")


@pytest.mark.parametrize("content", [b'{"content": "import pandas"}\n{"content": bad json\n',
                                     b'{"content": "import pandas"}\n{"content": "caf\xe9"}\n',
                                     b'\xff\xfe{"content": "x"}\n'])
def test_a_streamed_jsonl_that_will_not_parse_is_one_line(tmp_path, content):
    # the stream reads the file only while fetch iterates it: that read must fail as one line too
    (tmp_path / "corpus.jsonl").write_bytes(content)
    dp = DatasetParams(source="load_dataset", path=str(tmp_path / "corpus.jsonl"), streaming=True)
    with pytest.raises(PipelineError) as info:
        list(iter_load_dataset_documents(dp))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"dataset.path = '{tmp_path / 'corpus.jsonl'}': split 'train' could not be read (")
    assert message.endswith("save the file as UTF-8 text in its format (JSON lines: one JSON object per line)")


def test_the_installed_packages_corpus_is_what_the_lock_pins(tmp_path, monkeypatch):
    from hfpipe.data import installed_python_files, iter_installed_package_documents
    from tests.e2e import fake_distribution

    site = tmp_path / "site"
    fake_distribution(site, "fakepkg", "2.0", {"fakepkg/__init__.py": "import pandas as pd\n"})
    monkeypatch.syspath_prepend(str(site))
    lock = tmp_path / "requirements.txt"
    lock.write_text("no-such-package==1.0\n")  # a lock that pins other packages only
    assert not any(name == "fakepkg" for name, *_ in installed_python_files(0, lock))  # not pinned: not read
    lock.write_text("fakepkg==2.0\n")
    assert [p.name for name, _, p, _ in installed_python_files(0, lock)] == ["__init__.py"]
    assert [d["source"] for d in iter_installed_package_documents(0, lock)] == ["fakepkg==2.0"]
    # another build of the pinned release (a CUDA torch 2.13.0 where the CPU lock pins 2.13.0+cpu)
    lock.write_text("fakepkg==2.0+cpu\n")
    assert [d["source"] for d in iter_installed_package_documents(0, lock)] == ["fakepkg==2.0"]
    lock.write_text("fakepkg==2.0\n")
    (site / "fakepkg/__init__.py").write_text("import pandas as pd  # edited in place\n")
    with pytest.raises(PipelineError, match=r"__init__.py: differs from what fakepkg==2.0 installed .*"
                                            r"pip install --force-reinstall fakepkg==2.0$"):
        list(iter_installed_package_documents(0, lock))
    lock.write_text(lock.read_text().replace("fakepkg==2.0", "fakepkg==3.0"))
    with pytest.raises(PipelineError, match=r"^fakepkg 2.0 is installed but .*requirements.txt pins 3.0"):
        installed_python_files(0, lock)


@pytest.mark.parametrize("kind", ["fifo", "device link"])
def test_a_fifo_or_a_device_under_a_local_dataset_is_refused_not_read(tmp_path, kind):
    import os

    from hfpipe.data import load_source

    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\na,0\n")
    if kind == "fifo":
        os.mkfifo(folder / "validation.csv")  # a read would block for ever
    else:
        (folder / "validation.csv").symlink_to("/dev/zero")  # a read would never end
    dp = DatasetParams(source="load_dataset", path=str(folder), text_column="text")
    with pytest.raises(PipelineError, match=rf"^dataset.path = '{folder}': {folder / 'validation.csv'} is not a "
                                            r"regular file \(a FIFO, socket or device\); remove it"):
        load_source(dp, streaming=False)


def test_a_document_too_large_for_any_split_is_skipped_and_counted(monkeypatch):
    """max_document_bytes cuts train documents; a huge one (validation too) is skipped whole."""
    import hfpipe.data

    monkeypatch.setattr(hfpipe.data, "MAX_DOCUMENT_CHARS", 1000)
    docs = [doc("import pandas\n" + "x = 1\n" * 400), doc("import pandas as pd\npd.read_csv('a')")]
    rows, stats = run_filter(docs, validation_fraction=0.999)  # both would go to validation
    assert stats["too_large"] == 1 and [r[1]["content"] for r in rows] == [docs[1]["content"]]
    assert "1 documents over 1,000 characters skipped" in code_corpus_summary({**stats, "split_documents": {}})


def test_a_code_corpus_whose_text_column_holds_numbers_is_one_line(tmp_path):
    """Found by tests/test_data_fuzz.py: a CSV column of numbers ended in a TypeError traceback."""
    from hfpipe.data import fetch_code_corpus

    (tmp_path / "train.csv").write_text("text\n1\n2\n")
    dp = DatasetParams(source="load_dataset", path=str(tmp_path), text_column="text", streaming=False)
    with pytest.raises(PipelineError, match=r"^dataset.text_column = 'text': split 'train' holds int values, not "
                                            r"text \('1' in row 0\); name the column that holds the text$"):
        fetch_code_corpus(dp, tmp_path / "out")
