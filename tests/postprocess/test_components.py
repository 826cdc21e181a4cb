"""Binary clean-up of probability maps: hole filling, largest component."""

from __future__ import annotations

import numpy as np

from labelwise.postprocess import clean_mask


def test_clean_mask_keeps_largest_component_and_fills_holes() -> None:
    prob = np.zeros((12, 12), np.float32)
    prob[1:8, 1:8] = 0.9  # 49-pixel blob with a hole
    prob[4, 4] = 0.0
    prob[10:12, 10:12] = 0.9  # 4-pixel speck
    mask = clean_mask(prob, 0.5)
    assert mask.sum() == 49 and mask[4, 4] and not mask[10, 10]
    assert clean_mask(np.zeros((4, 4)), 0.5).sum() == 0
