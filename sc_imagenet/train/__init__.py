"""Training the cascaded generator: pair sampling, the loop, checkpoints, multi-GPU launch."""
