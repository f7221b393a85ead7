"""dvc.yaml names the pipeline's paths as hfpipe.paths does: every output, metric, data dep and
params file of a stage is one of its constants, and every constant is in dvc.yaml (but the scratch
and generated paths no stage declares)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hfpipe import paths
from hfpipe.stage_deps import declared_deps, is_code_dep

ROOT = Path(__file__).resolve().parents[1]

# Paths hfpipe.paths names that dvc.yaml does not: no stage output, on purpose.
NOT_IN_DVC_YAML = {
    paths.CHECKPOINTS,  # scratch a killed train run resumes from (a DVC output would be deleted before a rerun)
    paths.LOGS,         # wall-clock timings, which differ on every run
    paths.TASK_PLOTS,   # written by the plots stage, git-tracked: DVC reads it as a dvc.yaml, not as an output
}


def constants() -> dict[str, str]:
    return {name: value.as_posix() for name, value in vars(paths).items()
            if name.isupper() and isinstance(value, Path)}


def names(entries) -> list[str]:
    """A deps/outs/metrics/params list's paths (an entry is a path or a {path: options} mapping)."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def dvc_yaml_paths(dvc_yaml: dict) -> dict[str, str]:
    """Every pipeline path dvc.yaml names -> where (stage and field)."""
    found = {}
    for stage, spec in dvc_yaml["stages"].items():
        for field in ("outs", "metrics"):
            found |= {p: f"{stage}.{field}" for p in names(spec.get(field))}
        found |= {p: f"{stage}.deps" for p in declared_deps(spec) if not is_code_dep(p)}
        found |= {p: f"{stage}.params" for p in spec.get("params", []) if isinstance(p, dict) for p in p}
    found |= {a["path"]: f"artifacts.{name}" for name, a in dvc_yaml.get("artifacts", {}).items()}
    return found


def plot_files(dvc_yaml: dict) -> list[str]:
    return [file for plot in dvc_yaml.get("plots", []) for spec in plot.values() for file in spec.get("y", {})]


def test_every_path_dvc_yaml_names_is_a_constant_of_hfpipe_paths():
    named = dvc_yaml_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    unknown = {p: where for p, where in named.items() if p not in constants().values()}
    assert not unknown, f"dvc.yaml names paths hfpipe.paths does not: {unknown}"


def test_every_constant_of_hfpipe_paths_is_in_dvc_yaml():
    named = dvc_yaml_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    skip = {p.as_posix() for p in NOT_IN_DVC_YAML}
    absent = {name: value for name, value in constants().items() if value not in named and value not in skip}
    assert not absent, f"hfpipe.paths names paths dvc.yaml does not declare: {absent}"


def test_the_plots_read_the_training_curves():
    files = plot_files(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    assert files and all(Path(f).is_relative_to(paths.DVCLIVE) for f in files), files


def test_the_scratch_paths_are_git_ignored_not_outputs():
    import subprocess

    for path in (paths.CHECKPOINTS, paths.LOGS):
        result = subprocess.run(["git", "check-ignore", "-q", str(path / "any")], cwd=ROOT)
        assert result.returncode == 0, f"{path} is not git-ignored"


def test_the_reader_finds_outputs_deps_params_files_and_the_artifact():
    named = dvc_yaml_paths({"stages": {"s": {"cmd": "python -m stages.s",
                                             "deps": ["hfpipe/io.py", "data/raw", {"data/x": {"cache": False}}],
                                             "params": ["lr", {"hub.lock.yaml": ["model"]}, {"params.yaml": None}],
                                             "outs": [{"models/y": {"persist": True}}], "metrics": ["m.json"]}},
                            "artifacts": {"model": {"path": "models/export"}}})
    assert named == {"data/raw": "s.deps", "data/x": "s.deps", "hub.lock.yaml": "s.params",
                     "params.yaml": "s.params", "models/y": "s.outs", "m.json": "s.metrics",
                     "models/export": "artifacts.model"}
