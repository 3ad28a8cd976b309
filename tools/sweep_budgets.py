#!/usr/bin/env python
"""Training-free accuracy-cost curves: token methods applied to one trained ViT at FLOP budgets.

    python tools/sweep_budgets.py --cfg configs/synth/vit_t.yaml --checkpoint RUN/checkpoints/last.pyth
        [--methods tome,rlt,evovit,random_drop,uniform_pool] [--budgets 0.8,0.6,0.45,0.35]
        [--trained NAME=CONFIG.yaml:test_metrics.json[,...] ...] [--out output/arena/sweep] [KEY VALUE ...]

Budget = target fraction of the ViT's GFLOPs per view; each method's knob is searched with the
fvcore FLOP counter and the closest value is used (the achieved fraction is reported). Every model is
tested with the config's multi-view protocol and timed side by side on CPU. Writes OUT.json, OUT.md
(table) and OUT.png (top-1 vs GFLOPs and vs clips/s). See stvideo/analysis/arena.py and docs/arena.md.
"""

from stvideo.analysis.arena import main

if __name__ == "__main__":
    main(description=__doc__)
