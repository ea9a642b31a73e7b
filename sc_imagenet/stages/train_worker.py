"""One process of the `train` stage's distributed run; `torchrun` starts `train.processes` of these.

    python -m torch.distributed.run --standalone --nproc_per_node=N -m sc_imagenet.stages.train_worker SPEC.json

SPEC (written by the `train` stage): the resolved build config, the single_instance manifest
folder, the data root, the checkpoint folder, an optional backbone checkpoint and where rank 0
writes the result (checkpoint path, steps, log rows). NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sc_imagenet.config import BuildConfig
from sc_imagenet.devices import resolve_device
from sc_imagenet.stages.train import train_data_from_manifest
from sc_imagenet.train.loop import train_generator


def main(argv: list[str] | None = None) -> int:
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    cfg = BuildConfig.model_validate(spec["config"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.train.device)
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        data = train_data_from_manifest(Path(spec["single_instance_dir"]), Path(spec["data_root"]),
                                        cfg.train.foreground)
        ckpt = Path(spec["backbone_checkpoint"]) if spec.get("backbone_checkpoint") else None
        result = train_generator(cfg.train, cfg.seed, data, Path(spec["ckpt_dir"]), ckpt,
                                 log=print if dist.get_rank() == 0 else (lambda m: None), device=device)
        # every rank's own final parameters, summed: equal across ranks iff DDP kept them in sync
        sums: list[float | None] = [None] * dist.get_world_size()
        dist.all_gather_object(sums, result.param_checksum)
        if dist.get_rank() == 0:
            Path(spec["result"]).write_text(json.dumps({
                "checkpoint": str(result.checkpoint), "steps": result.steps, "rows": result.rows,
                "resumed_from": result.resumed_from, "world_size": dist.get_world_size(),
                "param_checksums": sums}))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
