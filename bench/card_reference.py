"""Add the score reference (training.drift) to a card made before cards carried one.

    python bench/card_reference.py models/brainscan.keras ../shared/data --exclude lgg-flair

`brainscan train` now stores the histogram of the model's scores on its held-out split and the
share flagged (the card's `reference`), against which the service measures score shift. A model
trained before has none: this rebuilds its held-out split from the card (the same images, checked
by the card's data fingerprint; the split drawn by its recipe's seed), scores it with the model,
checks that the figures equal the card's own test figures (so it is the same split and the same
model), and writes the reference into the card, with a note saying how it was made.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from card_args import card_parser, command_line  # noqa: E402


def main() -> None:
    parser = card_parser(__doc__)
    args = parser.parse_args()

    from training.backend import import_backend

    import_backend()
    from training.card import card_path_for
    from training.drift import reference
    from training.rebuild import RebuildError, rebuild_final_split
    from training.scorer import Scorer

    scorer = Scorer.load(args.model)
    card = scorer.card
    try:
        probs = rebuild_final_split(scorer, args.data, exclude=args.exclude).test_probs
    except RebuildError as exc:
        sys.exit(str(exc))
    card.reference = reference(probs, card.threshold, "test")
    card.notes.append(
        f"reference: added afterwards by `{command_line('card_reference.py', args)}` "
        "(the card's test split rebuilt, its figures checked equal)"
    )
    card.save(card_path_for(args.model))
    print(f"reference of {len(probs)} test images written: {card.reference}")


if __name__ == "__main__":
    main()
