#!/usr/bin/env python
"""Generate the synthetic dataset (stvideo.data.synth) into DATA.PATH_TO_DATA_DIR.

Usage: ``python tools/make_synth.py [--cfg FILE] DATA.PATH_TO_DATA_DIR DIR [SYNTH.KEY VALUE ...]``.
The same call run_net.py makes on first use; an existing matching dataset is left as it is.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from stvideo.config import load_config, parse_args
from stvideo.data.synth import META_FILE, NUM_CLASSES, SynthDatasetError, ensure_synthetic_dataset


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the standard stvideo command line, generate (or verify) the dataset, print its parameters."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv, description=__doc__.splitlines()[0])
    # The benchmark has a fixed class count; do not make users pass MODEL.NUM_CLASSES just to generate.
    cfg = load_config(args.cfg_file, ["MODEL.NUM_CLASSES", str(NUM_CLASSES), *args.opts])
    if not cfg.DATA.PATH_TO_DATA_DIR:
        print("error: give the output folder as DATA.PATH_TO_DATA_DIR DIR", file=sys.stderr)
        return 2
    try:
        generated = ensure_synthetic_dataset(cfg)
    except SynthDatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    root = Path(cfg.DATA.PATH_TO_DATA_DIR)
    meta = json.loads((root / META_FILE).read_text())
    print(f"{'generated' if generated else 'already present'}: {root}")
    print(json.dumps(meta["params"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
