import numpy as np
import pytest
import torch

from metricad.preprocessing import to_model_array, to_model_input


def test_numpy_and_torch_paths_give_identical_inputs():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    array = to_model_array(images, 1, (28, 28))
    assert array.dtype == np.float32 and array.shape == (3, 1, 28, 28)
    assert array.min() >= 0 and array.max() <= 1 and array[0, 0, 0, 0] == np.float32(images[0, 0, 0]) / 255
    np.testing.assert_array_equal(to_model_input(torch.from_numpy(images), 1, (28, 28)).numpy(), array)
    np.testing.assert_array_equal(to_model_input(images, 1, (28, 28)).numpy(), array)


@pytest.mark.parametrize("convert", [np.asarray, torch.as_tensor])
@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28), np.uint8), "shape"),
    (np.zeros((2, 3, 28, 28), np.uint8), "3 channel"),
    (np.zeros((2, 14, 14), np.uint8), r"\(14, 14\) pixels"),
    (np.full((2, 28, 28), 2.0, np.float32), "lie in"),
    (np.zeros((2, 28, 28), np.int32), "uint8 or float"),
])
def test_bad_batches_are_rejected_with_the_reason(convert, images, message):
    with pytest.raises(ValueError, match=message):
        (to_model_array if convert is np.asarray else to_model_input)(convert(images), 1, (28, 28))
