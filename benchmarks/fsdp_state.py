#!/usr/bin/env python
"""Per-rank parameter + AdamW state bytes under DDP and FSDP2 (TRAIN.STRATEGY), 2 real gloo ranks.

Each config's model is built on both ranks, wrapped by ``stvideo.engine.strategy.wrap_model`` (DDP, or
``fully_shard`` per block and on the root) and given its AdamW state (one ``step`` on zero gradients:
the state's size does not depend on the data, so no forward is needed). Rank 0 reports the bytes of
this rank's local shards (:func:`stvideo.engine.strategy.local_state_bytes`).

    python benchmarks/fsdp_state.py --cfg configs/k400/vit_b.yaml configs/k400/vit_l.yaml --out fsdp.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist

from stvideo.config import load_config
from stvideo.engine import strategy
from stvideo.models import build_model

MiB = 2**20


def _rank(rank: int, init: str, cfgs: list[str], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=600))  # fmt: skip
    torch.set_num_threads(1)
    rows = []
    for path in cfgs:
        for name in ("ddp", "fsdp"):
            cfg = load_config(path, ["TRAIN.STRATEGY", name, "MODEL.ACT_CHECKPOINT", "False"])
            torch.manual_seed(0)
            model = strategy.wrap_model(cfg, build_model(cfg), torch.device("cpu"))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()
            size = strategy.local_state_bytes(model, opt)
            rows.append({"config": path, "strategy": name, **{k: v / MiB for k, v in size.items()}})
            del model, opt
    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f, indent=2)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", nargs="+", required=True, help="config files to measure")
    parser.add_argument("--out", default="fsdp_state.json", help="JSON output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_rank, (os.path.join(tmp, "init"), args.cfg, args.out), nprocs=2)
    rows = json.load(open(args.out))
    print(
        f"{'config':32} {'strategy':8} {'params MiB':>10} {'AdamW MiB':>10} {'total MiB':>10} {'vs DDP':>7}"
    )
    for row in rows:
        total = row["params"] + row["optimizer"]
        ddp = next(r for r in rows if r["config"] == row["config"] and r["strategy"] == "ddp")
        ratio = total / (ddp["params"] + ddp["optimizer"])
        print(f"{row['config']:32} {row['strategy']:8} {row['params']:10.1f} {row['optimizer']:10.1f} "
              f"{total:10.1f} {ratio:7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
