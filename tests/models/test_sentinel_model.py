"""Quality Sentinel network, class embeddings and structure-name text embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labelwise.errors import ConfigError, MissingExtraError
from labelwise.models import sentinel as msent
from labelwise.models import text
from labelwise.models.sentinel import ClassEmbedding, SentinelNet
from labelwise.models.text import TEXT_DIM, embed_names, hashed_embedding, normalize_name


@pytest.mark.parametrize("size", [16, 32, 40])
def test_forward_backward_shapes_and_range(size: int) -> None:
    torch.manual_seed(0)
    net = SentinelNet(2, 12, widths=(4, 8), hidden_dim=6)
    x = torch.randn(3, 2, size, size, requires_grad=True)
    e = torch.randn(3, 12)
    y = net(x, e)
    assert y.shape == (3,)
    assert ((y >= 0) & (y <= 1)).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters())


def test_text_condition_changes_output_and_ablation_ignores_it() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 16, 16)
    e1, e2 = torch.randn(2, 12), torch.randn(2, 12)
    net = SentinelNet(2, 12, widths=(4, 8), hidden_dim=6).eval()
    assert not torch.allclose(net(x, e1), net(x, e2))
    ablate = SentinelNet(2, 12, widths=(4, 8), hidden_dim=6, text_conditioning=False).eval()
    assert torch.equal(ablate(x, e1), ablate(x, e2))


def test_gating_matches_formula() -> None:
    # out = sigmoid(fc2(W2 z * relu(fc1(W1 z * f)))) with z = [f; e]
    torch.manual_seed(1)
    net = SentinelNet(2, 5, widths=(4,), hidden_dim=3).eval()
    x, e = torch.randn(1, 2, 16, 16), torch.randn(1, 5)
    f = net.features(x)
    z = torch.cat([f, e], 1)
    h = torch.relu(net.fc1(net.w1(z) * f))
    expected = torch.sigmoid(net.fc2(net.w2(z) * h)).squeeze(1)
    torch.testing.assert_close(net(x, e), expected)


def test_class_embedding_known_learned_unseen_fallback() -> None:
    base = np.eye(3, 4, dtype=np.float32)
    emb = ClassEmbedding(["liver", "Kidney_Left", "spleen"], base)
    with torch.no_grad():
        emb.delta[1] += 0.5
    out = emb(torch.tensor([1, 0]))
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5, 0.5, 0.5]))
    fallback = np.full((2, 4), 7.0, dtype=np.float32)
    got = emb.lookup(["kidney left", "pancreas"], fallback)
    torch.testing.assert_close(got[0], torch.tensor([0.5, 1.5, 0.5, 0.5]))  # normalised name is known
    torch.testing.assert_close(got[1], torch.full((4,), 7.0))  # unseen: its own base vector
    frozen = ClassEmbedding(["a"], base[:1], learnable=False)
    assert not frozen.delta.requires_grad


def test_hashed_embeddings_deterministic_unit_and_distinct(tmp_path: Path) -> None:
    a = hashed_embedding("Liver")
    assert a.shape == (TEXT_DIM,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    np.testing.assert_array_equal(a, hashed_embedding("liver"))
    assert abs(float(a @ hashed_embedding("spleen"))) < 0.3  # random unit vectors in 384-d: nearly orthogonal
    assert normalize_name("  Kidney_Left-upper ") == "kidney left upper"
    cache = tmp_path / "emb.safetensors"
    e = embed_names(["never seen structure", "liver"], backend="hashed", cache_file=cache)
    assert e.shape == (2, TEXT_DIM) and cache.is_file()
    text._CACHE.clear()
    np.testing.assert_array_equal(embed_names(["never seen structure"], "hashed", cache)[0], e[0])
    assert embed_names([], "hashed").shape == (0, TEXT_DIM)


def test_minilm_backend_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "minilm_available", lambda: False)
    with pytest.raises(MissingExtraError, match=r"labelwise\[text\]"):
        embed_names(["a structure nobody encoded"], backend="minilm")
    text._CACHE[("minilm", "cached organ")] = hashed_embedding("x")  # cached vectors need no encoder
    assert embed_names(["Cached_Organ"], backend="minilm").shape == (1, TEXT_DIM)
    assert embed_names(["liver"], backend="auto").shape == (1, TEXT_DIM)  # falls back to hashed
    with pytest.raises(ConfigError, match="unknown text backend"):
        embed_names(["liver"], backend="clip")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.skipif(not text.minilm_available(), reason="optional extra labelwise[text] not installed")
def test_minilm_gives_real_sentence_embeddings() -> None:
    e = embed_names(["kidney left", "kidney_right", "brain", "left kidney"], backend="minilm")
    assert e.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    sim = e @ e.T
    assert sim[0, 3] > 0.9  # word order barely matters
    assert sim[0, 1] > sim[0, 2] + 0.3  # the two kidneys are much closer than kidney and brain
    assert not np.allclose(e[0], hashed_embedding("kidney left"))


def test_module_exports() -> None:
    assert set(msent.__all__) == {"ClassEmbedding", "SentinelNet"}
