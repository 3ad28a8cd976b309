#!/usr/bin/env python
"""Token maps of a trained model on one video: what each token method keeps, merges or attends to.

    python tools/visualize_tokens.py --cfg C --checkpoint K --video FILE [--out DIR] [--layer L ...]
        [--opts KEY VALUE ...]

The video is decoded with the config's test protocol and the center view is shown. Writes
DIR/tokens.png (rows: the input and each map; columns: the clip's frames), DIR/tokens.mp4 (the same
as an animation) and DIR/maps.json. Which maps each arch has: docs/visualize.md. ``--layer`` picks the
attention layers of the plain ViT (0-based; default three spread over the depth).
"""

import argparse
import json
import sys

from stvideo.config import ConfigError, load_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config file of the model")
    parser.add_argument("--checkpoint", required=True, help="stvideo checkpoint (.pyth) with the weights")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--out", default="token_maps", help="output folder (default token_maps)")
    parser.add_argument("--layer", type=int, nargs="+", help="layers to show where the arch lets you choose")
    parser.add_argument("--labels", help="class names: labels json, Kinetics-style csv or one name per line")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args()
    try:
        cfg = load_config(args.cfg_file, args.opts)
    except (ConfigError, FileNotFoundError) as e:
        sys.exit(f"Config error: {e}")
    from stvideo.analysis.visualize import visualize_file
    from stvideo.data.video_dataset import DECODE_ERRORS
    from stvideo.engine.predict import Predictor
    from stvideo.utils.checkpoint_io import CheckpointError

    try:
        predictor = Predictor(cfg, args.checkpoint, labels=args.labels)
        summary = visualize_file(
            predictor.model, predictor.cfg, args.video, args.out, args.layer, predictor.names
        )
    except (CheckpointError, ValueError, *DECODE_ERRORS) as e:
        sys.exit(f"Error: {e}")
    print(json.dumps(summary, indent=2))
    if summary["note"]:
        print(summary["note"], file=sys.stderr)


if __name__ == "__main__":
    main()
