"""hfpipe.recipes: a recipe lists only its changes; `hfpipe recipe NAME` renders the full params.yaml,
with the values the recipe had when it was a whole file (tests/recipes_snapshot.json) and the
committed params.yaml byte-equal to the default recipe's rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hfpipe.cli import main
from hfpipe.io import PipelineError
from hfpipe.params import Params, load_params, parse_params, unread_keys
from hfpipe.recipes import (
    DEFAULT_RECIPE,
    RECIPES_DIR,
    load_recipe,
    recipe_names,
    render_recipe,
    render_text,
    write_params,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Each recipe's validated values (model_dump) as the whole recipe files gave them: a rendered recipe
# must give exactly these for every key its run reads (they reach weights, metrics and DVC).
SNAPSHOT = json.loads((Path(__file__).parent / "recipes_snapshot.json").read_text())


def test_every_recipe_has_a_snapshot():
    assert recipe_names() == sorted(SNAPSHOT)


def read_values(values: dict, unread: dict) -> dict:
    """The dotted keys and values a run reads (the keys its params make unread left out)."""
    flat = {}
    for section, value in values.items():
        for key, sub in (value.items() if isinstance(value, dict) and section != "peft" else [(None, value)]):
            flat[f"{section}.{key}" if key else section] = sub
    return {k: v for k, v in flat.items() if k not in unread}


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_a_rendered_recipe_gives_its_snapshot_values(name, tmp_path):
    # Every value the run reads; a key the task does not read (a BPE's vocab_size beside a pretrained
    # tokenizer) takes the defaults, which are the default recipe's.
    write_params(name, tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    unread = unread_keys(params)
    want = read_values(SNAPSHOT[name], unread)
    assert read_values(params.model_dump(mode="json"), unread) == want
    assert read_values(parse_params(render_recipe(name)).model_dump(mode="json"), unread) == want


def test_the_committed_params_yaml_is_the_rendered_default_recipe():
    assert (REPO_ROOT / "params.yaml").read_text() == render_text(DEFAULT_RECIPE), \
        f"params.yaml is stale: run `hfpipe recipe {DEFAULT_RECIPE}` (or edit recipes/{DEFAULT_RECIPE}.yaml)"


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_a_recipe_lists_only_what_it_changes(name):
    raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text()) or {}
    values, defaults = load_recipe(name).model_dump(), Params().model_dump()
    for key, value in raw.items():
        for sub in value if isinstance(value, dict) else [None]:
            listed, default = (values[key], defaults[key]) if sub is None else (values[key][sub], defaults[key][sub])
            assert listed != default, f"recipes/{name}.yaml: {key}{'.' + sub if sub else ''} is the default; remove it"


def test_the_rendered_file_reads_back_as_written():
    for name in recipe_names():
        assert yaml.safe_load(render_text(name)) == render_recipe(name)


def test_the_rendered_file_names_its_recipe_and_the_command():
    text = render_text("mrpc")
    assert text.startswith("# Rendered from recipes/mrpc.yaml")
    assert "hfpipe recipe mrpc" in text.splitlines()[1]


def test_an_unknown_recipe_is_one_error_listing_the_recipes(capsys, tmp_path):
    with pytest.raises(PipelineError) as info:
        render_recipe("nope")
    assert str(info.value) == f"unknown recipe 'nope'; the recipes: {', '.join(recipe_names())}"
    assert main(["recipe", "nope", "--output", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n"
    assert not (tmp_path / "p.yaml").exists()


def test_the_command_writes_the_params_file(capsys, tmp_path):
    out = tmp_path / "params.yaml"
    assert main(["recipe", "sentiment", "--output", str(out)]) == 0
    assert out.read_text() == render_text("sentiment")
    assert "recipe sentiment written" in capsys.readouterr().out


def test_a_dvc_exp_run_edit_of_the_rendered_file_still_loads(tmp_path):
    # dvc exp run -S rewrites params.yaml with its own YAML dumper (unquoted no, key order kept)
    raw = yaml.safe_load(render_text("mrpc"))
    raw["lr"] = 3e-4
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False).replace("'no'", "no"))
    p = load_params(path)
    assert p.lr == 3e-4 and p.train.mixed_precision == "no"
