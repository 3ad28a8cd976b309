"""Class names of a dataset, for printing predictions: from a labels file or the configured dataset.

* ``--labels FILE``: a ``.json`` of ``{name: id}`` (the SSv2 labels file) or a list of names; a ``.csv``
  annotation list (Kinetics layout, ``folder/clip.mp4 label``) whose clips sit in one folder per class;
  any other text file: one class name per line, line ``i`` naming class ``i``.
* synth: the generator's class names; ssv2: ``something-something-v2-labels.json`` in
  DATA.PATH_TO_DATA_DIR; kinetics: the class folders of the training csv (``train.csv``).

A class with no name is called ``class_<id>``.
"""

from __future__ import annotations

import json
import os

from fvcore.common.config import CfgNode

from .kinetics import read_csv_annotations
from .ssv2 import LABELS_FILE


def _from_json(path: str) -> dict[int, str]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict):
        return {int(idx): str(name) for name, idx in data.items()}
    if isinstance(data, list):
        return dict(enumerate(str(n) for n in data))
    raise ValueError(f"{path}: expected {{name: id}} or a list of names, got {type(data).__name__}")


def names_from_csv(path: str, separator: str = "") -> dict[int, str]:
    """Class names of a Kinetics-style list from each clip's parent folder; ValueError if a label maps to
    two folders or the clips are not in class folders."""
    names: dict[int, str] = {}
    for video, label in read_csv_annotations(path, separator):
        folder = os.path.basename(os.path.dirname(video))
        if not folder:
            raise ValueError(f"{path}: clip {video!r} is not in a class folder; pass --labels")
        if names.setdefault(label, folder) != folder:
            raise ValueError(f"{path}: label {label} is in folders {names[label]!r} and {folder!r}")
    return names


def read_labels_file(path: str) -> dict[int, str]:
    """{id: name} from a labels file (see the module docstring for the formats)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file {path} not found")
    if path.endswith(".json"):
        return _from_json(path)
    if path.endswith(".csv"):
        return names_from_csv(path)
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return dict(enumerate(lines))


def dataset_class_names(cfg: CfgNode) -> dict[int, str]:
    """{id: name} of the configured TEST.DATASET, or {} when its annotation files do not name classes."""
    root = cfg.DATA.PATH_TO_DATA_DIR
    name = cfg.TEST.DATASET
    if name == "synth":
        from .synth import CLASS_NAMES

        return dict(enumerate(CLASS_NAMES))
    if name == "ssv2":
        path = os.path.join(root, LABELS_FILE)
        return _from_json(path) if os.path.isfile(path) else {}
    csv = os.path.join(root, "train.csv")
    if not os.path.isfile(csv):
        return {}
    try:
        return names_from_csv(csv, cfg.DATA.PATH_LABEL_SEPARATOR)
    except ValueError:
        return {}


def class_names(cfg: CfgNode, labels_file: str | None = None) -> list[str]:
    """MODEL.NUM_CLASSES names, from ``labels_file`` if given, else from the dataset; gaps ``class_<id>``."""
    names = read_labels_file(labels_file) if labels_file else dataset_class_names(cfg)
    return [names.get(i, f"class_{i}") for i in range(cfg.MODEL.NUM_CLASSES)]
