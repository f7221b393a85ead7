"""The `hfpipe` command (console script): one subcommand per tool, so later ones fit beside it.

    hfpipe compare [RUN ...] [--md | --json]     seed-aware comparison of dvc experiments
"""

from __future__ import annotations

import argparse
import sys

from hfpipe import compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfpipe", description="hfpipe's command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare.add_arguments(commands.add_parser(
        "compare", help="is experiment B better than A, or is that seed noise?", description=compare.DESCRIPTION,
        epilog=compare.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
