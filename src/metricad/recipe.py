"""What to train and how to score it: ``TrainConfig``, the named presets, and the names each option accepts.

Torch-free on purpose: the command line and the light (bundle-only) install read presets and names without the
training stack. What needs the other stages (the loss by name, the score that fits it) is checked by
``metricad.train.config``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

LABELS = ("binary", "fine")
SCHEDULES = ("step", "onecycle")
OPTIMIZERS = ("sgd", "adam")
NEGATIVES = ("rot90", "rot180", "rot270", "vflip", "hflip")  # shifted negatives (metricad.data.negatives)
# synthetic defects (metricad.data.defects); the first four are those the localisation check of issue 29 used
DEFECTS = ("cutpaste", "scar", "blend", "intensity", "crack", "mura", "pit", "edge", "stain")
# models that start from ImageNet weights (metricad.models.pretrained)
PRETRAINED = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "timm")
PRETRAINED_SCALE = 4  # Fashion-MNIST's 28x28 enlarged to 112 inside a pretrained backbone (a 14x14 patch grid)
RUNTIMES = ("torch", "onnx")  # how a detector runs its scoring graph (metricad.detector)
# What `metricad compare` runs: raw-pixel baselines, trained baselines, the original recipe and metricad.
METHODS = ("raw-pixels", "pca", "iforest", "doc", "binary", "seed", "metricad", "pretrained")
INDEXES = ("exact", "faiss-flat", "faiss-ivf", "faiss-hnsw")  # its k-NN index (metricad.index)
ANCHOR_SAMPLINGS = ("first", "random", "coreset")  # which normal images become anchors (metricad.detector)
EXPLAIN_METHODS = ("feature-diff", "gradcam")  # heat-maps (metricad.evaluate.explain)
ORIGINAL_ANCHOR_COUNTS = [6000, 3000, 1000, 500, 100, 50]  # the 2019 post's speed tables


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for a training option; VALUE is read as JSON (numbers, lists), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE (e.g. epochs=5), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@dataclass
class TrainConfig:
    """One recipe: the model, its training and the score of the detector built on it."""

    model: str = "compact-cnn"
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "cosface"
    labels: str = "binary"
    margin: float = 0.2
    epochs: int = 5  # 0: no training at all (a pretrained backbone as it is, for a memory bank)
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    # "step": lr *= lr_gamma at each of lr_milestones (epochs), as the original did. "onecycle": warm up to lr
    # over the first tenth of the steps, then cosine-anneal to almost zero (torch's OneCycleLR, per batch).
    lr_schedule: str = "step"
    lr_milestones: list = field(default_factory=lambda: [4])
    lr_gamma: float = 0.1
    shift: int = 2  # augmentation: random translation of each training image by up to this many pixels
    # Shifted negatives (metricad.data.negatives): each named transform of the normal images becomes a class.
    negatives: list = field(default_factory=list)
    # Synthetic defects (metricad.data.defects): one defective copy of each normal image per kind, each kind a
    # class of its own, so that good images alone can train (as reference images do, when there are some).
    defects: list = field(default_factory=list)
    # The detector's score: expert names joined by "+" (metricad.scoring.spec), e.g. "knn+excess-margin", or
    # "auto": chosen by a few labelled anomalies (metricad.selection).
    score: str = "knn"
    # Fraction of the normal training images kept out of training and anchors: the experts are normalised and
    # the threshold is set on them. 0: both come from the anchors themselves (leave-one-out).
    holdout: float = 0.0
    # Models trained (seeds seed*ensemble .. seed*ensemble + ensemble-1); the score averages theirs.
    ensemble: int = 1
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def with_options(self, options: dict) -> "TrainConfig":
        """This configuration with ``options`` changed. ``model_kwargs`` is merged key by key, so that setting
        one model option (the widths) keeps the others (the default's unit-length embeddings)."""
        kwargs = options.get("model_kwargs", {})
        if not isinstance(kwargs, dict):
            raise ValueError(f"model_kwargs must be a JSON object, got {kwargs!r}")
        return TrainConfig.from_dict(self.to_dict() | options | {"model_kwargs": {**self.model_kwargs, **kwargs}})

    def member_seeds(self) -> list[int]:
        """The training seed of each ensemble member: disjoint between two recipes that differ in ``seed``."""
        return [self.seed * self.ensemble + i for i in range(self.ensemble)]

    def validate(self) -> "TrainConfig":
        """Refuse what cannot train, naming the option (before anything is loaded or written)."""
        checks = [(self.labels in LABELS, f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}"),
                  (self.lr_schedule in SCHEDULES, f"lr_schedule must be one of {', '.join(SCHEDULES)}, got "
                                                  f"{self.lr_schedule!r}"),
                  (self.optimizer in OPTIMIZERS, f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}"),
                  (self.epochs >= 0 and self.batch_size >= 2,
                   f"need epochs >= 0 and batch_size >= 2, got {self.epochs} and {self.batch_size}"),
                  (self.epochs > 0 or self.model in PRETRAINED,
                   f"epochs 0 leaves the model as it starts: only a pretrained one ({', '.join(PRETRAINED)}) "
                   f"scores that way, got {self.model!r}"),
                  (set(self.defects) <= set(DEFECTS) and len(set(self.defects)) == len(self.defects),
                   f"defects must be distinct kinds among {', '.join(DEFECTS)}, got {self.defects}"),
                  (0.0 <= self.holdout < 1.0, f"holdout must be in [0, 1), got {self.holdout}"),
                  (isinstance(self.ensemble, int) and self.ensemble >= 1,
                   f"ensemble must be a positive number of models, got {self.ensemble!r}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


PRESETS = {
    # metricad's CPU default: an ensemble of two models (6 epochs of a one-cycle schedule each; the normal images'
    # three quarter turns as extra classes; unit-length embeddings), scored by three experts averaged with equal
    # weights, each z-scored on 10 % of the normal images held out: the embedding's k-NN distance, the feature
    # maps' k-NN distance, and the CosFace class margin where it exceeds normal. About 9 minutes on two cores.
    # How each choice was made: docs/decisions.md.
    "default": TrainConfig(epochs=6, lr_schedule="onecycle", negatives=["rot90", "rot180", "rot270"],
                           model_kwargs={"normalize": True}, score="knn+fmap+excess-margin", holdout=0.1,
                           ensemble=2),
    # The original post: MobileNetV2 from scratch, binary labels, all-pairs triplet loss with margin 0.2,
    # SGD lr 1e-3 momentum 0.9, x0.1 at epochs 25 and 45, 50 epochs, batch 128.
    "seed": TrainConfig(model="seed-mobilenetv2", loss="seed", labels="binary", epochs=50, batch_size=128,
                        optimizer="sgd", lr=1e-3, momentum=0.9, lr_milestones=[25, 45], lr_gamma=0.1, shift=0),
    # The image-folder default (good images alone, real resolution: shorter side 320 px, data.folders):
    # EfficientNet-Lite0 with its ImageNet weights, not trained, scored patch by patch against a memory bank of
    # 4,096 normal patches (PatchCore), z-scored on 10 % of the good images held out. Chosen on held-out good images
    # with synthetic defects, never on a real defect: docs/decisions.md, 2026-12-02.
    "inspection": TrainConfig(model="efficientnet-lite0", model_kwargs={"weights": "imagenet"}, epochs=0,
                              loss="batch-hard", score="patch", holdout=0.1),
}
# Which preset a command starts from when none is named: image folders get the inspection preset.
FOLDER_PRESET = "inspection"
