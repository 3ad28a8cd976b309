#!/usr/bin/env python
"""Token maps of a trained model on one video: what each token method keeps, merges or attends to.

    python tools/visualize_tokens.py --cfg C --checkpoint K --video FILE [--out DIR] [--layer L ...]
        [--size PX] [--opts KEY VALUE ...]

The video is decoded with the config's test protocol and the center view is shown. Writes
DIR/tokens.png (rows: the input and each map; columns: the clip's frames), DIR/tokens.mp4 (the same
as an animation) and DIR/maps.json. Which maps each arch has: docs/visualize.md. ``--layer`` picks the
attention layers of the plain ViT (0-based; default three spread over the depth).
"""

import json
import sys

from stvideo.analysis.visualize import visualize_file
from stvideo.data.video_dataset import DECODE_ERRORS
from stvideo.engine.predict import predictor_from_args, trained_model_parser


def main() -> None:
    parser = trained_model_parser(__doc__)
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--out", default="token_maps", help="output folder (default token_maps)")
    parser.add_argument("--layer", type=int, nargs="+", help="layers to show where the arch lets you choose")
    parser.add_argument("--size", type=int, default=96, help="panel height in pixels (default 96)")
    args = parser.parse_args()
    predictor = predictor_from_args(args)
    try:
        summary = visualize_file(
            predictor.model, predictor.cfg, args.video, args.out, args.layer, predictor.names, args.size
        )
    except (ValueError, *DECODE_ERRORS) as e:
        sys.exit(f"Error: {e}")
    print(json.dumps(summary, indent=2))
    if summary["note"]:
        print(summary["note"], file=sys.stderr)


if __name__ == "__main__":
    main()
