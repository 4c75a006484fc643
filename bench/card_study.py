"""Add study-level figures and the study threshold (training.studies.study_card) to a card made
before `brainscan train` recorded them.

    python bench/card_study.py models/brainscan.keras ../shared/data [--write]

Rebuilds the model's final split from its card (training.rebuild: the same images, the same
split, its test figures checked equal), groups the validation and test parts' slices by subject
(the recipe's subject pattern: `lgg-flair`'s patients; images without one are left out), tunes
the study threshold on the validation part's studies (the highest that keeps every one with a
tumour flagged, never above the slice threshold) and scores the test part's. Prints the entry;
`--write` puts it in the card, with a note saying how it was made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from card_args import card_parser, command_line  # noqa: E402


def main() -> None:
    parser = card_parser(__doc__)
    parser.add_argument("--write", action="store_true", help="put the entry in the card")
    args = parser.parse_args()

    from training.backend import import_backend

    import_backend()
    from training.card import card_path_for
    from training.rebuild import RebuildError, rebuild_final_split
    from training.scorer import Scorer
    from training.studies import study_card

    scorer = Scorer.load(args.model)
    try:
        rebuilt = rebuild_final_split(scorer, args.data, exclude=args.exclude)
    except RebuildError as exc:
        sys.exit(str(exc))
    data = rebuilt.data
    entry = study_card(
        data.subjects,
        data.loaded.labels,
        rebuilt.task,
        rebuilt.val_probs,
        rebuilt.test_probs,
        scorer.threshold,
    )
    print(json.dumps(entry, indent=2))
    if entry is None:
        sys.exit("no image of this data has a subject: there is no study to measure")
    if args.write:
        card = scorer.card
        card.study = entry
        card.notes.append(
            f"study: added afterwards by `{command_line('card_study.py', args, '--write')}` "
            "(the card's split rebuilt, its test figures checked equal)"
        )
        card.save(card_path_for(args.model))
        print("written: the card's study")


if __name__ == "__main__":
    main()
