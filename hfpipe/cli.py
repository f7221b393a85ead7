"""The `hfpipe` command (console script): one subcommand per tool, so later ones fit beside it.

    hfpipe compare [RUN ...] [--md | --json]     seed-aware comparison of dvc experiments
    hfpipe update [dataset|tokenizer|model ...] [--dry-run]
                                                 move hub.lock.yaml's commits to the revisions' newest
    hfpipe recipe NAME [--output PATH]           write a recipe's full params.yaml (defaults + its changes)
    hfpipe deps [--fix]                          each stage's code deps from its imports, against dvc.yaml's
"""

from __future__ import annotations

import argparse
import sys

from hfpipe import compare
from hfpipe.hub import INPUTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfpipe", description="hfpipe's command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare.add_arguments(commands.add_parser(
        "compare", help="is experiment B better than A, or is that seed noise?", description=compare.DESCRIPTION,
        epilog=compare.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
    update = commands.add_parser(
        "update", help="re-resolve the Hub inputs' revisions and move hub.lock.yaml to their newest commits",
        description="Resolve each Hub input's revision (params.yaml: dataset.revision, tokenizer.revision, "
                    "model.revision; null: main) on the Hub now and write the commits to hub.lock.yaml; "
                    "`dvc repro` then reruns exactly the stages that read a moved one. Without this, every "
                    "repro loads the locked commits, online or offline.")
    update.add_argument("inputs", nargs="*", choices=[[], *INPUTS], metavar="INPUT",
                        help=f"which inputs ({', '.join(INPUTS)}; default: all three)")
    update.add_argument("--dry-run", action="store_true", help="list what would move; write nothing")
    update.set_defaults(func=run_update)
    recipe = commands.add_parser(
        "recipe", help="write the full params.yaml of a recipe (recipes/NAME.yaml over the defaults)",
        description="Render recipes/NAME.yaml (what the recipe changes) over hfpipe/params.py's defaults into a "
                    "full, validated params file; then dvc repro runs it.")
    recipe.add_argument("name", metavar="NAME", help="a recipe: the name of a file in recipes/ (code-lm, mrpc, ...)")
    recipe.add_argument("--output", default="params.yaml", help="where to write it (default: params.yaml)")
    recipe.set_defaults(func=run_recipe)
    deps = commands.add_parser(
        "deps", help="each stage's code deps, read from its imports, against dvc.yaml's",
        description="Print each stage's code deps (the project files `python -m stages.NAME` runs, read from "
                    "the imports) and what dvc.yaml lacks or lists extra; exit 1 if they differ.")
    deps.add_argument("--fix", action="store_true", help="rewrite dvc.yaml's code deps to the computed ones")
    deps.set_defaults(func=run_deps)
    args = parser.parse_args(argv)
    return args.func(args)


def run_update(args) -> int:
    from hfpipe.hub import LOCK_FILE, update_lock
    from hfpipe.io import PipelineError
    from hfpipe.params import load_params

    def short(entry) -> str:
        return f"{entry['repo']} at {entry['revision'] or 'main'}: {entry['commit']}" if entry else "not from the Hub"

    try:
        moved = update_lock(load_params(), tuple(args.inputs) or INPUTS, dry_run=args.dry_run)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, old, new in moved:
        if old and new and old["repo"] == new["repo"] and old["revision"] == new["revision"]:
            print(f"{key}: {new['repo']} at {new['revision'] or 'main'}: {old['commit']} -> {new['commit']}")
        else:
            print(f"{key}: {short(old)} -> {short(new)}")
    verb = "would move" if args.dry_run else "moved"
    print(f"{len(moved)} input(s) {verb}" + ("" if args.dry_run or not moved else
                                               f"; {LOCK_FILE} written: dvc repro reruns the stages that read them"))
    return 0


def run_recipe(args) -> int:
    from hfpipe.io import PipelineError
    from hfpipe.recipes import write_params

    try:
        path = write_params(args.name, args.output)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{path}: recipe {args.name} written; dvc repro runs it")
    return 0


def run_deps(args) -> int:
    from hfpipe.io import PipelineError
    from hfpipe.stage_deps import DVC_YAML, check_dvc_yaml, fix_dvc_yaml

    try:
        if args.fix:
            for stage, (added, removed) in fix_dvc_yaml().items():
                print(f"{stage}: " + ", ".join([*(f"+{d}" for d in added), *(f"-{d}" for d in removed)]))
            return 0
        report = check_dvc_yaml()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for stage, (computed, missing, extra) in report.items():
        print(f"{stage}:")
        print("".join(f"  {'+' if d in missing else ' '} {d}\n" for d in computed)
              + "".join(f"  - {d}\n" for d in extra), end="")
    differ = [stage for stage, (_, missing, extra) in report.items() if missing or extra]
    if differ:
        print(f"{DVC_YAML} differs in {', '.join(differ)} (+ missing, - never run): hfpipe deps --fix rewrites it")
        return 1
    print(f"{DVC_YAML}'s code deps are what the stages import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
