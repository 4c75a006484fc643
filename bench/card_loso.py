"""Add leave-one-source-out figures (issue 35) to a card trained without them: for each source,
the card's own recipe fitted on the other sources, its threshold tuned by the recipe's policy on
their validation part (no label of the left-out source is used), and the left-out source scored.

    python bench/card_loso.py models/brainscan.keras ../shared/data --workers 2 [--write]

The data must be the images the model was trained on (the card's data fingerprint is checked).
The fits are those `brainscan train --leave-one-source-out` runs beside the final model, entry
for entry (training.crossval.leave_one_source_out_tasks, summarise_cross_source), run here on
their own for a model already shipped. Prints the entry; `--write` puts it in the card under
metrics.leave_one_source_out, with a note saying how it was made.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from card_args import card_parser, command_line  # noqa: E402


def main() -> None:
    parser = card_parser(__doc__)
    parser.add_argument("--workers", type=int, default=1, help="fits side by side, in processes")
    parser.add_argument("--write", action="store_true", help="put the entry in the card")
    args = parser.parse_args()

    from training.backend import import_backend

    import_backend()
    from training.card import ModelCard, card_path_for
    from training.crossval import HeldOutRuns, leave_one_source_out_tasks, summarise_left_out
    from training.prepare import prepare
    from training.recipes import Recipe

    card_path = card_path_for(args.model)
    card = ModelCard.load(card_path)
    recipe = Recipe.from_dict(card.recipe)
    data = prepare(args.data, recipe, exclude=args.exclude)
    if data.fingerprint != card.data["fingerprint"]:
        sys.exit("these are not the images the model was trained on (the data fingerprints differ)")
    started = time.perf_counter()
    runs = HeldOutRuns(data, recipe, args.workers)
    runs.start(leave_one_source_out_tasks(data, recipe=recipe))
    entry = summarise_left_out(data, runs.results())
    print(json.dumps(entry, indent=2))
    print(f"{len(entry)} fits in {(time.perf_counter() - started) / 60:.1f} min")
    if args.write:
        card.metrics["leave_one_source_out"] = entry
        card.notes.append(
            "leave_one_source_out: added afterwards by "
            f"`{command_line('card_loso.py', args, f'--workers {args.workers}', '--write')}` "
            "(the card's recipe fitted without each source in turn, on the card's data)"
        )
        card.save(card_path)
        print("written: the card's leave_one_source_out")


if __name__ == "__main__":
    main()
