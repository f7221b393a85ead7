"""Stage inputs (runs on every repro): fingerprints of what the stages read from outside the repository.

data/stats/inputs.json: the installed packages behind the default corpus, the files of a local
dataset, a Hub dataset's resolved commit (fetch's dep). data/stats/tokenizer_inputs.json and
model_inputs.json: a pretrained tokenizer's and model's local files or Hub commit (the tokenizer
stage's dep; train's and export's). Each stage reruns exactly when what it reads changed.
"""

from pathlib import Path

from hfpipe.io import run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.inputs import fetch_inputs, pretrained_inputs

    inputs = fetch_inputs(params.dataset)
    write_json_atomic(Path("data/stats/inputs.json"), inputs)
    for key, section in (("tokenizer", params.tokenizer), ("model", params.model)):
        write_json_atomic(Path(f"data/stats/{key}_inputs.json"), pretrained_inputs(section.name_or_path,
                                                                                    section.revision))
    what = (f"{len(inputs['distributions'])} installed distributions" if "distributions" in inputs
            else f"{len(inputs['files'])} local file(s) under {inputs['path']}" if "files" in inputs
            else f"{inputs['path']} at {inputs['commit'] or inputs['revision'] or 'main'}")
    print(f"inputs: {what}")


if __name__ == "__main__":
    run_stage(main, "inputs")
