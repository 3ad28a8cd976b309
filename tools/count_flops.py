#!/usr/bin/env python
"""FLOPs, parameters, throughput and peak memory of one or more configured models, side by side.

    python tools/count_flops.py --cfg configs/k400/stvit_b.yaml [--compare configs/k400/vit_b.yaml ...]
        [KEY VALUE ...] [--json OUT.json] [--batch-size 1] [--warmup 5] [--iters 20]
        [--train-memory] [--plot OUT.png --results stvit_b=out/test_metrics.json ...]

KEY VALUE overrides apply to every model; each is measured on one test view of its config. Each
model is built with random weights (MODEL.PRETRAINED is ignored: weights change neither FLOPs
nor speed). FLOPs are counted with fvcore at batch 1 (one view) in eval mode; see
stvideo/analysis/flops.py for the convention, stvideo/analysis/speed.py and memory.py for the
timing and memory protocols. With --compare, ratios are against the first model (the --cfg one).
"""

from stvideo.analysis.report import main

if __name__ == "__main__":
    main(description=__doc__)
