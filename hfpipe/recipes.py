"""Recipes: each file in recipes/ lists only what it changes from the defaults in hfpipe.params;
`hfpipe recipe NAME` renders one into a full params.yaml.

The rendered file is a plain YAML file (DVC reads it, `dvc exp run -S lr=...` edits it): the recipe's
values over the defaults, validated by hfpipe.params, with every key the run reads, in the order
hfpipe.params declares them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hfpipe.io import PipelineError
from hfpipe.params import PARAMS_FILE, Params, parse_params, read_params

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = "code-lm"

# Read by every run, but written only when a recipe changes them: options params.yaml has never
# listed (DVC tracks whole sections, so a key added to one would rerun its stages).
QUIET_KEYS = ("tokenizer.revision", "model.revision", "model.peft", "dataset.data_files", "train.threads",
              "train.eval_strategy", "train.load_best_model_at_end", "train.metric_for_best_model")


def recipe_names(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(path.stem for path in recipes_dir.glob("*.yaml"))


def recipe_path(name: str, recipes_dir: Path = RECIPES_DIR) -> Path:
    path = recipes_dir / f"{name}.yaml"
    if not path.is_file():
        raise PipelineError(f"unknown recipe {name!r}; the recipes: {', '.join(recipe_names(recipes_dir))}")
    return path


def load_recipe(name: str, recipes_dir: Path = RECIPES_DIR) -> Params:
    """The recipe's differences over the defaults, validated."""
    path = recipe_path(name, recipes_dir)
    raw = yaml.safe_load(path.read_text())
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: must be a mapping of keys to values, got {type(raw).__name__}")
    return parse_params(raw, f"recipes/{path.name}")


def params_as_dict(params: Params) -> dict[str, Any]:
    """Every key the run reads (hfpipe.params.read_params; quiet ones only when not at their default),
    sections and keys in hfpipe.params' order."""
    defaults = Params().model_dump()
    return {name: ({key: value for key, value in section.items()
                    if not (f"{name}.{key}" in QUIET_KEYS and value == defaults[name][key])}
                   if isinstance(section, dict) else section)
            for name, section in read_params(params).items()}


def render_recipe(name: str, recipes_dir: Path = RECIPES_DIR) -> dict[str, Any]:
    """The full params of recipe `name`: the defaults with its changes."""
    params = load_recipe(name, recipes_dir)
    rendered = params_as_dict(params)
    # what is written must read back as the same params (nothing dropped that the run would miss)
    if parse_params(rendered, f"recipe {name} rendered").model_dump() != params.model_dump():
        raise PipelineError(f"recipe {name}: the rendered params do not read back as the recipe's")
    return rendered


def _yaml_value(value: Any) -> str:
    # one line: scalars as YAML writes them ('no' quoted), lists and mappings in flow style
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return text.removesuffix("\n...\n").strip()


def render_text(name: str, recipes_dir: Path = RECIPES_DIR) -> str:
    """params.yaml's text for recipe `name`: a header naming the recipe and the command, then the keys."""
    path = recipe_path(name, recipes_dir)
    comment = []
    for line in path.read_text().splitlines():  # the recipe's explanatory header
        if not line.startswith("#"):
            break
        comment.append(line)
    lines = [f"# Rendered from recipes/{path.name} (the defaults in hfpipe/params.py with the recipe's changes).",
             f"# Change the recipe and re-render: hfpipe recipe {name}   (one run: dvc exp run -S lr=...)", "#",
             *comment, ""]
    for key, value in render_recipe(name, recipes_dir).items():
        if isinstance(value, dict):
            lines += ["", f"{key}:", *(f"  {k}: {_yaml_value(v)}" for k, v in value.items())]
        else:
            lines.append(f"{key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def write_params(name: str, path: str | Path = PARAMS_FILE, recipes_dir: Path = RECIPES_DIR) -> Path:
    path = Path(path)
    path.write_text(render_text(name, recipes_dir))
    return path
