"""The batched augmentation and rotation: per-image randomness, and the geometry is right."""
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from reportgen import transforms as T
from reportgen.config import AugmentConfig


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_normalize_round_trip_and_constants():
    x = batch()
    z = T.normalize(x)
    assert torch.allclose(T.denormalize(z) * 255, x.float(), atol=1e-3)
    assert T.MEAN == (0.491, 0.482, 0.447) and T.STD == (0.247, 0.243, 0.261)


def test_identity_crop_without_flip_changes_nothing():
    z = T.normalize(batch())
    cfg = AugmentConfig(flip=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    out = T.augment(z, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out, z, atol=1e-5)


def test_flip_only_is_a_mirror_per_image():
    z = T.normalize(batch(64))
    cfg = AugmentConfig(flip=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    out = T.augment(z, cfg, torch.Generator().manual_seed(0))
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, z)]
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, z)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # about half, drawn per image


def test_each_image_gets_its_own_crop():
    one = T.normalize(batch(1))
    z = one.expand(32, -1, -1, -1).contiguous()
    out = T.augment(z, AugmentConfig(), torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:50].round(decimals=4).tolist()) for o in out}
    assert len(distinct) > 20
    # Same generator seed, same draws: the augmentation is reproducible.
    again = T.augment(z, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_crop_matches_torchvision_resized_crop():
    """A box of the sampler, resized by grid_sample, equals torchvision's resized_crop.

    On the outermost ring of output pixels ours blends in the real neighbour outside the
    box where torchvision (having cut the box out first) repeats the edge pixel.
    """
    z = T.normalize(batch(1))
    g = torch.Generator().manual_seed(3)
    top, left, ch, cw = T._crop_boxes(T._draw(1, AugmentConfig(), g, "cpu"), 32, 32,
                                      AugmentConfig())
    g = torch.Generator().manual_seed(3)
    cfg = AugmentConfig(flip=False)
    ours = T.augment(z, cfg, g)
    ref = TF.resized_crop(z, int(top), int(left), int(ch), int(cw), [32, 32],
                          interpolation=InterpolationMode.BILINEAR, antialias=False)
    assert torch.allclose(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-4)
    assert (ours - ref).abs().mean() < 0.05


def test_crop_boxes_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    top, left, ch, cw = T._crop_boxes(T._draw(5000, AugmentConfig(), g, "cpu"), 32, 32,
                                      AugmentConfig())
    area = ch * cw / 1024
    assert area.min() >= 0.75 and area.max() <= 1.0  # 0.8-1.0 before rounding to pixels
    assert ((top + ch) <= 32).all() and ((left + cw) <= 32).all() and (top >= 0).all()
    assert len(set(cw.tolist())) > 3


def test_rotation_by_zero_and_360_leaves_images_unchanged():
    z = T.normalize(batch())
    assert torch.equal(T.rotate(z, 0), z)
    assert torch.equal(T.rotate(z, 360), z)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_four_quarter_turns_are_the_identity(mode):
    z = T.normalize(batch())
    out = z
    for _ in range(4):
        out = T.rotate(out, 90, interpolation=mode)
    assert torch.allclose(out, z, atol=1e-5)
    assert torch.allclose(T.rotate(z, 90, mode), torch.rot90(z, 1, dims=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("angle", [10, 45, 170, -30])
def test_rotation_matches_torchvision(angle):
    """Same direction and geometry as torchvision's rotate, which the notebook suggests."""
    z = T.normalize(batch(4))
    ref = TF.rotate(z, angle, interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(T.rotate(z, angle, "bilinear", "mean"), ref, atol=1e-4)


def test_black_fill_is_black_in_pixel_space():
    z = T.normalize(torch.full((1, 3, 32, 32), 200, dtype=torch.uint8))
    out = T.denormalize(T.rotate(z, 45, "bilinear", "black"))
    assert out[0, :, 0, 0].abs().max() < 1e-5  # corner
    assert torch.allclose(out[0, :, 16, 16], torch.full((3,), 200 / 255), atol=1e-4)
    mean_fill = T.denormalize(T.rotate(z, 45, "bilinear", "mean"))
    assert torch.allclose(mean_fill[0, :, 0, 0], torch.tensor(T.MEAN), atol=1e-4)


def test_rotation_augmentation_rotates():
    z = T.normalize(batch(16))
    cfg = AugmentConfig(flip=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                        rotate_degrees=180)
    out = T.augment(z, cfg, torch.Generator().manual_seed(0))
    corners_filled = (out[:, :, 0, 0].abs() < 1e-6).all(1).float().mean()
    assert corners_filled > 0.5  # most rotations push the corners outside the image


def _stream_batches(xs_batches, cfgs, seeds):
    """Each run's augmented batches, batch after batch, from streams seeded `seeds`."""
    streams = [T.AugmentStream(c, torch.Generator().manual_seed(s)) for c, s in zip(cfgs, seeds)]
    return [T.augment_streams(xs, streams) for xs in xs_batches]


@pytest.mark.parametrize("n", [1, 7, 32])
def test_augment_stream_hands_out_augment_s_maps_a_block_at_a_time(n, monkeypatch):
    """Batch j of a stream is the slice of one `augment` draw for the whole block of batches
    that j falls in: every image gets the crop, flip and rotation that `augment` would draw
    for it, and a new block starts from where the generator stands after the last."""
    monkeypatch.setattr(T, "AUGMENT_BLOCK", 3)
    cfg = AugmentConfig(rotate_degrees=180)
    g = torch.Generator().manual_seed(n)
    xs = [T.normalize(torch.randint(0, 256, (1, n, 3, 32, 32), generator=g, dtype=torch.uint8))
          for _ in range(7)]  # blocks of 3, 3 and 1 (of which 2 go unused) batches
    out = [o[0] for o in _stream_batches(xs, [cfg], [5])]
    ref_gen = torch.Generator().manual_seed(5)
    for first in (0, 3, 6):
        block = torch.cat([x[0] for x in xs[first:first + 3]])
        if first == 6:  # the last block is drawn for 3 batches; only its first is used
            block = torch.cat([xs[6][0]] * 3)
        ref = T.augment(block, cfg, ref_gen).split(n)
        for j in range(first, min(first + 3, 7)):
            assert torch.equal(out[j], ref[j - first]), j
    # A block of one batch is `augment` itself, call after call.
    monkeypatch.setattr(T, "AUGMENT_BLOCK", 1)
    ref_gen = torch.Generator().manual_seed(5)
    for x, o in zip(xs, _stream_batches(xs, [cfg], [5])):
        assert torch.equal(o[0], T.augment(x[0], cfg, ref_gen))


def test_augment_stream_blocks_hold_a_bounded_number_of_images(monkeypatch):
    """A block covers at most AUGMENT_BLOCK_IMAGES images: two batches of 4 under a bound of
    10, and one batch larger than the bound is a block of its own."""
    monkeypatch.setattr(T, "AUGMENT_BLOCK_IMAGES", 10)
    cfg = AugmentConfig()
    g = torch.Generator().manual_seed(1)
    for n, per_block in ((4, 2), (13, 1)):
        xs = [T.normalize(torch.randint(0, 256, (1, n, 3, 32, 32), generator=g,
                                        dtype=torch.uint8)) for _ in range(4)]
        out = [o[0] for o in _stream_batches(xs, [cfg], [5])]
        ref_gen = torch.Generator().manual_seed(5)
        for first in range(0, 4, per_block):
            block = torch.cat([x[0] for x in xs[first:first + per_block]])
            for j, r in enumerate(T.augment(block, cfg, ref_gen).split(n)):
                assert torch.equal(out[first + j], r), (n, first + j)


@pytest.mark.parametrize("n", [1, 7, 32])
def test_runs_augmented_together_get_exactly_their_own_augmentation(n, monkeypatch):
    """augment_streams (runs side by side) gives each run, bit for bit, what its stream gives
    it alone, over batches that cross a block's end: different configurations (a rotating run
    among plain ones, another crop rule) each with their own draws."""
    monkeypatch.setattr(T, "AUGMENT_BLOCK", 2)
    cfgs = [AugmentConfig(), AugmentConfig(rotate_degrees=180), AugmentConfig(),
            AugmentConfig(flip=False, crop_scale=(0.3, 1.0), crop_ratio=(0.5, 2.0)),
            AugmentConfig(rotate_degrees=180)]
    g = torch.Generator().manual_seed(n)
    batches = [T.normalize(torch.randint(0, 256, (len(cfgs), n, 3, 32, 32), generator=g,
                                         dtype=torch.uint8)) for _ in range(3)]
    seeds = [10 + k for k in range(len(cfgs))]
    together = _stream_batches(batches, cfgs, seeds)
    for k, (c, s) in enumerate(zip(cfgs, seeds)):
        alone = _stream_batches([b[k:k + 1] for b in batches], [c], [s])
        for t, a in zip(together, alone):
            assert t.shape == batches[0].shape
            assert torch.equal(t[k], a[0]), f"run {k}"
    # The runs' draws are their own: the same images, other seeds, other views.
    other = _stream_batches([b[:1] for b in batches], [cfgs[0]], [11])
    assert not torch.equal(together[0][0], other[0][0])


def test_pixel_permutations_of_runs_side_by_side():
    x = T.normalize(batch(6)).view(2, 3, 3, 32, 32)
    perm = T.pixel_permutation(7)
    out = T.permute_pixels_runs(x, [None, perm])
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], T.permute_pixels(x[1], perm))
    assert not torch.equal(out[1], x[1])
