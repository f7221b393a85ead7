"""End-to-end: a team sharing one DVC cache on S3, against a real S3 server on 127.0.0.1 (moto behind a
relay that can drop it: tests/remote.py), with real dvc and dvc-s3, and a bare git repo as origin.

One clone runs and pushes; a fresh clone pulls and is up to date with byte-identical outputs; an
experiment run and pushed in one clone shows in the other's `dvc exp show` and `hfpipe compare`, and
is restored there from the run-cache instead of trained again; a push or a pull cut off midway fails
in dvc's words, loses nothing and completes once the server is back; an object corrupted on the
remote is caught on pull and never reaches the workspace.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import remote
from tests.e2e import copy_run, env, stages_run

pytestmark = pytest.mark.e2e
OUTPUTS = ["data/filtered", "models/tokenizer", "data/tokenized", "models/trained", "models/export"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = remote.LocalS3.start(tmp_path_factory.mktemp("s3"))
    server.create_bucket("team")
    yield server
    server.stop()


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=remote.env_with_credentials(env()), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, "git", *args)


def digests(repo: Path) -> dict[str, str]:
    """sha256 of every file under the pipeline's outputs."""
    out = {}
    for name in OUTPUTS:
        for f in sorted((repo / name).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def clone(origin: Path, dest: Path) -> Path:
    run(origin.parent, "git", "clone", "-q", str(origin), str(dest))
    return dest


def errors(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR")]


def experiments(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name -> its row (rev, data: params, metrics)."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    return {r["name"]: r for row in shown for exp in (row.get("experiments") or []) for r in exp["revs"][:1]
            if r.get("name")}


def object_key(repo: Path, output: str, name: str) -> str:
    """The remote key of file `name` inside directory output `output` (from the .dir object in the cache)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == output)
    listing = json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())
    file_md5 = next(e["md5"] for e in listing if e["relpath"] == name)
    return f"cache/files/md5/{file_md5[:2]}/{file_md5[2:]}"


def test_a_team_shares_runs_and_experiments_through_s3(tiny_default_repo, s3, tmp_path):
    origin = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    a = copy_run(tiny_default_repo, tmp_path / "a")
    # the README's set-up: the remote in the committed config, credentials only in the environment
    dvc(a, "remote", "add", "-d", "storage", "s3://team/cache")
    dvc(a, "remote", "modify", "storage", "endpointurl", s3.endpoint)
    dvc(a, "remote", "modify", "storage", "verify", "true")  # pulls check every object against its hash
    assert "test" not in (a / ".dvc/config").read_text()  # no key in a committed file
    git(a, "add", ".dvc/config")
    git(a, "commit", "-qm", "team cache")
    git(a, "remote", "add", "origin", str(origin))
    git(a, "push", "-q", "origin", "main")
    # the first push, cut off midway: dvc's error, nothing lost here, and the same command completes later
    before = digests(a)
    s3.relay.cut_after(300_000)  # the listing passes, the uploads are cut off
    failed = errors(dvc(a, "push", "--run-cache", check=False))
    assert any(words in failed[-1] for words in ("failed to push data to the cloud", "Could not connect to the endpoint")), failed
    s3.relay.resume()
    assert digests(a) == before
    dvc(a, "push", "--run-cache")
    assert "Cache and remote 'storage' are in sync" in dvc(a, "status", "--cloud").stdout

    # a fresh clone + dvc pull: the same bytes, and nothing to do
    b = clone(origin, tmp_path / "b")
    dvc(b, "pull")
    assert digests(b) == digests(a)
    assert dvc(b, "status").stdout.strip() == "Data and pipelines are up to date."
    assert "Running stage" not in dvc(b, "repro").stdout

    # an experiment run in one clone travels to the other (git refs through origin, data through S3)
    result = dvc(a, "exp", "run", "-S", "lr=0.01")
    assert stages_run(result.stdout) == {"train", "evaluate", "export"}
    (name,) = experiments(a)
    metrics = json.loads((a / "metrics/eval.json").read_text())
    dvc(a, "exp", "push", "origin", name)
    dvc(a, "push", "--run-cache")
    dvc(b, "exp", "pull", "origin", name)
    shown = experiments(b)
    assert shown[name]["data"]["metrics"]["metrics/eval.json"]["data"]["perplexity"] == metrics["perplexity"]
    compare = json.loads(run(b, sys.executable, "-m", "hfpipe.cli", "compare", "--json").stdout)
    assert any(name in group["runs"] for group in compare["groups"]), compare

    # nobody trains the same params twice: the other clone's run of them is restored from the run-cache
    dvc(b, "pull", "--run-cache")
    result = dvc(b, "exp", "run", "-S", "lr=0.01")
    for stage in ("train", "evaluate", "export"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in result.stdout, result.stdout
    assert stages_run(result.stdout) == set()
    assert json.loads((b / "metrics/eval.json").read_text()) == metrics
    assert digests(b) == digests(a)

    # the experiment committed: a fresh clone's dvc metrics diff reads both revisions' metrics (DVC-cached)
    # from the remote before any pull; then a pull cut off midway fails, and completes later
    git(a, "commit", "-qam", "lr 0.01")
    git(a, "push", "-q", "origin", "main")
    c = clone(origin, tmp_path / "c")
    diff = json.loads(dvc(c, "metrics", "diff", "HEAD~1", "--json").stdout)["metrics/eval.json"]["perplexity"]
    assert diff["new"] == metrics["perplexity"] and diff["old"] != diff["new"]
    s3.relay.cut_after(2_000)
    failed = errors(dvc(c, "pull", check=False))
    assert any(words in failed[-1] for words in ("failed to pull data from the cloud", "Could not connect to the endpoint")), failed
    s3.relay.resume()
    dvc(c, "pull")
    assert digests(c) == digests(a)

    # an object corrupted on the remote is caught on pull and never reaches the workspace
    key = object_key(a, "models/trained", "model.safetensors")
    s3.client().put_object(Bucket="team", Key=key, Body=b"not the weights")
    d = clone(origin, tmp_path / "d")
    result = dvc(d, "pull", check=False)
    assert errors(result)[-1].startswith("ERROR: failed to pull data from the cloud - Checkout failed")
    assert "models/trained" in result.stderr and not (d / "models/trained/model.safetensors").exists()
    assert (d / "data/tokenized").is_dir()  # what was not corrupted arrived
