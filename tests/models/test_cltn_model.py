"""CLTN networks: shapes, the fusion rule, AdaILN limits, discriminator sizing, rebuild from the registry.

(Named ``test_cltn_model.py`` because tests/ has no ``__init__`` files and ``tests/methods/test_cltn.py``
exists: two test modules with one basename would collide.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labelwise.models import ModelSpec, build_model
from labelwise.models.cltn import AdaILN, CLTNDiscriminator, CLTNGenerator, discriminator_layers


@pytest.mark.parametrize("size", [16, 40])
def test_generator_shapes_and_ranges(size: int) -> None:
    torch.manual_seed(0)
    g = CLTNGenerator(in_channels=3, ngf=4, n_down=2, n_res=1)
    with torch.no_grad():
        out = g(torch.rand(2, 3, size, size) * 2 - 1)
    assert out.translated.shape == out.fused.shape == (2, 3, size, size)
    assert out.mask.shape == (2, 1, size, size)
    assert out.cam_logit.shape == (2, 2)
    assert out.heatmap.shape == (2, 1, size // 4, size // 4)
    assert float(out.mask.min()) >= 0 and float(out.mask.max()) <= 1
    assert float(out.translated.abs().max()) <= 1


def test_fusion_keeps_input_outside_mask_and_translation_inside() -> None:
    torch.manual_seed(0)
    g = CLTNGenerator(in_channels=1, ngf=4, n_down=1, n_res=1).eval()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        g.mask_head.weight.zero_()
        g.mask_head.bias.fill_(-50.0)  # sigmoid -> 0: nothing may change
        off = g(x)
        g.mask_head.bias.fill_(50.0)  # sigmoid -> 1: the fused image is the translation
        on = g(x)
    torch.testing.assert_close(off.fused, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(on.fused, on.translated, atol=1e-6, rtol=0)


def test_generator_rejects_indivisible_size() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        CLTNGenerator(3, 4, n_down=2, n_res=1)(torch.zeros(1, 3, 18, 18))


def test_adailn_limits_are_instance_and_layer_norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6) * 3 + 1
    gamma, beta = torch.full((2, 3), 2.0), torch.full((2, 3), 0.5)
    norm = AdaILN(3)
    with torch.no_grad():
        norm.rho.fill_(1.0)
        torch.testing.assert_close(norm(x, gamma, beta), F.instance_norm(x, eps=1e-5) * 2 + 0.5, atol=1e-5, rtol=1e-5)
        norm.rho.fill_(0.0)
        ln = F.layer_norm(x, x.shape[1:], eps=1e-5)
        torch.testing.assert_close(norm(x, gamma, beta), ln * 2 + 0.5, atol=1e-5, rtol=1e-5)


def test_discriminator_sizes_and_layer_reduction() -> None:
    assert discriminator_layers(128, 5) == 5
    assert discriminator_layers(32, 5) == 3  # log2(32) - 2
    assert discriminator_layers(8, 3) == 2  # never below 2
    for size, wanted in ((32, 5), (64, 3), (16, 5)):
        d = CLTNDiscriminator(3, 4, discriminator_layers(size, wanted))
        out = d(torch.zeros(1, 3, size, size))
        assert out.scores.shape[0] == 1 and min(out.scores.shape[-2:]) >= 2
        assert out.cam_logit.shape == (1, 2)


def test_registry_rebuild_gives_identical_outputs_and_backward_works() -> None:
    torch.manual_seed(0)
    spec = ModelSpec("cltn_generator", {"ngf": 4, "n_res": 1})
    g1 = build_model(spec, 2, 3, 3)
    g2 = build_model(spec, 2, 3, 3)
    g2.load_state_dict(g1.state_dict())
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(g1(x).fused, g2(x).fused)
    out = g1(x)
    (out.fused.mean() + out.cam_logit.sum()).backward()
    assert g1.mask_head.weight.grad is not None and g1.mask_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        build_model(spec, 2, 3, 1)
    d = build_model(ModelSpec("cltn_discriminator", {"ndf": 4, "n_layers": 3}), 2, 3, 1)
    assert d(x).scores.ndim == 4
