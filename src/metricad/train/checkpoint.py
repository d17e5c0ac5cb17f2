"""Training checkpoints: everything needed to continue a run exactly, in one safetensors file.

Weights, loss parameters (e.g. CosFace's class centres), optimizer state and the RNG states are tensors; epoch,
history and the optimizer's hyper-parameters go into the file's JSON metadata. One file, written atomically,
so a kill at any moment leaves either the previous checkpoint or the new one, never a mix. Nothing is pickled:
``torch.save`` would be simpler, but loading a pickle runs arbitrary code, and run files must be safe to open.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from metricad.files import atomic_write

_META_KEY = "metricad_checkpoint"


@dataclass
class TrainingState:
    """What a checkpoint restores besides the tensors it loads in place."""

    epoch: int  # epochs completed
    history: list


def save_checkpoint(path: str | os.PathLike, epoch: int, history: list, model: nn.Module, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"criterion.{k}": v for k, v in criterion.state_dict().items()})
    optim = optimizer.state_dict()
    scalars = {}
    for param_id, param_state in optim["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"epoch": epoch, "history": history, "param_groups": optim["param_groups"], "scalars": scalars}
    return atomic_write(path, lambda p: save_file(tensors, p, metadata={_META_KEY: json.dumps(meta)}))


def load_checkpoint(path: str | os.PathLike, model: nn.Module, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> TrainingState:
    """Load a checkpoint into the given (freshly built) objects; clear errors for a file that does not fit."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a metricad training checkpoint (no {_META_KEY} metadata)") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."), strict=True)
        criterion.load_state_dict(part("criterion."), strict=True)
        state: dict = {}
        for key, value in part("optimizer.").items():
            param_id, name = key.split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
        for key, value in meta["scalars"].items():
            param_id, name = key.split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: does not match this run's model, loss or optimizer: {exc}") from exc
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return TrainingState(epoch=int(meta["epoch"]), history=list(meta["history"]))
