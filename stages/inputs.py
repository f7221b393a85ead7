"""Stage inputs (runs on every repro): fingerprints of what fetch reads -> data/stats/inputs.json.

The installed packages behind the default corpus, the files of a local dataset, a Hub dataset's
resolved commit: fetch depends on this file, so it reruns exactly when one of them changed.
"""

from pathlib import Path

from hfpipe.io import run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.inputs import fetch_inputs

    inputs = fetch_inputs(params.dataset)
    write_json_atomic(Path("data/stats/inputs.json"), inputs)
    what = (f"{len(inputs['distributions'])} installed distributions" if "distributions" in inputs
            else f"{len(inputs['files'])} local file(s) under {inputs['path']}" if "files" in inputs
            else f"{inputs['path']} at {inputs['commit'] or inputs['revision'] or 'main'}")
    print(f"inputs: {what}")


if __name__ == "__main__":
    run_stage(main, "inputs")
