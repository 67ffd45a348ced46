import numpy as np
import torch

from mldoctor_bench.data import load_dataset
from mldoctor_bench.data.embedded import stroke_thickness


def test_stroke_thickness_measures_width():
    for width in (1, 2, 3, 4):
        img = np.zeros((1, 28, 28), dtype=np.uint8)
        img[0, 4:24, 10 : 10 + width] = 255  # a vertical bar 20 long
        est = stroke_thickness(img)[0]
        assert abs(est - width) < 0.25 * width + 0.3, (width, est)


def test_embedded_mnist_is_real_and_balanced():
    data = load_dataset("mnist5k", None)
    assert data.images.shape == (5000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.bincount(data.labels).tolist() == [500] * 10
    assert data.attribute is not None and data.num_attribute_classes == 2
    share = data.attribute.float().mean().item()
    assert 0.45 < share < 0.55  # a median split
    # real digits: mostly background, some ink
    ink = (data.images > 127).float().mean().item()
    assert 0.05 < ink < 0.35
    assert data.fingerprint() == load_dataset("mnist5k", None).fingerprint()
