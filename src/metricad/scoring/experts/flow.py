"""The flow expert: the density of normal patches, learned by a normalizing flow on the frozen patch features
(the DifferNet / CS-Flow / FastFlow family). A patch scores as its negative log-likelihood under the flow; the
image as its worst patch, the map as every patch's.

The patches are the patch expert's (``patch.patch_maps``: the stride-8 map with the stride-16 one upsampled onto
it, 3x3-averaged), standardised per channel on the anchors. The flow is FrEIA's ``AllInOneBlock`` (affine
coupling, a fixed random permutation and a learned global affine per block), a well-kept library rather than a
hand-written flow; it is trained here, on the anchors' patches, when the expert is fitted, so "fit" learns. Its
parameters are saved with the other fitted buffers and it runs in the ONNX graph like every expert.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from metricad.scoring.experts.base import Expert, register_expert
from metricad.scoring.experts.patch import patch_maps

BLOCKS, HIDDEN, STEPS, BATCH, LR = 8, 256, 2000, 512, 1e-3  # the flow that issue 35's validation measured
# Steps when none are given: two passes over the anchors' patches, at most STEPS (ELPV's 300-500 cells at 320 px
# reach STEPS), at least MIN_STEPS (a few small images are not trained for 2,000 steps of 512).
EPOCHS, MIN_STEPS = 2, 50
CLAMP = 2.0  # FrEIA's soft clamp of the coupling's log-scale: keeps early training stable


def _subnet(hidden: int):
    def build(channels_in: int, channels_out: int) -> nn.Module:
        layer = nn.Sequential(nn.Linear(channels_in, hidden), nn.ReLU(), nn.Linear(hidden, channels_out))
        nn.init.zeros_(layer[-1].weight)  # each block starts as the identity: training starts from N(0, I)
        nn.init.zeros_(layer[-1].bias)
        return layer
    return build


def build_flow(dim: int, blocks: int = BLOCKS, hidden: int = HIDDEN, seed: int = 0) -> nn.Module:
    """FrEIA's ``SequenceINN`` of ``blocks`` all-in-one coupling blocks over ``dim``-dimensional vectors, its
    initial weights and permutations drawn from ``seed`` (FrEIA draws the permutations from numpy's global
    generator: its state is kept and restored around them)."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    numpy_state = np.random.get_state()
    try:
        np.random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow = Ff.SequenceINN(dim)
            for _ in range(blocks):
                flow.append(Fm.AllInOneBlock, subnet_constructor=_subnet(hidden), affine_clamping=CLAMP,
                            permute_soft=False)
    finally:
        np.random.set_state(numpy_state)
    return flow


@register_expert("flow")
class PatchFlow(Expert):
    has_map = True
    needs_held_out = True
    state_keys = ("mean", "std", "grid")  # the standardisation, the patch grid; the flow's own under "flow."

    @classmethod
    def from_params(cls, seed=0, **_):
        return cls(seed=seed)

    def __init__(self, blocks: int = BLOCKS, hidden: int = HIDDEN, steps: int | None = None, batch: int = BATCH,
                 lr: float = LR, seed: int = 0):
        super().__init__()
        self.blocks, self.hidden, self.steps, self.batch, self.lr, self.seed = blocks, hidden, steps, batch, lr, seed
        for key in self.state_keys:
            self.register_buffer(key, None)
        self.flow = None

    def vectors(self, views):
        return patch_maps(views)

    def fit(self, model, anchor_vectors):
        channels, height, width = anchor_vectors.shape[1:]
        patches = anchor_vectors.permute(0, 2, 3, 1).reshape(-1, channels).float()
        self.mean, self.std = patches.mean(0), patches.std(0).clamp_min(1e-6)
        self.grid = torch.tensor([height, width])
        self.flow = build_flow(channels, self.blocks, self.hidden, self.seed).to(patches.device)
        self._train((patches - self.mean) / self.std)
        return self

    def _train(self, patches: torch.Tensor) -> None:
        """Maximum likelihood on random batches of the standardised patches (Adam, one-cycle schedule)."""
        steps = self.steps or min(STEPS, max(MIN_STEPS, -(-EPOCHS * len(patches) // self.batch)))
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.lr, total_steps=steps)
        draw = torch.Generator(device=patches.device).manual_seed(self.seed)
        self.flow.train()
        with torch.enable_grad():  # experts are fitted under no_grad
            for _ in range(steps):
                batch = patches[torch.randint(len(patches), (self.batch,), generator=draw, device=patches.device)]
                loss = self.nll(batch).mean() / patches.shape[1]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        self.flow.eval()
        for parameter in self.flow.parameters():
            parameter.requires_grad_(False)

    def nll(self, standardised: torch.Tensor) -> torch.Tensor:
        """Each vector's negative log-likelihood under the flow, up to a constant: ``|z|^2 / 2 - log|det J|``."""
        z, log_det = self.flow(standardised)
        return 0.5 * z.pow(2).sum(1) - log_det

    def fitted_state(self):
        return super().fitted_state() | {f"flow.{k}": v for k, v in self.flow.state_dict().items()}

    def load_fitted_state(self, state):
        super().load_fitted_state(state)
        self.flow = build_flow(int(self.mean.numel()), self.blocks, self.hidden)
        self.flow.load_state_dict({k[len("flow."):]: v for k, v in state.items() if k.startswith("flow.")})
        self.flow.to(self.mean.device).eval().requires_grad_(False)
        return self

    def anomaly_map(self, views) -> torch.Tensor:
        """``(N, H, W)``: each patch's negative log-likelihood."""
        maps = self.vectors(views)
        n, channels, height, width = maps.shape
        patches = maps.permute(0, 2, 3, 1).reshape(-1, channels)
        return self.nll((patches - self.mean) / self.std).reshape(n, height, width)

    def score_and_map(self, views):
        maps = self.anomaly_map(views)
        return maps.flatten(1).amax(1), maps

    def forward(self, views):
        return self.score_and_map(views)[0]

    def anchor_maps(self):  # never asked: the detector refuses a flow without held-out images (needs_held_out)
        raise ValueError("the flow expert learned its density on the anchors: their own scores are biased low")

    def anchor_scores(self):
        return self.anchor_maps()
