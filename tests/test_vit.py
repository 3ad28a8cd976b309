"""The video ViT backbone: tube tokens, position tables, (cross-)attention, head."""

import pytest
import torch

from stvideo.models.vit import Attention, VideoViT, sincos_3d


def _vit(**kw) -> VideoViT:
    args = dict(num_classes=5, num_frames=4, img_size=16, patch_size=8, tubelet_size=2, embed_dim=24, depth=2)
    args.update(kw)
    return VideoViT(num_heads=2, **args)


def test_token_grid_and_logits_shape():
    torch.manual_seed(0)
    m = _vit()
    x, grid = m.embed(torch.randn(3, 3, 4, 16, 16))
    assert grid == (2, 2, 2) and x.shape == (3, 1 + 8, 24)
    assert m(torch.randn(3, 3, 4, 16, 16)).shape == (3, 5)


def test_wrong_input_size_names_the_grid():
    with pytest.raises(ValueError, match=r"\(2, 3, 3\) token grid but the model was built for \(2, 2, 2\)"):
        _vit()(torch.randn(1, 3, 4, 24, 24))
    with pytest.raises(ValueError, match="not divisible"):
        _vit()(torch.randn(1, 3, 3, 16, 16))


def test_sincos_table_encodes_time_and_space_separately():
    t, h, w, c = 3, 2, 4, 48
    table = sincos_3d((t, h, w), c).view(t, h, w, c)
    spatial = (3 * c // 4) // 4 * 4
    # the temporal channels depend on t only, the spatial channels on (h, w) only
    assert torch.equal(table[:, 0, 0, : c - spatial], table[:, 1, 3, : c - spatial])
    assert torch.equal(table[0, :, :, c - spatial :], table[2, :, :, c - spatial :])
    flat = table.reshape(t * h * w, c)
    assert torch.cdist(flat, flat).add(torch.eye(t * h * w)).min() > 0.1  # every position distinct


def test_joint_and_separable_embeddings_agree_at_init():
    torch.manual_seed(0)
    joint, sep = _vit(), _vit(pos_embed="separable")
    torch.testing.assert_close(joint.position_embedding(), sep.position_embedding())
    assert joint.position_embedding()[0, 0].abs().sum() == 0  # cls position starts at zero


def test_cross_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3).eval()
    q_in, ctx = torch.randn(2, 5, 12), torch.randn(2, 7, 12)
    w, b = attn.qkv.weight, attn.qkv.bias
    q = (q_in @ w[:12].T + b[:12]).view(2, 5, 3, 4).transpose(1, 2)
    k = (ctx @ w[12:24].T + b[12:24]).view(2, 7, 3, 4).transpose(1, 2)
    v = (ctx @ w[24:].T + b[24:]).view(2, 7, 3, 4).transpose(1, 2)
    ref = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attn(q_in, ctx), ref)
    torch.testing.assert_close(attn(q_in), attn(q_in, q_in))  # self-attention is the special case


def test_cls_head_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = _vit(head_pool="cls", pos_embed="separable")
    m(torch.randn(2, 3, 4, 16, 16)).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
