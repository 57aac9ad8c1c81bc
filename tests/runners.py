"""Runner factories for executor tests: each trial does what its configuration says."""

from __future__ import annotations

import os
import time

from leanfit.train.trainer import TrainResult


def scripted_runner(fail_start: bool = False):
    if fail_start:
        raise RuntimeError("cannot load the dataset")
    import leanfit.execute.local as local

    # the executor module imports torch: imported in another process means by the fork server
    torch_preloaded = os.getpid() != local.IMPORTED_IN

    def run(spec):
        action = spec.config.get("action", "ok")
        if action == "crash":
            os._exit(9)  # as an out-of-memory kill or a segfault would
        if action == "hang":
            time.sleep(3600)
        if action == "raise":
            raise ValueError("a bug in this configuration")
        if action == "env":
            return TrainResult(
                "ok", reason=os.environ.get(spec.config.get("variable", "CUDA_VISIBLE_DEVICES"))
            )
        if action == "preloaded":
            return TrainResult("ok", reason=str(torch_preloaded))
        if action == "sleep":
            time.sleep(float(spec.config["seconds"]))
        return TrainResult("ok", history=[{"epoch": spec.epochs, "val_accuracy": 0.5}], params=10)

    return run
