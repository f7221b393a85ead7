"""hfpipe.compare: reading `dvc exp show --json`, grouping by every param but the seeds, the
statistics (checked against the statistics module, scipy called here, and hand-computed values),
the output formats and the one-line edge cases; and one end-to-end run on real seeded experiments."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy import stats

from hfpipe import compare
from hfpipe.compare import NEEDS_TWO, NO_VARIATION, Run, Selection

# ------------------------------------------------------------------------------------------------
# dvc exp show --json rows, in the shape DVC 3.67 prints them


def _data(rev: str, params: dict, metrics: dict) -> dict:
    return {"rev": rev, "timestamp": None, "deps": {}, "outs": {}, "meta": {},
            "params": {"params.yaml": {"data": params}},
            "metrics": {file: {"data": tree} for file, tree in metrics.items()}}


def exp(name: str, rev: str, params: dict, metrics: dict, state: str | None = None, error: dict | None = None) -> dict:
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {}}
    return {"revs": [{"rev": rev, "name": name, "data": _data(rev, params, metrics), "error": error,
                      "experiments": None}], "executor": executor, "name": name}


def commit(name: str | None, rev: str, params: dict, metrics: dict, experiments: list[dict] | None = None) -> dict:
    return {"rev": rev, "name": name, "data": _data(rev, params, metrics), "error": None, "experiments": experiments}


def workspace(params: dict, metrics: dict) -> dict:
    return {"rev": "workspace", "name": None, "data": _data("workspace", params, metrics), "error": None,
            "experiments": None}


def p(seed: int, lr: float, dataset_seed: int = 0) -> dict:
    return {"seed": seed, "lr": lr, "dataset": {"seed": dataset_seed, "path": "d"}, "train": {"epochs": 1}}


def m(acc: float, loss: float = 1.0) -> dict:
    return {"metrics/eval.json": {"validation": {"accuracy": acc, "loss": loss}}}


def run(name: str, lr: float, seed: int, acc: float | None, head: bool = False, **extra) -> Run:
    metrics = {} if acc is None else {"metrics/eval.json:validation.accuracy": acc}
    return Run(name, name * 5, "main", {"seed": seed, "lr": lr, "dataset.seed": 0, **extra}, metrics, head)


SHOW = [
    workspace(p(2, 5e-5), m(0.83, 0.40)),  # = exp-b5 (the last experiment run in place): not a run of its own
    commit("main", "a" * 40, p(42, 2e-5), m(0.80, 0.50), [
        exp("exp-a1", "b" * 40, p(1, 2e-5), m(0.81, 0.45)),
        exp("exp-b5", "c" * 40, p(2, 5e-5), m(0.83, 0.40)),
        exp("exp-b6", "d" * 40, p(3, 5e-5), m(0.86, 0.35), state="success"),
        exp("exp-q", "e" * 40, p(4, 5e-5), {}, state="queued"),
        exp("exp-r", "f" * 40, p(5, 5e-5), {}, state="running"),
        exp("exp-f", "9" * 40, p(6, 5e-5), m(0.5), state="failed", error={"msg": "Experiment run failed", "type": ""}),
    ]),
]


def test_exp_show_rows_become_runs_with_flat_params_and_metrics_and_unfinished_ones_are_skipped():
    sel = compare.runs_from_exp_show(SHOW)
    assert [r.name for r in sel.runs] == ["main", "exp-a1", "exp-b5", "exp-b6"]  # no workspace duplicate
    head = sel.runs[0]
    assert head.head and not any(r.head for r in sel.runs[1:])
    assert head.params == {"seed": 42, "lr": 2e-5, "dataset.seed": 0, "dataset.path": "d", "train.epochs": 1}
    assert head.metrics == {"metrics/eval.json:validation.accuracy": 0.80, "metrics/eval.json:validation.loss": 0.50}
    assert {r.commit for r in sel.runs} == {"main"}  # every experiment ran HEAD's code
    assert sel.skipped == ["exp-q (queued)", "exp-r (still running)", "exp-f (failed)"]
    assert sel.aliases == {"workspace": "exp-b5"}  # `hfpipe compare workspace ...` still names it


def test_the_workspace_counts_when_its_results_are_its_own_and_non_numbers_are_no_metrics():
    show = [workspace(p(7, 2e-5), {"metrics/eval.json": {"acc": 0.9, "ok": True, "nan": float("nan"), "l": [1]}}),
            commit(None, "a" * 40, p(42, 2e-5), {})]  # HEAD not reproduced: no metrics
    sel = compare.runs_from_exp_show(show)
    assert [(r.name, r.commit, r.metrics) for r in sel.runs] == [("workspace", "aaaaaaa", {"metrics/eval.json:acc": 0.9})]
    assert sel.skipped[0].startswith("aaaaaaa (no metrics")


def test_a_commit_whose_dvc_lock_has_other_params_is_stale_and_skipped(tmp_path):
    def commit_files(lock_lr: str, message: str) -> str:
        (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    cmd: x\n    params:\n"
                                           f"      params.yaml:\n        lr: {lock_lr}\n        train:\n"
                                           "          epochs: 1\n          keys: [a, b]\n")
        for args in (["add", "dvc.lock"], ["commit", "-qm", message]):
            subprocess.run(["git", *args], cwd=tmp_path, check=True, env=git_env)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    git_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=git_env)
    fresh = commit_files("2e-05", "reproduced")  # DVC writes 2e-05, which PyYAML reads as a string
    stale = commit_files("0.001", "params.yaml changed, not reproduced")
    params = {"seed": 42, "lr": 2e-5, "train.epochs": 1, "train.keys": ["a", "b"]}
    assert compare.stale_params(tmp_path, Run("main", fresh, "main", params, {"f:a": 1.0}, "commit")) == []
    assert compare.stale_params(tmp_path, Run("main", stale, "main", params, {"f:a": 1.0}, "commit")) == ["lr"]
    sel = Selection([Run("main", stale, "main", params, {"f:a": 1.0}, "commit", head=True),
                     Run("exp-1", "e" * 40, "main", params, {"f:a": 2.0})])
    sel = compare.drop_stale(sel, tmp_path)
    assert [r.name for r in sel.runs] == ["exp-1"] and sel.skipped[0].startswith("main (stale: its dvc.lock")


def test_groups_pool_only_the_seeds_and_labels_show_only_what_differs():
    runs = [run("a", 2e-5, 1, 0.8, head=True), run("b", 2e-5, 2, 0.81), run("c", 5e-5, 1, 0.85), run("d", 5e-5, 2, 0.86),
            Run("e", "e" * 5, "main", {"seed": 3, "lr": 5e-5, "dataset.seed": 1}, {"x": 1.0})]
    groups = compare.group_runs(runs, {"seed"})
    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [
        ("dataset.seed=0, lr=2e-05", ["a", "b"]), ("dataset.seed=0, lr=5e-05", ["c", "d"]), ("dataset.seed=1, lr=5e-05", ["e"])]
    groups = compare.group_runs(runs, {"seed", "dataset.seed"})  # --ignore dataset.seed
    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [("lr=2e-05", ["a", "b"]), ("lr=5e-05", ["c", "d", "e"])]
    assert compare.group_runs(runs[:2], {"seed"})[0].label == "all runs"
    # runs of two commits' code are not seeds of one configuration
    other = [Run("x", "x" * 5, "feature", {"seed": 9, "lr": 2e-5, "dataset.seed": 0}, {})]
    assert [g.label for g in compare.group_runs(runs[:2] + other, {"seed"})] == ["commit=feature", "commit=main"]


def test_describe_is_the_sample_mean_std_and_student_t_interval():
    values = [0.81, 0.84, 0.86]
    d = compare.describe(values)
    assert d["n"] == 3 and d["mean"] == pytest.approx(statistics.fmean(values), abs=1e-15)
    assert d["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)  # ddof=1
    half = 4.302652729911275 * statistics.stdev(values) / math.sqrt(3)  # t(0.975, 2 df) from a table
    assert d["ci"] == pytest.approx([statistics.fmean(values) - half, statistics.fmean(values) + half], rel=1e-9)
    assert compare.describe([0.5]) == {"n": 1, "mean": 0.5, "std": None, "ci": None}
    assert compare.describe([]) == {"n": 0, "mean": None, "std": None, "ci": None}


def test_welch_difference_interval_and_p_value_match_scipy():
    a, b = [0.85, 0.86, 0.90, 0.84], [0.80, 0.81]  # unequal n and variances: Welch != pooled
    w = compare.welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert w["diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b), rel=1e-12)
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert w["df"] == pytest.approx(ref.df, rel=1e-9)
    assert w["ci"] == pytest.approx(list(ref.confidence_interval(0.95)), rel=1e-9)
    assert w["p"] != pytest.approx(stats.ttest_ind(a, b, equal_var=True).pvalue, rel=1e-3)
    assert w["verdict"] == ("beyond seed noise" if ref.pvalue < 0.05 else "within seed noise")
    assert compare.welch([0.9, 0.91], [0.8, 0.81])["verdict"] == "beyond seed noise"
    assert compare.welch([0.8, 0.9], [0.85, 0.82])["verdict"] == "within seed noise"
    assert compare.welch([0.8, 0.8], [0.9, 0.9])["verdict"] == NO_VARIATION


def test_a_group_of_one_run_has_no_std_or_interval_and_no_test():
    sel = Selection([run("a", 2e-5, 1, 0.8, head=True), run("b", 2e-5, 2, 0.82), run("c", 5e-5, 1, 0.9)])
    report = compare.build_report(sel, {"seed"})
    base, one = report["metrics"]["metrics/eval.json:validation.accuracy"]["groups"]
    assert base["n"] == 2 and one["n"] == 1 and one["std"] is None and one["ci"] is None
    assert one["vs_baseline"]["verdict"] == NEEDS_TWO and one["vs_baseline"]["p"] is None
    assert one["vs_baseline"]["diff"] == pytest.approx(0.9 - 0.81)
    text = compare.render_text(report)
    row = next(line for line in text.splitlines() if line.strip().startswith("lr=5e-05"))
    assert row.split()[1:4] == ["1", "0.9", "n/a"] and row.endswith(NEEDS_TWO)


def test_a_metric_missing_from_some_runs_is_left_out_for_them_and_said():
    sel = Selection([run("a", 2e-5, 1, 0.8, head=True), run("b", 2e-5, 2, None), run("c", 2e-5, 3, 0.84),
                     run("d", 5e-5, 1, 0.9), run("e", 5e-5, 2, 0.92)])
    report = compare.build_report(sel, {"seed"})
    entry = report["metrics"]["metrics/eval.json:validation.accuracy"]
    assert entry["missing_from"] == ["b"]
    assert entry["groups"][0]["runs"] == ["a", "c"] and entry["groups"][0]["n"] == 2
    assert entry["groups"][0]["mean"] == pytest.approx(0.82)
    assert "missing from run(s) b (left out of those numbers): metrics/eval.json:validation.accuracy" in report["notes"]
    assert "note: missing from run(s) b" in compare.render_text(report)


def test_numbers_no_run_changes_are_left_out_unless_asked_for():
    runs = [Run(n, n, "main", {"seed": s, "lr": lr}, {"f:acc": acc, "f:rows": 100.0}, n == "a")
            for n, s, lr, acc in [("a", 1, 1, 0.8), ("b", 2, 1, 0.82), ("c", 1, 2, 0.9), ("d", 2, 2, 0.91)]]
    report = compare.build_report(Selection(runs), {"seed"})
    assert list(report["metrics"]) == ["f:acc"] and "f:rows" in report["notes"][0]
    report = compare.build_report(Selection(runs), {"seed"}, metrics=["rows"])
    assert list(report["metrics"]) == ["f:rows"]
    assert report["metrics"]["f:rows"]["groups"][1]["vs_baseline"]["verdict"] == NO_VARIATION


def _main(monkeypatch, capsys, rows, *argv) -> tuple[int, str, str]:
    monkeypatch.setattr(compare, "exp_show", lambda repo, all_commits=False: rows)
    code = compare.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_markdown_and_terminal_formats(monkeypatch, capsys):
    code, out, _ = _main(monkeypatch, capsys, SHOW, "--json")
    report = json.loads(out)
    assert code == 0 and report["baseline"] == "lr=2e-05" and "Welch" in report["test"]
    assert [(g["label"], g["runs"], g["baseline"]) for g in report["groups"]] == [
        ("lr=2e-05", ["exp-a1", "main"], True), ("lr=5e-05", ["exp-b5", "exp-b6"], False)]
    acc = report["metrics"]["metrics/eval.json:validation.accuracy"]["groups"]
    assert acc[0]["values"] == [0.81, 0.80] and acc[1]["vs_baseline"]["p"] == pytest.approx(
        stats.ttest_ind([0.83, 0.86], [0.81, 0.80], equal_var=False).pvalue)
    assert report["skipped"] == ["exp-q (queued)", "exp-r (still running)", "exp-f (failed)"]

    code, out, _ = _main(monkeypatch, capsys, SHOW, "--md", "--metric", "validation.accuracy")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("### ") and any("Welch's t-test" in x for x in lines)
    table = [x for x in lines if x.startswith("|")]
    assert table[0] == ("| metric | group | n | mean | std | 95% CI | diff vs baseline | 95% CI (Welch) | p | verdict |")
    assert table[1] == "|---|---|---|---|---|---|---|---|---|---|" and len(table) == 4
    assert table[2].startswith("| metrics/eval.json:validation.accuracy | lr=2e-05 (baseline) | 2 | 0.805 |")
    assert table[3].startswith("|  | lr=5e-05 | 2 | 0.845 |") and table[3].endswith(" |")

    code, out, _ = _main(monkeypatch, capsys, SHOW, "--metric", "metrics/eval.json:validation.loss", "--alpha", "0.2")
    assert code == 0 and "80% CI" in out and "skipped: exp-q (queued)" in out
    assert "validation.accuracy" not in out and "metrics/eval.json:validation.loss" in out


def test_runs_named_on_the_command_line_and_the_baseline_option(monkeypatch, capsys):
    code, out, _ = _main(monkeypatch, capsys, SHOW, "--json", "exp-b5", "exp-b6", "exp-a1", "main",
                         "--baseline", "exp-b6")
    report = json.loads(out)
    assert report["baseline"] == "lr=5e-05" and report["groups"][0]["runs"] == ["exp-b5", "exp-b6"]
    assert report["skipped"] == []
    code, _, err = _main(monkeypatch, capsys, SHOW, "--json", "--baseline", "lr=1")
    assert code == 2 and err.count("\n") == 1 and "no such group or run" in err


@pytest.mark.parametrize("rows, argv, code, words", [
    ([], [], 1, "no experiments with metrics"),
    ([commit("main", "a" * 40, p(42, 2e-5), m(0.8))], [], 1, "only one run (main): nothing to compare"),
    ([commit("main", "a" * 40, p(42, 2e-5), m(0.8))], ["--md"], 1, "only one run"),
    (SHOW, ["--metric", "f1"], 2, "--metric f1: no such metric"),
    (SHOW, ["exp-q", "main"], 2, "cannot compare exp-q (queued)"),
    (SHOW, ["--alpha", "5"], 2, "--alpha 5.0"),
])
def test_nothing_to_compare_or_a_bad_argument_is_one_line_and_an_exit_code(monkeypatch, capsys, rows, argv, code, words):
    got, out, err = _main(monkeypatch, capsys, rows, *argv)
    assert (got, out, err.count("\n")) == (code, "", 1) and words in err, err


def test_dvc_failing_prints_its_error(tmp_path, capsys):
    assert compare.main(["--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dvc exp show --json` failed" in err and "not inside of a DVC repository" in err


def test_the_console_script_and_python_m():
    script = Path(sys.executable).parent / "hfpipe"
    out = subprocess.run([str(script), "compare", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--ignore dataset.seed" in out and "Welch" in out
    out = subprocess.run([sys.executable, "-m", "hfpipe.compare", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: python -m hfpipe.compare")


# ------------------------------------------------------------------------------------------------
# End to end: real `dvc exp run` experiments of the tiny default recipe, checked against each
# experiment's own metrics file (metrics/eval.json, DVC-cached: read at the experiment's commit with dvc.api).

def _file_at(repo: Path, rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, check=True).stdout


def _dvc_file_at(repo: Path, rev: str, path: str) -> str:
    import dvc.api

    return dvc.api.read(path, repo=str(repo), rev=rev)


def assert_compare_matches_the_experiments(repo: Path, committed: str) -> dict:
    """`hfpipe compare --json` on a real repo (tests/test_sweep_e2e.py queues its experiments): HEAD
    at the `committed` lr (seed 42) and seed 1, and lr=0.001 at seeds 1 and 2. Every number is
    checked against each experiment's own metrics file and a direct computation; returns the report."""
    import re

    from tests.e2e import git
    from tests.e2e import run as run_cmd

    hfpipe = Path(sys.executable).parent / "hfpipe"
    report = json.loads(run_cmd(repo, str(hfpipe), "compare", "--json").stdout)

    # experiment refs: refs/exps/<baseline sha, split 2/38>/<name> (not the queue's own refs/exps/celery/...)
    refs = git(repo, "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)").stdout.splitlines()
    revs = {m.group(1): m.group(2) for ref in refs
            if (m := re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(\S+) ([0-9a-f]{40})", ref))}
    revs["main"] = git(repo, "rev-parse", "HEAD").stdout.strip()
    assert len(revs) == 4, refs
    # the workspace (HEAD's results here) is counted once, not twice
    assert sorted(r for g in report["groups"] for r in g["runs"]) == sorted(revs)
    groups = {g["label"]: g for g in report["groups"]}
    assert set(groups) == {committed, "lr=0.001"} and report["baseline"] == committed
    for label, group in groups.items():
        params = [yaml.safe_load(_file_at(repo, revs[name], "params.yaml")) for name in group["runs"]]
        assert {f"lr={x['lr']}" for x in params} == {label} and len({x["seed"] for x in params}) == 2
    assert "main" in groups[committed]["runs"]

    for key in ("perplexity", "loss", "accuracy"):
        entry = report["metrics"][f"metrics/eval.json:{key}"]
        values = {g["group"]: [json.loads(_dvc_file_at(repo, revs[name], "metrics/eval.json"))[key] for name in g["runs"]]
                  for g in entry["groups"]}
        base, other = values[committed], values["lr=0.001"]
        for g in entry["groups"]:
            own = values[g["group"]]
            assert g["values"] == pytest.approx(own, abs=0) and g["n"] == 2
            assert g["mean"] == pytest.approx(statistics.fmean(own), rel=1e-12)
            assert g["std"] == pytest.approx(statistics.stdev(own), rel=1e-9)
            half = stats.t.ppf(0.975, 1) * statistics.stdev(own) / math.sqrt(2)
            assert g["ci"] == pytest.approx([statistics.fmean(own) - half, statistics.fmean(own) + half], rel=1e-9)
        vs = entry["groups"][1]["vs_baseline"]
        ref = stats.ttest_ind(other, base, equal_var=False)
        assert vs["diff"] == pytest.approx(statistics.fmean(other) - statistics.fmean(base), rel=1e-9)
        assert vs["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert vs["ci"] == pytest.approx(list(ref.confidence_interval(0.95)), rel=1e-9)
        assert vs["verdict"] == ("beyond seed noise" if ref.pvalue < 0.05 else "within seed noise")
    return report
