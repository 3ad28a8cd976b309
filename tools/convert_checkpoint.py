#!/usr/bin/env python
"""Convert a sharded (TRAIN.STRATEGY fsdp) checkpoint folder into one ``.pyth`` file.

    python tools/convert_checkpoint.py --src OUTPUT_DIR/checkpoints/last.dcp --out model.pyth [--cfg FILE ...]

The model is rebuilt from the config saved in the checkpoint (or ``--cfg`` with overrides) and the
full, unsharded weights are written as ``{"model", "epoch", "cfg"}``: the file works as
TEST.CHECKPOINT_FILE_PATH, TRAIN.CHECKPOINT_FILE_PATH and MODEL.PRETRAINED. Runs in one process on any
machine, whatever world size wrote the checkpoint.
"""

from __future__ import annotations

import sys

from fvcore.common.config import CfgNode

from stvideo.config import ConfigError, get_cfg, load_config
from stvideo.config.load import build_arg_parser, parse_with_overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser(__doc__)
    parser.add_argument("--src", required=True, help="sharded checkpoint folder (e.g. checkpoints/last.dcp)")
    parser.add_argument("--out", required=True, help="the .pyth file to write")
    args = parse_with_overrides(parser, argv)
    from stvideo.engine import sharded_checkpoint as sharded
    from stvideo.models import MODEL_REGISTRY
    from stvideo.utils.checkpoint_io import CheckpointError

    try:
        state = sharded.check(args.src)
        if args.cfg_file or args.opts:
            cfg = load_config(args.cfg_file, args.opts)
        else:  # the run's own config, as the checkpoint recorded it
            cfg = get_cfg()
            cfg.merge_from_other_cfg(CfgNode.load_cfg(state["cfg"]))
        model = MODEL_REGISTRY.get(cfg.MODEL.ARCH)(cfg)
        written = sharded.to_pyth(args.src, model, args.out)
    except (ConfigError, FileNotFoundError) as e:
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"Checkpoint error: {e}", file=sys.stderr)
        return 2
    n = sum(t.numel() for t in written["model"].values())
    print(f"Wrote {args.out}: {cfg.MODEL.ARCH}, epoch {written['epoch']}, {n / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
