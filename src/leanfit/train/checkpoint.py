"""Checkpoints: written atomically, so a crash mid-write never leaves a half file behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` whole or not at all: into a file beside it, then renamed. It is
    serialised in memory first, so that a full disk raises OSError ENOSPC (torch.save's own
    writer said `RuntimeError: [enforce fail at inline_container.cc] unexpected pos 128 vs 0`),
    and the partial file is removed (it was left, filling the disk further)."""
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a write's error names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def load_checkpoint(path: str | Path, map_location=None) -> dict[str, Any]:
    """A checkpoint's state: tensors, numbers, strings and containers of them only
    (`weights_only`): a file in a work folder others can write to (a cluster's shared volume),
    or a path an MLflow tag names, is not unpickled as code."""
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_epochs(path: str | Path) -> int | None:
    """The epochs a checkpoint file holds; None where there is no file or it is not one of
    leanfit's checkpoints."""
    try:
        return int(load_checkpoint(path, map_location="cpu")["epoch"])
    except Exception:  # noqa: BLE001 - torch.load's errors on a foreign file vary
        return None
