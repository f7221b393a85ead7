"""End-to-end: `dvc plots show` of a tiny run of each task, rendered in a real headless Chromium.

Each task's finished tiny run (conftest: the default recipe, sentiment, gpt2-classifier) under real
`dvc`, then: `dvc plots show` must load every plot it declares (no "DVC failed to load some
plots"), `dvc plots show --json` must have data for every plot the task draws (hfpipe.plots), and
`dvc plots show -o DIR` (with hfpipe.plots' offline template: vega from npm instead of a CDN this
machine cannot reach) must draw each of them in Debian's chromium: a small script, added to the
page by the test only, switches vega-embed to its SVG renderer and counts the data marks (lines,
points, cells) each plot drew; `--dump-dom` reads the counts back. A screenshot of the page is
saved per task (the path is printed; set HFPIPE_SCREENSHOT to a folder to copy them there).

Skipped only when chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hfpipe.io import PipelineError
from hfpipe.plots import SKLEARN_DIR, VEGA_CACHE, check_plot_data, required_plots, vega_scripts
from hfpipe.tasks import TASKS
from tests.e2e import ROOT, copy_run, dvc, run

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Test-only: SVG renderer (so marks are DOM nodes), then per plot div the number of data marks
# (paths and rects of mark groups outside axes, legends and titles) and any error, in <pre id="plot-check">.
CHECK_JS = """
(function () {
  const embed = window.vegaEmbed, pending = [], errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message)));
  window.vegaEmbed = function (el, spec, opts) {
    const p = embed(el, spec, Object.assign({}, opts, { renderer: "svg" }));
    pending.push(p.then(() => null, (err) => el + ": " + err));
    return p;
  };
  window.addEventListener("load", () => {
    Promise.all(pending).then((failures) => {
      const plots = {};
      document.querySelectorAll("body > div[id]").forEach((div) => {
        let marks = 0;
        div.querySelectorAll("svg g.role-mark").forEach((g) => {
          if (g.closest(".role-axis, .role-legend, .role-title")) return;
          marks += Array.from(g.children).filter((c) => c.tagName === "path" || c.tagName === "rect").length;
        });
        plots[div.id] = marks;
      });
      const pre = document.createElement("pre");
      pre.id = "plot-check";
      pre.textContent = JSON.stringify({ plots: plots, errors: errors.concat(failures.filter(Boolean)) });
      document.body.appendChild(pre);
    });
  });
})();
"""


def div_id(plot_id: str) -> str:
    """The id dvc-render gives a plot's <div> (non-word characters become '_')."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", plot_id)


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)


RUNS = {"causal-lm": "tiny_default_repo", "classification": "sentiment_run", "gpt2-classifier": "gpt2_classifier_run"}


@pytest.mark.parametrize("task", list(RUNS))
def test_every_plot_of_each_task_draws_in_chromium(task, request, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    repo = request.getfixturevalue(RUNS[task])  # conftest: the task's finished tiny run
    plain = dvc(repo, "plots", "show", "-o", str(tmp_path / "plain"))
    assert "failed to load" not in plain.stdout + plain.stderr  # every declared plot has its data
    show = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert show.get("errors") is None, show["errors"]
    required = required_plots(TASKS[task])
    check_plot_data(show, required)  # raises, naming the plot and file, if any is missing
    assert set(show["data"]) == set(required) | ({f"{SKLEARN_DIR}/confusion_matrix_test.json",
                                                  f"{SKLEARN_DIR}/precision_recall_test.json"} if task != "causal-lm" else set())
    loss_rows = [row for item in show["data"]["Loss"] for row in item["content"]["data"]["values"]]
    assert len({row["filename"] for row in loss_rows}) == 2 and len(loss_rows) >= 4 + 2  # train and eval curves

    # The page the README's `python -m hfpipe.plots -o DIR` writes (vega from npm, cached once per
    # machine in the repo's .dvc/tmp/vega; the run's cache is filled from this checkout's).
    bundles = vega_scripts(ROOT / VEGA_CACHE)
    if not (repo / VEGA_CACHE).exists():
        shutil.copytree(ROOT / VEGA_CACHE, repo / VEGA_CACHE)
    out = tmp_path / "dvc_plots"
    printed = run(repo, sys.executable, "-m", "hfpipe.plots", "-o", str(out)).stdout.strip().splitlines()
    assert printed == [f"file://{(out / 'index.html').resolve()}"]
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in html  # nothing left to fetch from the internet
    for bundle in bundles:
        assert f'<script src="{bundle.name}"></script>' in html and (out / bundle.name).is_file()
    # test-only: the mark counter, loaded after vega-embed
    (out / "check.js").write_text(CHECK_JS)
    last = f'<script src="{bundles[-1].name}"></script>'
    (out / "index.html").write_text(html.replace(last, f'{last}\n    <script src="check.js"></script>'))

    dom = chromium("--virtual-time-budget=15000", "--dump-dom", (out / "index.html").as_uri())
    found = re.search(r'<pre id="plot-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the page never finished rendering:\n{dom.stdout[-2000:]}\n{dom.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["errors"] == []
    drawn = result["plots"]
    assert set(drawn) == {div_id(p) for p in show["data"]}  # one div per declared plot
    for plot in show["data"]:
        assert drawn[div_id(plot)] > 0, f"plot {plot!r} drew no marks: {drawn}"  # (empty axes count 0)

    shot = tmp_path / f"plots-{task}.png"
    chromium("--virtual-time-budget=15000", "--window-size=1100,1500", f"--screenshot={shot}", (out / "index.html").as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000
    if os.environ.get("HFPIPE_SCREENSHOT"):
        shutil.copy2(shot, Path(os.environ["HFPIPE_SCREENSHOT"]) / shot.name)
    print(f"screenshot: {shot}")


def test_a_plot_whose_data_file_is_missing_is_named_in_one_error(tiny_default_repo, tmp_path):
    repo = copy_run(tiny_default_repo, tmp_path / "repo")
    (repo / "dvclive/plots/metrics/eval/loss.tsv").unlink()
    shutil.rmtree(repo / ".dvc/cache")  # dvclive/ is DVC-cached: DVC would read the file from the cache
    result = run(repo, sys.executable, "-m", "hfpipe.plots", "--check-only", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: plot 'Loss': dvclive/plots/metrics/eval/loss.tsv is missing (written by the train stage); "
        "run dvc repro (or dvc pull) first"]
    with pytest.raises(PipelineError, match="not declared in dvc.yaml"):
        check_plot_data({"data": {"Loss": []}}, ["Loss", "Learning rate"])
