"""Fuzzed params (hypothesis): params files with wrong types, values out of range, huge, null, unknown
keys and keys of another task, on every recipe. Each is accepted, and then passes or is refused by
the checks a stage makes before it spends anything (processes, memory), or it is refused in one line
(PipelineError, which the stages print as `error: ...` with exit code 2). Never another exception:
that would be a traceback, and a value that passed both would be one the pipeline tries to run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")  # tests/requirements-test.txt
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hfpipe.io import PipelineError  # noqa: E402
from hfpipe.params import Params, load_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["params.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.yaml"))]


def _keys() -> list[tuple[str, ...]]:
    """Every params key (section.field), a few unknown ones, and the sections themselves."""
    keys: list[tuple[str, ...]] = []
    for name, field in Params.model_fields.items():
        keys.append((name,))
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys += [(name, sub) for sub in annotation.model_fields]
    return keys + [("train", "lrr"), ("bogus",), ("model", "peft", "r"), ("model", "peft", "target_modules"),
                   ("dataset", "data_files", "train")]


ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.sampled_from([0, 1, 2, 3, 10**6, 10**9, 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["no", "yes", "500MB", "-1", "1e9", "../x.csv", "/dev/zero", "pkg:os", "</script>", "a\nb: 1",
                     "trainer", "accelerate", "bf16", "causal-lm", "classification", "gpt2-classifier"]),
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)


def _set(raw: dict, key: tuple[str, ...], value) -> None:
    node = raw
    for part in key[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key[-1]] = value


def check_before_spending(params: Params) -> None:
    """What the stages check at their start, before building anything (hfpipe.resources)."""
    from hfpipe.resources import check_processes, check_training_fits

    check_processes("tokenize.num_proc", params.tokenize.num_proc, gpus=0)
    check_processes("train.num_processes", params.train.num_processes)
    mp = params.model
    if params.task == "causal-lm" and not mp.name_or_path:  # a from-scratch config: sizes come from params
        from transformers import GPT2Config

        config = GPT2Config(n_layer=mp.n_layer, n_head=mp.n_head, n_embd=mp.n_embd,
                            vocab_size=params.tokenizer.vocab_size, n_positions=params.tokenize.context_length)
        check_training_fits(config, params.train.batch_size, params.tokenize.context_length,
                            mp.gradient_checkpointing, processes=params.train.num_processes, gpus=0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipe=st.sampled_from(RECIPES),
       changes=st.lists(st.tuples(st.sampled_from(_keys()), ODD_VALUES), min_size=1, max_size=4))
def test_any_params_file_is_accepted_or_refused_in_one_line(tmp_path_factory, recipe, changes):
    raw = yaml.safe_load((ROOT / recipe).read_text())
    for key, value in changes:
        _set(raw, key, value)
    path = tmp_path_factory.mktemp("fuzz") / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    try:
        params = load_params(path)
        check_before_spending(params)
    except PipelineError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("text", ["", "- a list\n- not a mapping\n", "lr: [unclosed\n", "\x00\x01", "lr: 1\nlr: 2\n",
                                  "task: !!python/object/apply:os.system ['true']\n"])
def test_a_params_file_that_is_not_a_mapping_of_params_is_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    try:
        load_params(path)
    except PipelineError as err:
        assert "\n" not in str(err)
