import pytest
import torch

from metricad.data.negatives import add_shifted_negatives, negative_label


def test_each_transform_of_the_normal_images_becomes_its_own_class():
    images = torch.arange(3 * 2 * 2.0).reshape(3, 1, 2, 2)  # image 1 is [[4, 5], [6, 7]]
    labels = torch.tensor([0, 1, 0])
    out, out_labels = add_shifted_negatives(images, labels, normal_label=1, names=["rot90", "vflip", "hflip"])
    torch.testing.assert_close(out[:3], images)
    torch.testing.assert_close(out[3, 0], torch.tensor([[5.0, 7.0], [4.0, 6.0]]))  # a quarter turn anticlockwise
    torch.testing.assert_close(out[4, 0], torch.tensor([[6.0, 7.0], [4.0, 5.0]]))  # upside down
    torch.testing.assert_close(out[5, 0], torch.tensor([[5.0, 4.0], [7.0, 6.0]]))  # mirrored
    assert out_labels.tolist() == [0, 1, 0, 2, 3, 4] and labels.tolist() == [0, 1, 0]
    assert [negative_label(labels, i) for i in range(3)] == [2, 3, 4]  # what the probe scores each view against


def test_rot180_and_rot270_compose_quarter_turns():
    images = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(4, dtype=torch.long)
    out, _ = add_shifted_negatives(images, labels, 0, ["rot180", "rot270"])
    torch.testing.assert_close(out[4:8], images.flip(2).flip(3))
    torch.testing.assert_close(out[8:], images.transpose(2, 3).flip(3))  # a quarter turn clockwise


def test_no_transforms_changes_nothing():
    images, labels = torch.zeros(2, 1, 3, 3), torch.tensor([0, 1])
    out, out_labels = add_shifted_negatives(images, labels, 1, [])
    assert out is images and out_labels is labels


@pytest.mark.parametrize("names, shape, message", [
    (["spin"], (2, 1, 3, 3), "unknown negative transform"),
    (["vflip", "vflip"], (2, 1, 3, 3), "named once"),
    (["rot90"], (2, 1, 3, 4), "square model input, this one is 3x4"),
])
def test_bad_requests_are_refused_with_the_reason(names, shape, message):
    with pytest.raises(ValueError, match=message):
        add_shifted_negatives(torch.zeros(shape), torch.tensor([0, 1]), 1, names)


def test_the_normal_label_is_required_and_must_occur():
    images, labels = torch.zeros(2, 1, 3, 3), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="normal class's label"):
        add_shifted_negatives(images, labels, None, ["vflip"])
    with pytest.raises(ValueError, match="normal label 1"):
        add_shifted_negatives(images, labels, 1, ["vflip"])
