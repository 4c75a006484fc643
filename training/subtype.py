"""An auxiliary tumour-type head for training only (multi-task learning; docs/model.md, experiment 33).

The screening label is binary, but most training tumours also carry their type in their folder
(glioma, meningioma, pituitary), and the three look unlike each other: intra-axial masses, masses
on the meninges, a lesion at the sella. Asking the network to tell them apart as well, from the
same pooled features, gives it a reason to learn what each tumour looks like rather than one
cue shared by every tumour slice of a source. The head is dropped after training: the served
network, its speed and its output are the plain binary ones. Tumours of unknown type (`yes`
folders, a labels.csv) weigh 0 in this head's loss; clear slices are its class 0.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training.augment import AugmentedBatches
from training.dataset import NEGATIVE_FOLDERS
from training.model import FEATURES

SUBTYPES = ("none", "glioma", "meningioma", "pituitary")  # the head's classes, in order
UNKNOWN = -1  # a tumour of unknown type, or an unlabelled slice: no loss in the head


def subtype_labels(categories: np.ndarray) -> np.ndarray:
    """Each image's class index in SUBTYPES from the folder its label came from, else UNKNOWN."""
    index = {name: i for i, name in enumerate(SUBTYPES)}
    index.update({name: 0 for name in NEGATIVE_FOLDERS})
    return np.array([index.get(str(c).lower(), UNKNOWN) for c in categories], dtype=np.int64)


def subtype_model(net: keras.Model) -> keras.Model:
    """A training graph over `net`'s own layers (weights shared) with two outputs: "tumour"
    (net's output) and "subtype" (a softmax over SUBTYPES read from the pooled features)."""
    features = net.get_layer(FEATURES).output
    subtype = layers.Dense(len(SUBTYPES), activation="softmax", name="subtype", dtype="float32")(features)
    return keras.Model(net.input, {"tumour": net.output, "subtype": subtype}, name=f"{net.name}_with_subtype")


class SubtypeBatches(keras.utils.PyDataset):
    """`labelled`'s batches with each slice's tumour type added as a second target; slices of
    unknown type weigh 0 in the type loss. Yields (x, targets, weights) dicts for `subtype_model`."""

    def __init__(self, labelled: AugmentedBatches, subtypes: np.ndarray, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if len(subtypes) != len(labelled.x):
            raise ValueError(f"{len(subtypes)} tumour types for {len(labelled.x)} training slices")
        if labelled.mixup > 0 or labelled.lesions > 0:
            raise ValueError(
                "the tumour-type head does not combine with mixup or synthetic lesions "
                "(their slices have no single type)"
            )
        self.labelled, self.subtypes = labelled, subtypes

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        x, y, w = self.labelled[index]
        known = self.subtypes[self.labelled.batch_indices(index)]
        targets = {"tumour": y, "subtype": np.maximum(known, 0).astype(np.float32)}
        weights = {"tumour": w, "subtype": (known != UNKNOWN).astype(np.float32)}
        return x, targets, weights

    def on_epoch_end(self) -> None:
        self.labelled.on_epoch_end()
