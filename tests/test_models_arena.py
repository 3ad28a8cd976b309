"""ToMe and RLT: exact equality with the plain ViT when inactive, merge bookkeeping, proportional
attention, padding independence, dense output layout, and training-free loading of a ViT checkpoint."""

from __future__ import annotations

import pytest
import torch

from stvideo.analysis.flops import count_flops
from stvideo.models.rlt import RLTViT, run_lengths, tube_differences
from stvideo.models.tome import KeyStashAttention, ToMeViT, bipartite_merge, layer_merges
from stvideo.models.vit import VideoViT

TINY = dict(num_classes=5, num_frames=8, img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=4)
GRID = (4, 4, 4)  # token grid of TINY
N = 64


def _video(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


def _static(video: torch.Tensor, still: slice) -> torch.Tensor:
    """Copy the first tubelet over every later one in the rows ``still`` (an exact static region)."""
    out = video.clone()
    for t in range(2, out.shape[2], 2):
        out[:, :, t : t + 2, still, :] = out[:, :, 0:2, still, :]
    return out


def _pair(cls, seed: int = 0, **kw) -> tuple[VideoViT, torch.nn.Module]:
    torch.manual_seed(seed)
    vit = VideoViT(**TINY).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = cls(**TINY, **kw).eval()
    missing = model.load_state_dict(vit.state_dict(), strict=False).missing_keys
    assert set(missing) <= {"length_embed"}
    return vit, model


@pytest.mark.parametrize("head_pool", ["mean", "cls"])
def test_tome_r0_is_the_plain_vit(head_pool: str) -> None:
    torch.manual_seed(0)
    vit = VideoViT(**TINY, head_pool=head_pool).eval()
    tome = ToMeViT(**TINY, head_pool=head_pool, r=0).eval()
    tome.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert torch.equal(tome(_video()), vit(_video()))


def test_rlt_threshold0_is_the_plain_vit_even_with_repeats() -> None:
    vit, rlt = _pair(RLTViT, threshold=0.0)
    clip = _static(_video(), slice(0, 16))
    with torch.no_grad():
        assert torch.equal(rlt(clip), vit(clip))
    assert rlt.tokens_kept.tolist() == [N, N]


def test_merge_sizes_sum_and_merged_token_is_the_size_weighted_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x, metric = torch.randn(2, 17, 6, generator=g), torch.randn(2, 17, 4, generator=g)
    size = torch.randint(1, 4, (2, 17, 1), generator=g).float()
    merged, new_size, old_to_new = bipartite_merge(x, size, metric, r=5, protect_first=True)
    assert merged.shape == (2, 12, 6) and torch.equal(new_size.sum(1), size.sum(1))
    assert (old_to_new[:, 0] == 0).all()  # cls stays first and alone
    for b in range(2):
        for j in range(12):
            members = (old_to_new[b] == j).nonzero().flatten()
            assert new_size[b, j, 0] == size[b, members].sum()
            expected = (x[b, members] * size[b, members]).sum(0) / size[b, members].sum()
            torch.testing.assert_close(merged[b, j], expected)


def test_tome_groups_partition_every_token_and_never_merge_cls() -> None:
    _, tome = _pair(ToMeViT, r=[6])
    with torch.no_grad():
        tome(_video())
    assert len(tome.merge_groups) == TINY["depth"]
    tokens = 1 + N
    for layer, group in enumerate(tome.merge_groups):
        assert group.shape == (2, tokens)
        remaining = tokens - 6 * (layer + 1)
        for b in range(2):
            assert torch.equal(group[b].unique(), torch.arange(remaining))  # sizes sum to the token count
            assert (group[b, 1:] != group[b, 0]).all()  # cls is in a group of its own


def test_proportional_attention_equals_duplicated_tokens() -> None:
    torch.manual_seed(0)
    attn = KeyStashAttention(12, 3).eval()
    x = torch.randn(1, 5, 12)
    sizes = torch.tensor([1, 3, 2, 1, 4])
    bias = sizes.float().log().view(1, 1, 1, -1)
    with torch.no_grad():
        merged = attn(x, attn_mask=bias)
        duplicated = attn(x.repeat_interleave(sizes, dim=1))
    first = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    torch.testing.assert_close(merged[0], duplicated[0, first], rtol=1e-5, atol=1e-6)


def test_tome_dense_output_undoes_the_merges_in_token_order() -> None:
    _, tome = _pair(ToMeViT, r=[8])
    video = _video()
    with torch.no_grad():
        tokens = tome.forward_features(video)
        tome.return_dense = True
        dense = tome(video)
    assert dense.shape == (2, 48, *GRID)
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), tokens[:, 1:], rtol=0, atol=0)
    group = tome.merge_groups[-1]
    for b in range(2):  # tokens of one group carry one feature; the head pools the unmerged map
        for j in group[b, 1:].unique():
            members = (group[b, 1:] == j).nonzero().flatten()
            t, hw = members // 16, members % 16
            feats = dense[b, :, t, hw // 4, hw % 4]
            assert torch.equal(feats, feats[:, :1].expand_as(feats))


def test_tome_dense_r0_equals_the_vit_token_map() -> None:
    vit, tome = _pair(ToMeViT, r=[0], return_dense=True)
    video = _video()
    with torch.no_grad():
        ref = vit.forward_features(video)[:, 1:]
        dense = tome(video)
    # position (t, h, w) is token t*H'*W' + h*W' + w
    assert torch.equal(dense[:, :, 2, 1, 3], ref[:, 2 * 16 + 1 * 4 + 3])
    assert torch.equal(dense.flatten(2).transpose(1, 2), ref)


def test_layer_merges_schedule() -> None:
    assert layer_merges([4], 3, 1) == [0, 4, 4]
    assert layer_merges([1, 2, 3], 3, 0) == [1, 2, 3]
    with pytest.raises(ValueError, match="TOME.R"):
        layer_merges([1, 2], 3, 0)


def test_rlt_keep_mask_and_run_lengths_on_a_static_region() -> None:
    clip = _static(_video(), slice(0, 16))  # the top 2 of 4 token rows never change
    diff = tube_differences(clip, 2, 8)
    assert diff.shape == (2, 3, 4, 4)
    assert (diff[:, :, :2] == 0).all() and (diff[:, :, 2:] > 0.5).all()
    _, rlt = _pair(RLTViT, threshold=0.1)
    keep = rlt.keep_mask(clip)
    assert keep.sum().item() == 2 * (N - 3 * 8)  # 8 static columns lose their 3 later tubes each
    start, length = run_lengths(keep.flatten(2))
    assert (length[:, 0, :8] == 4).all() and (length[:, 1:, :8] == 0).all() and (length[:, :, 8:] == 1).all()
    assert (start[:, :, :8] == 0).all() and torch.equal(start[0, :, 8], torch.arange(4))


def test_rlt_padding_never_changes_a_real_token() -> None:
    _, rlt = _pair(RLTViT, threshold=0.1)
    with torch.no_grad():
        rlt.length_embed.normal_()  # a trained length embedding
    static = _static(_video(1, seed=1), slice(0, 24))
    moving = _video(1, seed=2)
    rlt.return_dense = True
    with torch.no_grad():
        alone = rlt(static)
        assert rlt.tokens_kept.tolist() == [N - 3 * 12]
        batched = rlt(torch.cat([static, moving]))
        assert rlt.tokens_kept.tolist() == [N - 3 * 12, N]
        moving_alone = rlt(moving)
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1:], moving_alone, rtol=1e-5, atol=1e-5)


def test_rlt_dense_output_repeats_the_run_feature_and_logits_pool_it() -> None:
    _, rlt = _pair(RLTViT, threshold=0.1)
    clip = _static(_video(), slice(0, 16))
    rlt.return_dense = True
    with torch.no_grad():
        dense = rlt(clip)
        rlt.return_dense = False
        logits = rlt(clip)
    assert dense.shape == (2, 48, *GRID)
    for t in range(1, 4):  # dropped tubes carry the feature of the kept tube that starts their run
        assert torch.equal(dense[:, :, t, :2], dense[:, :, 0, :2])
    pooled = rlt.head(rlt.fc_norm(dense.flatten(2).mean(-1)))
    torch.testing.assert_close(logits, pooled)
    assert rlt.kept_mask.shape == (2, *GRID)


def test_rlt_static_clip_runs_fewer_tokens_through_the_blocks() -> None:
    _, rlt = _pair(RLTViT, threshold=0.1)
    seen = []
    rlt.blocks[0].attn.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    with torch.no_grad():
        rlt(_static(_video(1), slice(0, 16)))
    assert seen == [1 + N - 24]


def test_rlt_dropping_clip_flops_count_every_operator() -> None:
    vit, rlt = _pair(RLTViT, threshold=0.1)
    clip = _static(_video(1), slice(0, 16))
    with torch.no_grad():
        report, full = count_flops(rlt, clip), count_flops(vit, clip)
    assert report.unsupported == {}
    assert report.total < full.total
