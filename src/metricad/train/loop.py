"""Training the embedding: one readable loop, configured by a ``TrainConfig`` (``metricad.recipe``).

Under ``torchrun`` the same loop runs on every rank (``metricad.distributed``): every rank draws the same global
batches and augmentation from the same seeded generator and trains on its share of each; DistributedDataParallel
averages the gradients; rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from metricad import distributed
from metricad.data.defects import add_defect_classes
from metricad.data.negatives import add_shifted_negatives
from metricad.losses import build_loss, loss_entry
from metricad.losses.distributed import for_ranks
from metricad.models import create_model
from metricad.preprocessing import to_model_input
from metricad.recipe import TrainConfig
from metricad.train.checkpoint import load_checkpoint, save_checkpoint
from metricad.train.config import checked


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning-rate schedule and how often it steps: ``(scheduler, per_batch)``."""
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_milestones, config.lr_gamma), False
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps_per_epoch * config.epochs,
                                                   pct_start=0.1), True
    raise ValueError(f"lr_schedule must be 'step' or 'onecycle', got {config.lr_schedule!r}")


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def epoch_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The epoch's order of the training images. One process: a seeded permutation. Several ranks: each class's
    images permuted, then spread evenly through the epoch, so that every global batch holds each class in its
    share and ``distributed.local_batch`` can deal each rank the normal class and reference classes."""
    if distributed.world() == 1:
        return torch.randperm(len(labels), generator=generator)
    keys = torch.empty(len(labels))
    for c in labels.unique():
        members = torch.nonzero(labels == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        keys[members] = (torch.arange(len(members)) + torch.rand(1, generator=generator)) / len(members)
    return torch.argsort(keys, stable=True)


class TrainingStep(nn.Module):
    """The model and its loss as one module: DistributedDataParallel then synchronises both (a CosFace loss's
    class centres are parameters too)."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.model(x), y)


def _for_ranks(step: TrainingStep, config: TrainConfig, y_all: torch.Tensor, normal_label, device) -> nn.Module:
    """``step`` as every rank runs it: the loss gathering what it must, BatchNorm synchronised on GPUs (torch has
    no SyncBatchNorm for CPUs: there each rank normalises its own share), all wrapped in DDP."""
    if distributed.world() == 1:
        return step
    if normal_label is not None:  # epoch_order puts about batch_size * share of each class in every global batch
        normal = int(torch.sum(y_all == normal_label))
        for count, what in ((normal, "the normal class"), (len(y_all) - normal, "the reference classes")):
            if config.batch_size * count // len(y_all) < distributed.world():
                raise ValueError(f"a global batch of {config.batch_size} holds too few images of {what} to deal "
                                 f"each of {distributed.world()} ranks one: raise --batch-size")
    step.criterion = for_ranks(step.criterion, config.loss)
    if device.type == "cuda":
        step.model = nn.SyncBatchNorm.convert_sync_batchnorm(step.model)
    return nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)


@dataclass
class Training:
    """Everything one training run steps: the data as model input, the model, its loss, the optimisation, and the
    seeded generator that draws every epoch's order and augmentation (its state is checkpointed)."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_batch: bool  # the scheduler steps after every batch (else after every epoch)
    step_module: nn.Module  # model and loss as one module, DDP-wrapped under torchrun
    x_all: torch.Tensor
    y_all: torch.Tensor
    generator: torch.Generator
    steps: int  # batches per epoch


def train_embedding(config: TrainConfig, images: np.ndarray, labels: np.ndarray, device=None,
                    log_path: Path | None = None, progress: bool = True, normal_label: int | None = None,
                    return_loss: bool = False, checkpoint_path: Path | None = None, on_epoch_end=None):
    """Train a fresh model on ``images`` (uint8, N x H x W) with integer ``labels``; return it and per-epoch logs
    (and the trained loss module, whose heads the ``binary`` method scores with, if ``return_loss``).
    ``normal_label`` is the label of the normal class (needed by the ``doc`` and ``binary`` losses, the shifted
    negatives and the class centres). A loss with class centres (CosFace, ArcFace) leaves them in the returned
    model (``model.class_centres``), for the margin experts.

    Batches are drawn from a seeded order each epoch (``epoch_order``); the last incomplete batch is dropped, as
    in the original, so every batch has the same size. With ``checkpoint_path``, a checkpoint is written there
    after every epoch, and training continues from it if it already exists: on the CPU the result is then
    bit-for-bit that of an uninterrupted run (the data order and augmentation come from a generator whose state
    is saved). ``on_epoch_end(record, model)``, if given, is called after each epoch with its log record (e.g. to
    follow a validation AUC); the model is in eval mode during the call.
    """
    checked(config)
    seed_everything(config.seed)
    if config.epochs == 0:  # a pretrained backbone as it is (TrainConfig.epochs)
        model = create_model(config.model, **config.model_kwargs).eval()
        return (model, [], None) if return_loss else (model, [])
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    training = _start(config, images, labels, normal_label, device)
    history, first_epoch = _resume(training, config, checkpoint_path, log_path, progress)
    for epoch in range(first_epoch, config.epochs):
        record = _train_epoch(training, config, epoch, device, checkpoint_path, progress)
        history.append(record)
        _end_epoch(training, config, record, history, log_path, checkpoint_path, progress, on_epoch_end)
    model = _finish(training, config, normal_label, device)
    return (model, history, training.criterion.eval()) if return_loss else (model, history)


def _start(config: TrainConfig, images, labels, normal_label, device) -> Training:
    """The training data (with synthetic defects and shifted negatives as classes of their own), a fresh model,
    its loss and optimisation, in the order that fixes the seeded initialisations."""
    images, labels = add_defect_classes(images, labels, normal_label, config.defects, config.seed)
    if len(np.unique(labels)) < 2 and not config.negatives:
        raise ValueError("nothing to tell the normal images from: give reference images (--reference-dir), "
                         "synthetic defects (--defects) or shifted negatives (--negatives), or --epochs 0 for a "
                         "pretrained backbone as it is")
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {config.batch_size}")
    model = create_model(config.model, **config.model_kwargs).to(device)
    x_all = to_model_input(images, model.in_channels, model.input_size)  # float [0, 1], checked once
    x_all, y_all = add_shifted_negatives(x_all, torch.as_tensor(labels, dtype=torch.long), normal_label,
                                         config.negatives)
    criterion = build_loss(config.loss, int(y_all.max()) + 1, model.embedding_dim, config.margin,
                           normal_label).to(device)
    optimizer = make_optimizer(config, list(model.parameters()) + list(criterion.parameters()))
    generator = torch.Generator().manual_seed(config.seed)
    steps = len(x_all) // config.batch_size
    scheduler, per_batch = make_scheduler(config, optimizer, steps)
    step_module = _for_ranks(TrainingStep(model, criterion), config, y_all, normal_label, device)
    return Training(model, criterion, optimizer, scheduler, per_batch, step_module, x_all, y_all, generator, steps)


def _resume(training: Training, config: TrainConfig, checkpoint_path, log_path, progress: bool):
    """``(history, first epoch)``: from the checkpoint at ``checkpoint_path`` if there is one, else a fresh start."""
    if checkpoint_path is None or not Path(checkpoint_path).exists():
        return [], 0
    state = load_checkpoint(checkpoint_path, training.model, training.criterion, training.optimizer,
                            training.generator)
    # The optimizer's saved lr is already the one for the next step; the scheduler only needs its count.
    training.scheduler.last_epoch = state.epoch * training.steps if training.per_batch else state.epoch
    if log_path is not None and distributed.is_main():  # the log may hold an epoch finished after the checkpoint
        Path(log_path).write_text("".join(json.dumps(r) + "\n" for r in state.history))
    if progress and distributed.is_main():
        tqdm.write(f"resuming from {checkpoint_path} after epoch {state.epoch}/{config.epochs}")
    return state.history, state.epoch


def _train_epoch(training: Training, config: TrainConfig, epoch: int, device, checkpoint_path,
                 progress: bool) -> dict:
    """One pass over the training data in the epoch's seeded order; returns the epoch's log record."""
    t = training
    t.model.train()
    order = epoch_order(t.y_all, t.generator)
    loss_sum, start = 0.0, time.perf_counter()
    bar = tqdm(range(t.steps), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, mininterval=1.0,
               disable=None if progress and distributed.is_main() else True)  # None: a bar on a terminal only
    for step in bar:
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        x, y = random_shift(t.x_all[idx], config.shift, t.generator), t.y_all[idx]  # the global batch, every rank
        mine = distributed.local_batch(torch.arange(len(idx)), y)  # this rank's share of it
        loss = t.step_module(x[mine].to(device), y[mine].to(device))
        if not torch.isfinite(loss):
            kept = (f"; the last good checkpoint (epoch {epoch}) is kept in {checkpoint_path}"
                    if checkpoint_path is not None and epoch > 0 else "")
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: "
                                     f"lower the learning rate{kept}")
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = t.optimizer.param_groups[0]["lr"]
        t.optimizer.step()
        if t.per_batch:
            t.scheduler.step()
        loss_sum += loss.item()
        if progress and step % 20 == 19:
            rate = (step + 1) * config.batch_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.4f}", img_s=f"{rate:.0f}", refresh=False)
    if not t.per_batch:
        t.scheduler.step()
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "loss": loss_sum / t.steps, "seconds": seconds,
            "images_per_second": t.steps * config.batch_size / seconds, "lr": lr}  # lr: of the epoch's last step


def _end_epoch(training: Training, config: TrainConfig, record: dict, history: list, log_path, checkpoint_path,
               progress: bool, on_epoch_end) -> None:
    """After an epoch: its checkpoint, a barrier no rank passes before it exists, its log line, the callback."""
    main = distributed.is_main()
    if checkpoint_path is not None and main:
        save_checkpoint(checkpoint_path, record["epoch"], history, training.model, training.criterion,
                        training.optimizer, training.generator)
    distributed.barrier()  # no rank runs ahead of the checkpoint it could be resumed from
    if progress and main:
        tqdm.write(f"epoch {record['epoch']}/{config.epochs}  loss {record['loss']:.4f}  "
                   f"{record['images_per_second']:.0f} img/s  {record['seconds']:.1f} s")
    if log_path is not None and main:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    if on_epoch_end is not None:
        training.model.eval()
        with torch.no_grad():
            on_epoch_end(record, training.model)


def _finish(training: Training, config: TrainConfig, normal_label, device) -> nn.Module:
    """The trained model in eval mode: one plain model under torchrun too, with a CosFace/ArcFace loss's class
    centres kept in it."""
    model = training.model
    if distributed.world() > 1:  # rank 0's statistics everywhere; SyncBatchNorm back to BatchNorm
        distributed.broadcast_buffers(model)
        trained, model = model, create_model(config.model, **config.model_kwargs).to(device)
        model.load_state_dict(trained.state_dict())
    if loss_entry(config.loss).centres and normal_label is not None:
        model.set_class_centres(training.criterion.loss.W, normal_label)
    return model.eval()
