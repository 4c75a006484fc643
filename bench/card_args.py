"""What the bench/card_*.py scripts share: the arguments naming a model and the data it was
trained on, and the command line a card's note records when one of them adds to the card."""

from __future__ import annotations

import argparse
from pathlib import Path


def card_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the model, the data folders and the sources the model was trained without."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model", type=Path, help="a .keras file with its card beside it")
    parser.add_argument("data", type=Path, nargs="+", help="the folders it was trained on")
    parser.add_argument("--exclude", action="append", default=[], help="sources the model did not see")
    return parser


def command_line(script: str, args: argparse.Namespace, *more: str) -> str:
    """`python bench/SCRIPT MODEL DATA... [--exclude E]... MORE...`, as a card's note quotes it."""
    excluded = [f"--exclude {e}" for e in args.exclude]
    return " ".join(["python", f"bench/{script}", str(args.model), *map(str, args.data), *excluded, *more])
