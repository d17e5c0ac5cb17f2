"""The seed triplet loss: sorted/prefix-sum form against the brute-force P x N form (value and time).

    .venv/bin/python benchmarks/bench_loss.py [--batch-sizes 128,512] [--repeats 7]

Embeddings are 128-d; labels are drawn as in the original's batches (binary: about 1 in 9 normal) and with
fine labels (9 classes). Times are medians of forward + backward, warm-up excluded. Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from metricad.losses import seed_triplet_loss, seed_triplet_loss_bruteforce


def time_loss(fn, emb, labels, repeats):
    times = []
    for i in range(repeats + 1):
        x = emb.detach().clone().requires_grad_()
        start = time.perf_counter()
        value = fn(x, labels)
        value.backward()
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
    return value.item(), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip the brute force when it needs more memory")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for scheme, labels in (("binary", (torch.rand(batch, generator=gen) < 1 / 9).long()),
                               ("fine", torch.randint(0, 9, (batch,), generator=gen))):
            emb = 0.1 * torch.randn(batch, 128, generator=gen)
            same = (labels[:, None] == labels[None]).sum().item()
            combos = same * (batch * batch - same)
            fast_value, fast_s = time_loss(seed_triplet_loss, emb, labels, args.repeats)
            # The P x N matrix, its mask and its gradient: about 3 float32 copies.
            brute_gb = 3 * 4 * combos / 1e9
            if brute_gb <= args.max_gb:
                brute_value, brute_s = time_loss(seed_triplet_loss_bruteforce, emb, labels, args.repeats)
            else:
                brute_value = brute_s = None
            rows.append({"batch_size": batch, "labels": scheme, "pairs_pos": same, "pairs_neg": batch * batch - same,
                         "combinations": combos, "bruteforce_gb": brute_gb,
                         "value_fast": fast_value, "value_bruteforce": brute_value, "ms_fast": 1000 * fast_s,
                         "ms_bruteforce": brute_s and 1000 * brute_s, "speedup": brute_s and brute_s / fast_s})
    print("| batch | labels | P x N combinations | value (fast) | value (brute force) | ms fast | ms brute force "
          "| speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        fast = f"{r['ms_fast']:.2f}"
        if r["ms_bruteforce"] is None:
            brute = f"not run (needs ~{r['bruteforce_gb']:.0f} GB) | {fast} | – | –"
        else:
            brute = f"{r['value_bruteforce']:.6f} | {fast} | {r['ms_bruteforce']:.1f} | {r['speedup']:.0f}x"
        print(f"| {r['batch_size']} | {r['labels']} | {r['combinations']:,} | {r['value_fast']:.6f} | {brute} |")
    print()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
