import math

import pytest
import torch

from metricad.losses import LOSSES, build_loss, seed_triplet_loss, seed_triplet_loss_bruteforce
from metricad.losses.one_class import BinaryLoss, DOCLoss, compactness_loss


def loss_by_definition(emb, labels, margin):
    """Independent of the library: difference-form squared distances, every (positive, negative) combination."""
    sq = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    same = labels[:, None] == labels[None, :]
    pos, neg = sq[same], sq[~same]
    return torch.clamp(pos[:, None] - neg[None, :] + margin, min=0).mean()


@pytest.mark.parametrize("batch,num_labels,dim,seed", [(16, 2, 4, 0), (64, 2, 8, 1), (128, 9, 16, 2), (33, 5, 3, 3)])
def test_seed_loss_matches_bruteforce_value_and_gradient(batch, num_labels, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    # Small-scale embeddings so that many hinge terms are active and many are not.
    emb = (0.3 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, num_labels, (batch,), generator=gen)
    fast = seed_triplet_loss(emb, labels, margin=0.2)
    (grad_fast,) = torch.autograd.grad(fast, emb)
    for reference in (seed_triplet_loss_bruteforce, loss_by_definition):
        slow = reference(emb, labels, margin=0.2)
        (grad_slow,) = torch.autograd.grad(slow, emb)
        assert 0 < slow.item()
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-10, atol=1e-12)


def test_seed_loss_hand_computed():
    # Points 0, 0.5, 1 on a line; labels a, a, b.
    # Ordered same-label pairs (diagonal included): d = 0, 0, 0, 0.25, 0.25 (squared)  -> P = 5
    # Different-label pairs: (0,2),(2,0): 1.0; (1,2),(2,1): 0.25                   -> N = 4
    # Margin 1: for p = 0:    max(1 - 1, 0)*2 + max(1 - 0.25, 0)*2 = 1.5, three such p -> 4.5
    #           for p = 0.25: max(0.25, 0)*2 + max(1, 0)*2 = 2.5, two such p           -> 5.0
    # mean over P*N = 20 combinations: 9.5 / 20 = 0.475
    emb = torch.tensor([[0.0], [0.5], [1.0]])
    labels = torch.tensor([0, 0, 1])
    assert seed_triplet_loss(emb, labels, margin=1.0).item() == pytest.approx(0.475)
    assert seed_triplet_loss_bruteforce(emb, labels, margin=1.0).item() == pytest.approx(0.475)


def test_seed_loss_single_label_batch_is_zero_with_gradient():
    emb = torch.randn(8, 4, requires_grad=True)
    loss = seed_triplet_loss(emb, torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(emb.grad) == 0


@pytest.mark.parametrize("name", LOSSES)
def test_every_named_loss_trains(name):
    torch.manual_seed(0)
    emb = torch.randn(32, 8, requires_grad=True)
    labels = torch.arange(32) % 4
    loss_fn = build_loss(name, num_classes=4, embedding_dim=8, normal_label=0)
    loss = loss_fn(emb, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert emb.grad.abs().sum() > 0


def test_one_class_losses_need_their_normal_label():
    with pytest.raises(ValueError, match="normal class"):
        build_loss("doc", 4, 8)
    with pytest.raises(ValueError, match="fine labels"):
        build_loss("doc", 2, 8, normal_label=1)


def test_unknown_loss_is_named_in_error():
    with pytest.raises(ValueError, match="nope"):
        build_loss("nope", 2, 8)


def test_compactness_by_hand():
    # z = (0), (2), (4): means of the others are 3, 2, 1 -> squared gaps 9, 0, 9 -> mean 6, over dim 1.
    z = torch.tensor([[0.0], [2.0], [4.0]])
    assert compactness_loss(z).item() == pytest.approx(6.0)
    # Against the definition on random 5-d embeddings.
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    others = torch.stack([torch.cat([z[:i], z[i + 1:]]).mean(0) for i in range(7)])
    assert compactness_loss(z).item() == pytest.approx(((z - others) ** 2).sum(1).mean().item() / 5, rel=1e-6)


def test_doc_loss_by_hand():
    loss = DOCLoss(num_classes=3, embedding_dim=1, normal_label=1, compactness_weight=0.5)
    with torch.no_grad():
        loss.classifier.weight.zero_()
        loss.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
    emb = torch.tensor([[0.0], [2.0], [4.0], [9.0]])
    labels = torch.tensor([1, 1, 1, 2])
    # Descriptiveness: uniform logits over 3 classes -> ln 3; compactness of (0, 2, 4) = 6 (above).
    assert loss(emb, labels).item() == pytest.approx(math.log(3) + 0.5 * 6.0)


def test_binary_loss_by_hand():
    loss = BinaryLoss(embedding_dim=1, normal_label=7)
    with torch.no_grad():
        loss.classifier.weight.fill_(1.0)
        loss.classifier.bias.zero_()
    emb = torch.tensor([[0.0], [2.0]])
    labels = torch.tensor([7, 3])  # normal (target 0, logit 0), reference (target 1, logit 2)
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert loss(emb, labels).item() == pytest.approx(expected)
    assert loss.anomaly_probability(emb).tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2))])
