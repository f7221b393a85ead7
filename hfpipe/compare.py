"""`hfpipe compare`: is experiment B better than A, or is that seed noise?

Reads the runs `dvc exp show --json` lists (HEAD, its experiments, the workspace; or the runs named on
the command line), groups them by every param except the seeds, and prints per group and metric n,
mean, sample standard deviation and a Student-t interval of the mean; and each group against a
baseline group: the difference of means, its Welch interval and Welch's t-test p-value, with a
verdict "beyond seed noise" (p < alpha) or "within seed noise".

Names. A param is its dotted key in params.yaml (`lr`, `train.max_steps`; another params file's
keys are prefixed with the file, `other.yaml:key`). A metric is `<metrics file>:<dotted key>`, as
`dvc exp show --sort-by` names it (`metrics/eval.json:validation.accuracy`); `--metric` also takes
the key alone (`validation.accuracy`) or the file alone (`metrics/eval.json`).

    dvc exp run --queue -S seed=1,2,3 -S lr=2e-5,5e-5 && dvc queue start
    hfpipe compare                      # terminal table;  --md: a pull-request comment;  --json
    hfpipe compare exp-a exp-b main     # only these runs (experiment names or git revisions)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TypeGuard

import numpy as np
import yaml
from scipy import stats

from hfpipe import paths

SEED_PARAMS = ("seed",)  # always pooled over: initialisation and data order, the noise under test
PARAMS_FILE = paths.PARAMS.as_posix()  # the key dvc exp show gives the default params file
TEST_NAME = "Welch's t-test (two-sided, unequal variances: scipy.stats.ttest_ind(equal_var=False))"
NEEDS_TWO = "needs >= 2 runs per group"
NO_VARIATION = "no seed variation (test undefined)"
# Executor states of runs that have no results of their own (yet): skipped with a note.
NOT_FINISHED = {"queued": "queued", "running": "still running", "failed": "failed"}


class CompareError(Exception):
    """One line for the user; `code` is the exit status (1: nothing to compare, 2: an error)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Run:
    name: str                  # experiment name, branch (or short sha) of a commit, or "workspace"
    rev: str                   # its commit sha ("workspace" for the workspace)
    commit: str                # the commit whose code it ran (an experiment's baseline), by name
    params: dict[str, object]  # flattened params
    metrics: dict[str, float]  # flattened numeric metrics, `file:key`
    kind: str = "experiment"   # experiment | commit | workspace
    head: bool = False         # the HEAD commit row (the default baseline)


@dataclass
class Selection:
    runs: list[Run]
    skipped: list[str] = field(default_factory=list)  # "<name> (<why>)"
    aliases: dict[str, str] = field(default_factory=dict)  # "workspace" -> the run it duplicates


# ------------------------------------------------------------------------------------------------
# Reading dvc exp show --json

def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> {"a.b.c": leaf}; lists stay whole (dvc flattens the same way)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def is_number(value: object) -> TypeGuard[int | float]:
    # bools are ints in Python, but a flag is no measurement; NaN/inf cannot be averaged
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def row_params(data: dict) -> dict[str, object]:
    out: dict[str, object] = {}
    for file, entry in (data.get("params") or {}).items():
        prefix = "" if file == PARAMS_FILE else f"{file}:"
        for key, value in flatten((entry or {}).get("data") or {}).items():
            out[prefix + key] = value
    return out


def row_metrics(data: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for file, entry in (data.get("metrics") or {}).items():
        for key, value in flatten((entry or {}).get("data") or {}).items():
            if is_number(value):
                out[f"{file}:{key}"] = float(value)
    return out


def _why_unfinished(row: dict, executor: dict | None) -> str | None:
    state = (executor or {}).get("state")
    if state in NOT_FINISHED:
        return NOT_FINISHED[state]
    if row.get("error"):
        return "failed: " + str(row["error"].get("msg") or row["error"])
    return None


def runs_from_exp_show(rows: list[dict]) -> Selection:
    """Every finished run of `dvc exp show --json`'s output. The workspace row is dropped when its
    metrics are another run's (it is HEAD, or the last experiment run in place: one run, not two)."""
    sel = Selection([])
    workspace: dict | None = None
    head_name: str | None = None
    for row in rows:
        if row.get("rev") == "workspace":
            workspace = row
            continue
        commit = row.get("name") or row["rev"][:7]
        head_name = head_name or commit
        data = row.get("data") or {}
        if (why := _why_unfinished(row, None)) is None:
            sel.runs.append(Run(commit, row["rev"], commit, row_params(data), row_metrics(data), "commit",
                                head=commit == head_name))
        else:
            sel.skipped.append(f"{commit} ({why})")
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                name = exp.get("name") or rev.get("name") or rev["rev"][:7]
                if (why := _why_unfinished(rev, exp.get("executor"))) is not None:
                    sel.skipped.append(f"{name} ({why})")
                    continue
                rdata = rev.get("data") or {}
                sel.runs.append(Run(name, rev["rev"], commit, row_params(rdata), row_metrics(rdata)))
    if workspace is not None and _why_unfinished(workspace, None) is None:
        data = workspace.get("data") or {}
        metrics = row_metrics(data)
        same = next((run for run in sel.runs if metrics == run.metrics), None)
        if same is not None:
            sel.aliases["workspace"] = same.name
        elif metrics:  # uncommitted results (a `dvc repro` in the workspace): a run of HEAD's code
            sel.runs.append(Run("workspace", "workspace", head_name or "workspace", row_params(data), metrics,
                                "workspace"))
    no_metrics = [r for r in sel.runs if not r.metrics]
    sel.skipped += [f"{r.name} (no metrics: not reproduced, or its outputs are not in the DVC cache)"
                    for r in no_metrics]
    sel.runs = [r for r in sel.runs if r.metrics]
    return sel


def dvc_command() -> list[str]:
    # the dvc of this interpreter's environment (the venv's, even when it is not on PATH)
    if find_spec("dvc") is not None:
        return [sys.executable, "-m", "dvc"]
    return [shutil.which("dvc") or "dvc"]


def exp_show(repo: Path, all_commits: bool = False) -> list[dict]:
    args = [*dvc_command(), "exp", "show", "--json", *(["-A"] if all_commits else [])]
    try:
        result = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    except OSError as err:
        raise CompareError(f"could not run dvc: {err}") from err
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        message = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no output")
        raise CompareError(f"`dvc exp show --json` failed in {repo} (exit {result.returncode}): {message}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as err:
        raise CompareError(f"`dvc exp show --json` printed no JSON ({err}): {result.stdout[:200]!r}") from err


def _norm(value: object) -> object:
    # dvc.lock is read with PyYAML, which takes DVC's `2e-05` for a string: compare numbers as numbers
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return [_norm(x) for x in value]
    if isinstance(value, dict):
        return {k: _norm(x) for k, x in value.items()}
    return value


def stale_params(repo: Path, run: Run) -> list[str]:
    """The params whose values in the commit's dvc.lock differ from its params files: the commit's
    metrics were made with other params (params.yaml edited and committed without `dvc repro`), so
    the run would be pooled into the wrong group."""
    result = subprocess.run(["git", "show", f"{run.rev}:dvc.lock"], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        return []
    try:
        lock = yaml.safe_load(result.stdout) or {}
    except yaml.YAMLError:
        return []
    stale = set()
    for stage in (lock.get("stages") or {}).values():
        for file, values in ((stage or {}).get("params") or {}).items():
            prefix = "" if file == PARAMS_FILE else f"{file}:"
            for key, value in flatten(values or {}).items():
                if prefix + key not in run.params or _norm(run.params[prefix + key]) != _norm(value):
                    stale.add(prefix + key)
    return sorted(stale)


def drop_stale(sel: Selection, repo: Path) -> Selection:
    for run in [r for r in sel.runs if r.kind == "commit"]:
        if keys := stale_params(repo, run):
            shown_keys = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            sel.runs.remove(run)
            sel.skipped.append(f"{run.name} (stale: its dvc.lock has other values of {shown_keys} than its "
                               "params.yaml; dvc repro and commit dvc.lock)")
    return sel


def git_sha(repo: Path, name: str) -> str | None:
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=repo,
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def pick(sel: Selection, names: list[str], repo: Path) -> Selection | list[str]:
    """The runs named (an experiment name, `workspace`, a commit's name, or any git revision), in
    that order; or the names not found."""
    picked: list[Run] = []
    missing: list[str] = []
    for name in names:
        name = sel.aliases.get(name, name)
        run = next((r for r in sel.runs if name in (r.name, r.rev)), None)
        if run is None and (sha := git_sha(repo, name)) is not None:
            run = next((r for r in sel.runs if r.rev == sha), None)
        if run is None:
            run = next((r for r in sel.runs if len(name) >= 4 and r.rev.startswith(name)), None)
        if run is None:
            missing.append(name)
        elif run not in picked:
            picked.append(run)
    if missing:
        return missing
    wanted = set(names)
    return Selection(picked, [s for s in sel.skipped if s.split(" (")[0] in wanted])


def load_runs(repo: Path, names: list[str], all_commits: bool = False) -> Selection:
    sel = drop_stale(runs_from_exp_show(exp_show(repo, all_commits)), repo)
    if not names:
        return sel
    found = pick(sel, names, repo)
    if isinstance(found, list) and not all_commits:  # not under HEAD: look through every commit's runs
        sel = drop_stale(runs_from_exp_show(exp_show(repo, all_commits=True)), repo)
        found = pick(sel, names, repo)
    if isinstance(found, list):
        skipped = {s.split(" (")[0]: s for s in sel.skipped}
        parts = [f"{skipped[n]}" if n in skipped else f"{n} (no such experiment or revision)" for n in found]
        raise CompareError("cannot compare " + ", ".join(parts))
    return found


# ------------------------------------------------------------------------------------------------
# Grouping

def canonical(value: object) -> str:
    """A param value as a hashable, comparable string (lists and dicts too): its JSON."""
    return json.dumps(value, sort_keys=True)


def shown(value: object) -> str:
    return value if isinstance(value, str) else canonical(value)


@dataclass
class Group:
    label: str                 # the params that differ between groups, `lr=2e-05, train.epochs=2`
    params: dict[str, object]  # those params' values
    runs: list[Run]
    baseline: bool = False


def group_key(run: Run, ignore: set[str]) -> tuple[tuple[str, str], ...]:
    # the commit is part of the key: runs of different code are not seeds of one configuration
    items = {k: canonical(v) for k, v in run.params.items() if k not in ignore}
    items["commit"] = run.commit
    return tuple(sorted(items.items()))


def _order(value: object) -> tuple:
    return (0, float(value), "") if is_number(value) else (1, 0.0, shown(value))


def group_runs(runs: list[Run], ignore: set[str]) -> list[Group]:
    """Runs with the same params, the ignored ones aside, form a group. A param missing from a run
    counts as a value of its own (`<unset>`)."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(group_key(run, ignore), []).append(run)
    keys = sorted({k for key in by_key for k, _ in key})
    values = [dict(key) for key in by_key]
    differing = [k for k in keys if len({v.get(k, "<unset>") for v in values}) > 1]
    groups = []
    for _key, members in by_key.items():
        first = members[0]
        params = {k: (first.commit if k == "commit" else first.params.get(k, "<unset>")) for k in differing}
        label = ", ".join(f"{k}={shown(v)}" for k, v in params.items()) or "all runs"
        groups.append(Group(label, params, sorted(members, key=lambda r: r.name)))
    return sorted(groups, key=lambda g: [_order(g.params[k]) for k in differing])


def choose_baseline(groups: list[Group], wanted: str | None) -> Group:
    """--baseline: a group label as printed or a run in the group; default: HEAD's group (then the
    workspace's, then the first)."""
    if wanted is not None:
        for group in groups:
            if wanted == group.label or any(wanted in (r.name, r.rev) or (len(wanted) >= 4 and r.rev.startswith(wanted))
                                            for r in group.runs):
                return group
        raise CompareError(f"--baseline {wanted!r}: no such group or run; groups are "
                           + "; ".join(g.label for g in groups))
    for test in (lambda r: r.head, lambda r: r.name == "workspace"):
        for group in groups:
            if any(test(r) for r in group.runs):
                return group
    return groups[0]


# ------------------------------------------------------------------------------------------------
# Statistics

def describe(values: list[float], confidence: float = 0.95) -> dict:
    """n, mean, sample standard deviation (ddof=1) and the Student-t interval of the mean; std and
    interval are None for a single value."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = float(np.mean(values))
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci": None}
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": [mean - half, mean + half]}


def welch(values: list[float], base: list[float], confidence: float = 0.95, alpha: float = 0.05) -> dict:
    """mean(values) - mean(base) with its Welch interval (Welch-Satterthwaite degrees of freedom)
    and Welch's t-test p-value; a verdict in words."""
    if len(values) < 2 or len(base) < 2:
        return {"diff": float(np.mean(values) - np.mean(base)) if values and base else None, "ci": None,
                "p": None, "df": None, "verdict": NEEDS_TWO}
    diff = float(np.mean(values) - np.mean(base))
    va, vb = np.var(values, ddof=1) / len(values), np.var(base, ddof=1) / len(base)
    if va + vb == 0:  # every run of both groups gave the same number: t is 0/0 or x/0
        return {"diff": diff, "ci": [diff, diff], "p": None, "df": None, "verdict": NO_VARIATION}
    se = math.sqrt(va + vb)
    df = float((va + vb) ** 2 / (va ** 2 / (len(values) - 1) + vb ** 2 / (len(base) - 1)))
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    with warnings.catch_warnings():  # nearly equal values: scipy warns of precision loss, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
    return {"diff": diff, "ci": [diff - half, diff + half], "p": p, "df": df,
            "verdict": "beyond seed noise" if p < alpha else "within seed noise"}


# ------------------------------------------------------------------------------------------------
# The report: one dict, then rendered as text, markdown or JSON

def metric_matches(name: str, wanted: str) -> bool:
    file, _, key = name.partition(":")
    return wanted in (name, key, file)


def build_report(sel: Selection, ignore: set[str], metrics: list[str] | None = None,
                 baseline: str | None = None, alpha: float = 0.05) -> dict:
    runs = sel.runs
    if not runs:
        skipped = f" (skipped: {', '.join(sel.skipped)})" if sel.skipped else ""
        raise CompareError("no experiments with metrics to compare" + skipped + "; run some, e.g. "
                           "dvc exp run --queue -S seed=1,2,3 && dvc queue start", code=1)
    if len(runs) == 1:
        raise CompareError(f"only one run ({runs[0].name}): nothing to compare; run more seeds, e.g. "
                           "dvc exp run --queue -S seed=1,2,3 && dvc queue start", code=1)
    confidence = 1 - alpha
    groups = group_runs(runs, ignore)
    base = choose_baseline(groups, baseline)
    base.baseline = True
    groups = [base] + [g for g in groups if g is not base]

    names = sorted({m for r in runs for m in r.metrics})
    notes: list[str] = []
    if metrics:
        unknown = [w for w in metrics if not any(metric_matches(n, w) for n in names)]
        if unknown:
            raise CompareError(f"--metric {', '.join(unknown)}: no such metric; metrics are {', '.join(names)}")
        names = [n for n in names if any(metric_matches(n, w) for w in metrics)]
    else:  # a number no run changes (a data count, an export setting) is no result: leave it out, say so
        constant = [n for n in names if len({r.metrics.get(n) for r in runs}) == 1]
        if constant and len(constant) < len(names):
            notes.append(f"{len(constant)} metric(s) with the same value in every run not shown "
                         f"(--metric NAME shows one): {', '.join(constant)}")
            names = [n for n in names if n not in constant]

    missing_by_runs: dict[tuple[str, ...], list[str]] = {}
    out_metrics = {}
    for name in names:
        missing = tuple(r.name for r in runs if name not in r.metrics)
        if missing:
            missing_by_runs.setdefault(missing, []).append(name)
        base_values = [r.metrics[name] for r in base.runs if name in r.metrics]
        rows = []
        for group in groups:
            values = [r.metrics[name] for r in group.runs if name in r.metrics]
            row = {"group": group.label, "runs": [r.name for r in group.runs if name in r.metrics],
                   "values": values, **describe(values, confidence)}
            if not group.baseline:
                row["vs_baseline"] = welch(values, base_values, confidence, alpha)
            rows.append(row)
        out_metrics[name] = {"groups": rows, "missing_from": list(missing)}
    for missing, metric_names in missing_by_runs.items():
        notes.append(f"missing from run(s) {', '.join(missing)} (left out of those numbers): {', '.join(metric_names)}")

    varied = [k for k in groups[0].params] if len(groups) > 1 else []
    return {
        "test": TEST_NAME, "alpha": alpha, "confidence": confidence,
        "pooled_over": sorted(ignore), "grouped_by_differing": varied,
        "baseline": base.label,
        "groups": [{"label": g.label, "params": g.params, "n": len(g.runs), "baseline": g.baseline,
                    "runs": [r.name for r in g.runs]} for g in groups],
        "metrics": out_metrics, "skipped": sel.skipped, "notes": notes,
    }


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def fmt_ci(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def fmt_diff(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4g}"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    pct = f"{report['confidence']:.0%}"
    headers = ["metric", "group", "n", "mean", "std", f"{pct} CI", "diff vs baseline", f"{pct} CI (Welch)", "p",
               "verdict"]
    rows = []
    for name, entry in report["metrics"].items():
        for i, g in enumerate(entry["groups"]):
            label = g["group"] + (" (baseline)" if g["group"] == report["baseline"] else "")
            row = [name if i == 0 else "", label, str(g["n"]), fmt(g["mean"]), fmt(g["std"]), fmt_ci(g["ci"])]
            if "vs_baseline" in g:
                c = g["vs_baseline"]
                row += [fmt_diff(c["diff"]), fmt_ci(c["ci"]), fmt(c["p"], 3), c["verdict"]]
            else:
                row += ["", "", "", ""]
            rows.append(row)
    return headers, rows


def header_lines(report: dict) -> list[str]:
    pooled = ", ".join(report["pooled_over"])
    n_runs = sum(g["n"] for g in report["groups"])
    lines = [f"{n_runs} runs in {len(report['groups'])} group(s), grouped by every param except {pooled} "
             f"(baseline: {report['baseline']})",
             f"test: {report['test']}; alpha {report['alpha']}; a group's interval is Student t on its mean, "
             "a difference's is Welch's"]
    lines += [f"group {g['label']}: {', '.join(g['runs'])}" for g in report["groups"]]
    if report["skipped"]:
        lines.append(f"skipped: {', '.join(report['skipped'])}")
    lines += [f"note: {n}" for n in report["notes"]]
    return lines


def render_text(report: dict) -> str:
    headers, rows = table_rows(report)
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return "\n".join(header_lines(report) + ["", line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in rows]) + "\n"


def render_md(report: dict) -> str:
    headers, rows = table_rows(report)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    top = ["### Seed-grouped comparison (`hfpipe compare`)", ""] + [f"- {x}" for x in header_lines(report)] + [""]
    body = [line(headers), "|" + "|".join("---" for _ in headers) + "|"] + [line(r) for r in rows]
    return "\n".join(top + body) + "\n"


# ------------------------------------------------------------------------------------------------
# Command line

DESCRIPTION = """\
Group dvc experiments by every param except the seeds and tell whether a group's metrics differ
from the baseline group's beyond seed noise (Welch's t-test)."""
EPILOG = """\
Runs: HEAD, its experiments and the workspace (when its results are not already one of those), as
`dvc exp show` lists them; queued, running and failed experiments are skipped with a note, and so
is a commit whose dvc.lock holds other param values than its params.yaml (committed without
`dvc repro`: its metrics are not its params'). Name runs (experiment names, `workspace`, or git
revisions) to compare only those.

Groups: runs whose params are equal apart from `seed` (always pooled over) and the --ignore'd ones,
and which ran the same commit's code. `dataset.seed` is NOT pooled over by default: it picks the
validation data, so runs that differ in it are not scored on the same examples; add
`--ignore dataset.seed` to treat it as a seed too. Labels show only the params that differ.

Metrics are named `<file>:<key>` (`metrics/eval.json:validation.accuracy`); --metric takes that, the
key alone or the file. Numbers the same in every run are left out unless asked for with --metric.

Statistics: n, mean, sample standard deviation (ddof=1) and a Student-t interval of the mean per
group; per non-baseline group, the difference of means from the baseline's, its Welch interval and
Welch's two-sided t-test p-value; "beyond seed noise" when p < --alpha. A group of one run has no
std or interval, and the test needs >= 2 runs in both groups. Each metric is tested on its own,
without a multiple-comparison correction: decide on the metric that matters first (--metric).

Exit status: 0 printed a comparison; 1 nothing to compare (no runs, or one); 2 an error (dvc failed,
a named run or metric not found)."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="compare only these runs: experiment names, `workspace`, or git revisions")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--ignore", action="append", default=[], metavar="PARAM",
                        help="pool over this param too, as over `seed` (repeatable), e.g. --ignore dataset.seed")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="only this metric (repeatable): `metrics/eval.json:accuracy`, `accuracy` or a file")
    parser.add_argument("--baseline", metavar="GROUP_OR_RUN",
                        help="the group the others are compared with: a group label as printed (`lr=2e-05`) "
                             "or a run in it (default: the group of HEAD's run)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level; intervals are 1-alpha (default 0.05: 95%%)")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="read the experiments of every commit (dvc exp show -A), not just HEAD's")
    fmt_group = parser.add_mutually_exclusive_group()
    fmt_group.add_argument("--md", action="store_true", help="a markdown table (for a pull-request comment)")
    fmt_group.add_argument("--json", action="store_true", help="JSON for machines (null where n/a)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        if not 0 < args.alpha < 1:
            raise CompareError(f"--alpha {args.alpha}: give a number between 0 and 1 (e.g. 0.05)")
        sel = load_runs(args.repo, args.runs, args.all_commits)
        report = build_report(sel, set(SEED_PARAMS) | set(args.ignore), args.metric or None, args.baseline, args.alpha)
    except CompareError as err:
        print(f"{'error' if err.code == 2 else 'hfpipe compare'}: {err}", file=sys.stderr)
        return err.code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_md(report) if args.md else render_text(report), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hfpipe.compare", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_arguments(parser).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
