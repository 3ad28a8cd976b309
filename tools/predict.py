#!/usr/bin/env python
"""Top-k class names for video files with a trained model, under the config's test protocol.

    python tools/predict.py --cfg C --checkpoint K FILE_OR_FOLDER... [--topk 5] [--views T S]
        [--labels F] [--json OUT.jsonl] [--visualize DIR] [--opts KEY VALUE ...]

Each file is decoded, cropped and viewed as a test video of the config (``--views T S`` overrides
TEST.NUM_ENSEMBLE_VIEWS and TEST.NUM_SPATIAL_CROPS) and its views aggregated as testing does
(TEST.ENSEMBLE_METHOD). Folders are searched for video files. A missing or undecodable file is
reported on its own line and the others go on; the exit status is 1 if any file failed.
``--json`` writes one JSON line per file; ``--visualize DIR`` also writes each file's token maps
(as tools/visualize_tokens.py does) under DIR/<file name>/.
"""

import json
import os
import sys

from tqdm import tqdm

from stvideo.engine.predict import predictor_from_args, trained_model_parser


def main() -> None:
    parser = trained_model_parser(__doc__)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="video files or folders")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file")
    parser.add_argument(
        "--views", type=int, nargs=2, metavar=("T", "S"), help="temporal clips, spatial crops"
    )
    parser.add_argument("--json", help="write one JSON line per file here")
    parser.add_argument("--visualize", metavar="DIR", help="also write token maps of each file under DIR")
    args = parser.parse_args()
    predictor = predictor_from_args(args, views=args.views)
    out = open(args.json, "w") if args.json else None  # noqa: SIM115 (closed below)
    failed = 0
    try:
        for rec in predictor(args.inputs, topk=args.topk):
            if "error" in rec:
                failed += 1
                tqdm.write(f"{rec['path']}: FAILED: {rec['error']}")
            else:
                best = ", ".join(
                    f"{n} {s:.3f}" for n, s in zip(rec["top_names"], rec["top_scores"], strict=True)
                )
                tqdm.write(f"{rec['path']}: {best}")
                if args.visualize:
                    from stvideo.analysis.visualize import visualize_file

                    name = os.path.splitext(os.path.basename(rec["path"]))[0]
                    folder = os.path.join(args.visualize, name)
                    visualize_file(predictor.model, predictor.cfg, rec["path"], folder, None, predictor.names)
            if out:
                out.write(json.dumps(rec) + "\n")
    except ValueError as e:
        sys.exit(f"Error: {e}")
    finally:
        if out:
            out.close()
    if failed:
        print(f"{failed} file(s) could not be scored", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
