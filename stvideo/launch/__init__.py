"""Launching stvideo jobs on clusters: SLURM through submitit (``stvideo.launch.submitit``)."""
