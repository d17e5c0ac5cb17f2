"""Issue 35's bounded research: candidates that learn on the line's own good cells, on frozen EfficientNet-Lite0
features cached once, validated on held-out good *training* cells with all nine synthetic defect kinds. The rule,
the split and the candidates are in docs/decisions.md (2026-12-07), written before the runs.

    python benchmarks/line_validation.py --elpv DIR --kind mono --out r.json [--candidates P,F] [--seeds 0,1]
    python benchmarks/line_validation.py --elpv DIR --kind mono --out r.json --test   # after the choice only

``DIR``: ``metricad export-dataset --dataset elpv --out DIR``. ``--test`` also scores ELPV's real test cells.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from result_rows import keep
from sklearn.metrics import roc_auc_score

from metricad.data.defects import make_defects
from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.models.pretrained import map_weights, packaged_weights, read_state_dict
from metricad.recipe import DEFECTS
from metricad.scoring.coreset import k_center
from metricad.scoring.maps import MapSmoothing

SIZE, SPLIT_SEED, FIT_SHARE, HOLD_SHARE = (320, 320), 35, 0.8, 0.1
SMOOTH = MapSmoothing(aligned_cells=True)


# ---- features -----------------------------------------------------------------------------------------------
def backbone():
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3, 4))
    full = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    path = packaged_weights("efficientnet_lite0")
    mapped = map_weights(read_state_dict(path), full, str(path))
    net.load_state_dict({k: mapped[k] for k in net.state_dict()}, strict=True)
    return net.eval()


MEAN, STD = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def levels(net, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(patches (N, 152, 40, 40), stride-32 (N, 320, 40, 40))``: the default's patch features (stride 8 and
    stride 16 upsampled, 3x3-averaged) and the stride-32 level brought onto the same grid and averaged too."""
    out_p, out_c = [], []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            x = torch.from_numpy(images[i:i + 32]).float().div(255)
            x = x.unsqueeze(1) if x.ndim == 3 else x
            x = ((x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x) - MEAN) / STD
            s8, s16, s32 = net(x)
            size = tuple(s8.shape[2:])
            p = torch.cat([s8, F.interpolate(s16, size=size, mode="bilinear", align_corners=False)], 1)
            c = F.interpolate(s32, size=size, mode="bilinear", align_corners=False)
            out_p.append(F.avg_pool2d(p, 3, 1, 1, count_include_pad=False).half())
            out_c.append(F.avg_pool2d(c, 3, 1, 1, count_include_pad=False).half())
    return torch.cat(out_p), torch.cat(out_c)


def flat(maps: torch.Tensor) -> torch.Tensor:
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).float()


# ---- candidates: each fit(fit_maps, defect_maps, defect_cells, seed) -> score(maps) -> (N, h, w) raw map -------
class Bank:
    def __init__(self, size=4096, project=None):
        self.size, self.project = size, project

    def fit(self, maps, seed, **_):
        patches = flat(maps)
        if self.project is not None:
            with torch.no_grad():
                patches = self.project(patches)
        keep_ = k_center(patches, min(self.size, len(patches)), seed, 64)
        self.bank = patches[torch.as_tensor(keep_)].contiguous()
        self.sq = self.bank.pow(2).sum(1)
        return self

    def __call__(self, maps):
        out = []
        for i in range(0, len(maps), 16):
            m = maps[i:i + 16]
            q = flat(m)
            if self.project is not None:
                with torch.no_grad():
                    q = self.project(q)
            d = (q.pow(2).sum(1, keepdim=True) + self.sq - 2 * q @ self.bank.T).min(1).values.clamp_min(0).sqrt()
            out.append(d.reshape(len(m), *m.shape[2:]))
        return torch.cat(out)


class Flow:
    """FrEIA's AllInOneBlock x 8 over standardized patch vectors; a patch scores as its negative log-likelihood."""

    def __init__(self, blocks=8, hidden=256, steps=2000, batch=512, lr=1e-3):
        self.blocks, self.hidden, self.steps, self.batch, self.lr = blocks, hidden, steps, batch, lr

    def fit(self, maps, seed, **_):
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        torch.manual_seed(seed)
        patches = flat(maps)
        self.mean, self.std = patches.mean(0), patches.std(0) + 1e-6
        dim = patches.shape[1]

        def subnet(cin, cout):
            layer = nn.Sequential(nn.Linear(cin, self.hidden), nn.ReLU(), nn.Linear(self.hidden, cout))
            nn.init.zeros_(layer[-1].weight)
            nn.init.zeros_(layer[-1].bias)
            return layer

        self.inn = Ff.SequenceINN(dim)
        for _ in range(self.blocks):
            self.inn.append(Fm.AllInOneBlock, subnet_constructor=subnet, affine_clamping=2.0, permute_soft=False)
        opt = torch.optim.Adam(self.inn.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=self.steps)
        g = torch.Generator().manual_seed(seed)
        z_all = (patches - self.mean) / self.std
        for _ in range(self.steps):
            x = z_all[torch.randint(len(z_all), (self.batch,), generator=g)]
            loss = self.nll(x).mean() / dim
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.inn.eval()
        return self

    def nll(self, x):
        z, logdet = self.inn(x)
        return 0.5 * z.pow(2).sum(1) - logdet

    def __call__(self, maps):
        out = []
        with torch.no_grad():
            for i in range(0, len(maps), 16):
                m = maps[i:i + 16]
                out.append(self.nll((flat(m) - self.mean) / self.std).reshape(len(m), *m.shape[2:]))
        return torch.cat(out)


class Projection(nn.Module):
    def __init__(self, dim, hidden=256, out=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x):
        return F.normalize(self.net((x - self.mean) / self.std), dim=1)


class Triplet:
    """The original method at patch level: normal patches, synthetic-defect patches (a class per kind) and noisy
    normal patches (a class) apart under the online triplet loss; then a bank in the learned space."""

    def __init__(self, steps=1500, batch=192, noise=0.5, lr=1e-3):
        self.steps, self.batch, self.noise, self.lr = steps, batch, noise, lr

    def fit(self, maps, seed, defect_maps=None, defect_cells=None, **_):
        from pytorch_metric_learning import losses, miners

        torch.manual_seed(seed)
        normal = flat(maps)
        dmaps = flat(defect_maps)
        labels = defect_cells.reshape(-1)  # 0: not defective, k + 1: kind k
        bad, bad_labels = dmaps[labels > 0], labels[labels > 0]
        proj = Projection(normal.shape[1])
        proj.mean, proj.std = normal.mean(0), normal.std(0) + 1e-6
        loss_fn = losses.TripletMarginLoss(margin=0.2)
        miner = miners.TripletMarginMiner(0.2, type_of_triplets="semihard")
        opt = torch.optim.Adam(proj.parameters(), lr=self.lr)
        g = torch.Generator().manual_seed(seed)
        third = self.batch // 3
        for _ in range(self.steps):
            a = normal[torch.randint(len(normal), (third,), generator=g)]
            j = torch.randint(len(bad), (third,), generator=g)
            n = normal[torch.randint(len(normal), (third,), generator=g)]
            n = n + self.noise * proj.std * torch.randn(n.shape, generator=g)
            x = torch.cat([a, bad[j], n])
            y = torch.cat([torch.zeros(third, dtype=torch.long), bad_labels[j].long(),
                           torch.full((third,), len(DEFECTS) + 1)])
            emb = proj(x)
            loss = loss_fn(emb, y, miner(emb, y))
            opt.zero_grad()
            loss.backward()
            opt.step()
        proj.eval()
        self.bank = Bank(4096, project=proj).fit(maps, seed)
        return self

    def __call__(self, maps):
        return self.bank(maps)


CANDIDATES = {
    "P": lambda: (Bank(4096), "p"),
        "P32": lambda: (Bank(4096), "pc"),
    "F": lambda: (Flow(), "p"),
    "F32": lambda: (Flow(), "pc"),
    "T": lambda: (Triplet(), "p"),
}
COMBOS = {"P+F": ("P", "F"), "T+F": ("T", "F")}


# ---- the data -----------------------------------------------------------------------------------------------
def split_cells(elpv: Path, kind: str):
    paths = sorted(list_image_files([elpv / kind / "train" / "good"]))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
    n_fit = int(round(FIT_SHARE * len(paths)))
    images = read_images([paths[i] for i in order], SIZE, 1)[0]
    return images[:n_fit], images[n_fit:]


def cell_labels(masks: np.ndarray, which: np.ndarray) -> torch.Tensor:
    """Per 8x8 cell: kind + 1 where the mask covers a quarter of the cell or more, else 0."""
    cover = F.avg_pool2d(torch.from_numpy(masks).float().unsqueeze(1), 8).squeeze(1)
    return torch.where(cover >= 0.25, torch.from_numpy(which + 1).view(-1, 1, 1), 0)


def auroc_pair(scores, maps, labels, masks):
    image = roc_auc_score(labels, scores)
    pixel = roc_auc_score(masks[:, ::4, ::4].ravel(), maps[:, ::4, ::4].ravel())
    return float(image), float(pixel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elpv", type=Path, required=True)
    ap.add_argument("--kind", choices=("mono", "poly"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--candidates", default=",".join(list(CANDIDATES) + list(COMBOS)))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--one-seed", default="P,P32", help="candidates run on the first seed only (deterministic but "
                    "for the coreset's random start)")
    ap.add_argument("--sealed", type=Path, help="also score ELPV's real test cells, into this file alone (opened "
                    "only after the choice)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = backbone()
    fit_images, val_cells = split_cells(args.elpv, args.kind)
    n_hold = int(round(HOLD_SHARE * len(fit_images)))
    bank_images, hold_images = fit_images[n_hold:], fit_images[:n_hold]
    val_bad, val_masks, val_which = make_defects(val_cells, DEFECTS, seed=0)
    val_images = np.concatenate([val_cells, val_bad])
    val_labels = np.r_[np.zeros(len(val_cells)), np.ones(len(val_bad))]
    val_mask_all = np.concatenate([np.zeros((len(val_cells), *SIZE), bool), val_masks])
    val_kind = np.r_[np.full(len(val_cells), -1), val_which]
    # one defective copy per fit cell, the kinds in turn (make_defects draws every kind on every image: keep one)
    train_bad, train_masks, train_which = make_defects(bank_images, DEFECTS, seed=1)
    pick = np.arange(len(bank_images)) + len(bank_images) * (np.arange(len(bank_images)) % len(DEFECTS))
    train_bad, train_masks, train_kind = train_bad[pick], train_masks[pick], train_which[pick]
    t0 = time.perf_counter()
    feats = {name: levels(net, imgs) for name, imgs in
             [("bank", bank_images), ("hold", hold_images), ("val", val_images), ("bad", train_bad)]}
    print(f"features {time.perf_counter() - t0:.0f}s", flush=True)
    test = None
    if args.sealed:
        good = read_images(sorted(list_image_files([args.elpv / args.kind / "test" / "good"])), SIZE, 1)[0]
        bad = read_images(sorted(list_image_files([args.elpv / args.kind / "test" / "defect"])), SIZE, 1)[0]
        test = (levels(net, np.concatenate([good, bad])), np.r_[np.zeros(len(good)), np.ones(len(bad))])
    defect_cells = cell_labels(train_masks, train_kind)

    results, sealed = [], []
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        raw, done = {}, set()
        wanted = [c for c in args.candidates.split(",") if seed == seeds[0] or c not in args.one_seed.split(",")]
        for name in [p for c in wanted for p in COMBOS.get(c, (c,))]:
            if name not in raw:
                raw[name] = fit_and_score(name, seed, feats, defect_cells, test)
            for ready in [c for c in wanted if c not in done and all(p in raw for p in COMBOS.get(c, (c,)))]:
                done.add(ready)
                row, test_auc = evaluate(ready, seed, raw, args.kind, val_labels, val_mask_all, val_kind, test)
                keep(results, row, args.out)
                if test_auc is not None:
                    sealed.append({"candidate": ready, "seed": seed, "kind": args.kind, "test_image_auroc": test_auc})
                    args.sealed.write_text(json.dumps(sealed, indent=1) + "\n")


def view(pair, how):
    return pair[0] if how == "p" else torch.cat(pair, 1)


def fit_and_score(name, seed, feats, defect_cells, test):
    model, how = CANDIDATES[name]()
    t0 = time.perf_counter()
    model.fit(view(feats["bank"], how), seed, defect_maps=view(feats["bad"], how), defect_cells=defect_cells)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    val_map = model(view(feats["val"], how))
    per_image_ms = 1000 * (time.perf_counter() - t0) / len(val_map)
    hold_map = model(view(feats["hold"], how))
    test_map = model(view(test[0], how)) if test else None
    return val_map, hold_map, test_map, fit_s, per_image_ms


def evaluate(name, seed, raw, kind, val_labels, val_mask_all, val_kind, test):
    parts = COMBOS.get(name, (name,))
    z = []
    for p in parts:
        val_map, hold_map, test_map, _, _ = raw[p]
        top = hold_map.flatten(1).amax(1)
        mu, sd = top.mean(), top.std() + 1e-6
        z.append(((val_map - mu) / sd, None if test_map is None else (test_map - mu) / sd))
    val_map = torch.stack([a for a, _ in z]).mean(0)
    scores = val_map.flatten(1).amax(1).numpy()
    maps = SMOOTH(val_map, SIZE).numpy()
    image, pixel = auroc_pair(scores, maps, val_labels, val_mask_all)
    row = {"candidate": name, "seed": seed, "kind": kind, "image_auroc": image, "pixel_auroc": pixel,
           "v": (image + pixel) / 2, "fit_s": sum(raw[p][3] for p in parts),
           "score_ms_per_image": sum(raw[p][4] for p in parts), "by_kind": {}}
    for k, defect in enumerate(DEFECTS):
        sel = (val_kind == -1) | (val_kind == k)
        row["by_kind"][defect] = auroc_pair(scores[sel], maps[sel], val_labels[sel], val_mask_all[sel])
    test_auc = None
    if test:
        test_scores = torch.stack([b for _, b in z]).mean(0).flatten(1).amax(1).numpy()
        test_auc = float(roc_auc_score(test[1], test_scores))
    return row, test_auc


if __name__ == "__main__":
    main()
