#!/usr/bin/env python3
"""Reads maintcast's TensorBoard event files with TensorBoard's own reader and checks them.

    python3 -m venv /tmp/tb && /tmp/tb/bin/pip install tensorboard
    /tmp/tb/bin/python scripts/check_tensorboard.py SWEEP_DIR/runs

Every directory under the given paths that holds an events.out.tfevents.* file must have, per epoch,
the scalars train/loss, val/mae, val/rmse, lr and elapsed_s with steps 1..n, and the run's settings as
a text summary. Exits non-zero on the first run that does not.
"""
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

SCALARS = ["train/loss", "val/mae", "val/rmse", "lr", "elapsed_s"]


def check_run(run_dir):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    missing = [t for t in SCALARS if t not in tags["scalars"]]
    if missing:
        raise SystemExit(f"{run_dir}: missing scalars {missing}; has {tags['scalars']}")
    steps = [e.step for e in acc.Scalars("train/loss")]
    if steps != list(range(1, len(steps) + 1)):
        raise SystemExit(f"{run_dir}: train/loss steps {steps} are not 1..n")
    for t in SCALARS:
        if [e.step for e in acc.Scalars(t)] != steps:
            raise SystemExit(f"{run_dir}: {t} has other steps than train/loss")
    if "settings" not in acc.PluginTagToContent("text"):
        raise SystemExit(f"{run_dir}: no text summary 'settings'")
    text = tensor_util.make_ndarray(acc.Tensors("settings")[0].tensor_proto).item().decode()
    if "optimizer" not in text:
        raise SystemExit(f"{run_dir}: settings text does not name the optimizer: {text[:200]}")
    mae = [round(e.value, 3) for e in acc.Scalars("val/mae")]
    print(f"ok {run_dir}: {len(steps)} epochs, val/mae {mae}")


def main(paths):
    runs = sorted({root for p in paths for root, _, files in os.walk(p)
                   if any(".tfevents." in f for f in files)})
    if not runs:
        raise SystemExit(f"no event files under {paths}")
    for r in runs:
        check_run(r)
    print(f"{len(runs)} run(s) read by TensorBoard's EventAccumulator")


if __name__ == "__main__":
    main(sys.argv[1:] or ["."])
