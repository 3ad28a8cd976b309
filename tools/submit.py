#!/usr/bin/env python
"""Submit training to SLURM through submitit: one task per GPU, the same code path as run_net.py.

    python tools/submit.py --cfg configs/k400/stvit_b.yaml --nodes 4 --ngpus 8 --partition P \
        [--timeout MIN --mem GB --constraint C --account A --qos Q --job-dir DIR] [KEY VALUE ...]

``--local`` runs the job through submitit's local executor on this machine instead (CPU: gloo).
Every setting is checked before submission; see docs/launch.md.
"""

import sys

from stvideo.config import ConfigError
from stvideo.launch.submitit import LaunchError, describe, parse_submit_args, prepare, submit


def main(argv: list[str] | None = None) -> int:
    """Parse, check, submit, print the job id and log folder; with --wait (or --local) wait for the result."""
    args = parse_submit_args(argv)
    try:
        cfg, spec = prepare(args)
    except (ConfigError, LaunchError, FileNotFoundError) as e:
        print(f"Not submitted: {e}", file=sys.stderr)
        return 2
    job = submit(cfg, spec)
    print(describe(cfg, spec, job), flush=True)
    if not (args.wait or spec.local):
        return 0
    results = job.results()
    for task in results:
        print(f"  rank {task['rank']}/{task['world_size']} finished on {task['node_name']}", flush=True)
    print(f"Job {job.job_id} finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
