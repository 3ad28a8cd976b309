#!/usr/bin/env python
"""Train then test a video model: ``python tools/run_net.py --cfg FILE [KEY VALUE ...]``.

Overrides may follow the config file directly or come after ``--opts`` (PySlowFast style).
For several processes on one machine use ``torchrun --nproc_per_node N tools/run_net.py ...``;
for SLURM use ``tools/submit.py``.
"""

import sys

from stvideo.config import ConfigError, load_config, parse_args


def main() -> None:
    args = parse_args(description=__doc__)
    try:
        cfg = load_config(args.cfg_file, args.opts)
    except (ConfigError, FileNotFoundError) as e:
        sys.exit(f"Config error: {e}")
    from stvideo.engine.run import run  # heavy imports only after the config is valid
    from stvideo.utils.checkpoint_io import CheckpointError

    try:
        run(cfg)
    except CheckpointError as e:
        sys.exit(f"Checkpoint error: {e}")


if __name__ == "__main__":
    main()
