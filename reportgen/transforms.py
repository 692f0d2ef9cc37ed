"""Batched image transforms on the device: normalisation, the notebook's augmentation,
rotation and the fixed pixel permutation.

Every geometric transform is one affine resampling (`affine_grid` + `grid_sample`) of the whole
batch, with one matrix per image, so each image gets its own random flip, crop and rotation
without a per-image Python loop.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig

# The notebook's normalisation statistics (of the original CIFAR-10 training images).
MEAN = (0.491, 0.482, 0.447)
STD = (0.247, 0.243, 0.261)
FLIP_PROBABILITY = 0.5  # torchvision's RandomHorizontalFlip default, as in the notebook


@functools.lru_cache(maxsize=None)
def _stats_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building them from Python lists on a GPU is a blocking
    # host-to-device copy, which must not happen on every training step.
    with torch.inference_mode(False):  # usable in training even if first made in evaluation
        mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(device)
        std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    return mean, std


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _stats_on(x.device)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float32, zero mean and unit std per channel."""
    mean, std = _stats(x)
    return (x.float().div_(255.0) - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, to [0, 1] floats (for pictures)."""
    mean, std = _stats(x)
    return (x * std + mean).clamp(0, 1)


def fill_value(fill: str, x: torch.Tensor) -> torch.Tensor | None:
    """The normalised colour that corners outside the image take; None means 0 (the mean colour)."""
    if fill == "mean":
        return None
    if fill == "black":
        mean, std = _stats(x)
        return (0.0 - mean) / std
    raise ValueError(f"fill {fill!r}: use mean or black")


def _resample(x: torch.Tensor, theta: torch.Tensor, mode: str, fill: torch.Tensor | None,
              padding: str = "zeros"):
    """Sample `x` (normalised floats) at the affine map `theta` (N x 2 x 3, output -> input)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if fill is None:  # zeros padding is the mean colour after normalisation
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)
    # Shift so the wanted fill is 0; interpolation is linear, so shifting back is exact.
    return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros",
                         align_corners=False) + fill


def _cos_sin(degrees: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rad = torch.deg2rad(degrees.double())
    c, s = torch.cos(rad), torch.sin(rad)
    # Exact values at multiples of 90 degrees, so those rotations move pixels exactly.
    return c.round(decimals=12).float(), s.round(decimals=12).float()


def rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    """N x 2 x 3 maps for a counter-clockwise rotation about the centre (as torchvision's rotate)."""
    c, s = _cos_sin(degrees)
    z = torch.zeros_like(c)
    # Output pixel q samples the input at R q with y pointing down: [[c, -s], [s, c]].
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], -2)


def rotate(x: torch.Tensor, degrees: float, interpolation: str = "bilinear",
           fill: str = "mean") -> torch.Tensor:
    """Rotate a normalised batch by one angle (counter-clockwise, about the image centre)."""
    if degrees % 360 == 0:
        return x
    theta = rotation_matrices(torch.full((x.shape[0],), float(degrees), device=x.device))
    return _resample(x, theta, interpolation, fill_value(fill, x))


TRIES = 10  # RandomResizedCrop's attempts at a box before it takes the whole image


def _draw(n: int, cfg: AugmentConfig, g: torch.Generator, device) -> dict[str, torch.Tensor]:
    """One run's uniform draws for a batch of n images, always in this order from its own
    generator (so a run's augmentation depends only on its generator's seed)."""
    def u(*shape):
        return torch.rand(*shape, generator=g, device=device)

    d = {"area": u(n, TRIES), "ratio": u(n, TRIES), "top": u(n), "left": u(n)}
    if cfg.flip:
        d["flip"] = u(n)
    if cfg.rotate_degrees > 0:
        d["rotate"] = u(n)
    return d


def _crop_boxes(d: dict[str, torch.Tensor], h: int, w: int, cfg: AugmentConfig):
    """RandomResizedCrop's boxes (torchvision's rule: 10 tries, then the whole image) from
    the draws `d`, batched. In float64, as torchvision computes a box's size in Python: every
    image's box is then the same whatever the batch it is computed in (a float32 exp of a
    vectorised kernel and of its scalar tail may differ in the last bit)."""
    n = d["area"].shape[0]
    dev = d["area"].device
    area = float(h * w)
    lo, hi = cfg.crop_scale
    target = area * (lo + (hi - lo) * d["area"].double())
    log_r = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * d["ratio"].double())
    cw = torch.sqrt(target * ratio).round()
    ch = torch.sqrt(target / ratio).round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=dev))
    pick = first.clamp(min=0).unsqueeze(1)
    cw = torch.where(first >= 0, cw.gather(1, pick).squeeze(1), float(w)).float()
    ch = torch.where(first >= 0, ch.gather(1, pick).squeeze(1), float(h)).float()
    # torchvision draws the corner uniformly among the integer positions that fit.
    top = torch.floor(d["top"] * (h - ch + 1))
    left = torch.floor(d["left"] * (w - cw + 1))
    return top, left, ch, cw


def _affine_maps(d: dict[str, torch.Tensor], h: int, w: int, cfg: AugmentConfig) -> torch.Tensor:
    """N x 2 x 3 maps (output -> input) of flip, crop and rotation, composed, from the draws."""
    top, left, ch, cw = _crop_boxes(d, h, w, cfg)
    n, dev = top.shape[0], top.device
    # Crop box -> normalised coordinates (align_corners=False): x_in = sx * x_out + tx.
    sx, sy = cw / w, ch / h
    tx, ty = (2 * left + cw) / w - 1, (2 * top + ch) / h - 1
    if cfg.flip:
        sx = torch.where(d["flip"] < FLIP_PROBABILITY, -sx, sx)
    crop = torch.zeros(n, 3, 3, device=dev)
    crop[:, 0, 0], crop[:, 0, 2], crop[:, 1, 1], crop[:, 1, 2], crop[:, 2, 2] = sx, tx, sy, ty, 1
    if cfg.rotate_degrees > 0:
        rot = torch.zeros(n, 3, 3, device=dev)
        rot[:, :2] = rotation_matrices((2 * d["rotate"] - 1) * cfg.rotate_degrees)
        rot[:, 2, 2] = 1
        crop = crop @ rot  # rotate the cropped view, then look it up in the image
    return crop[:, :2]


def _padding(cfg: AugmentConfig) -> str:
    # Without rotation every sample lies in the image; "border" clamps the half-pixel at the
    # edges as torchvision's resize does, instead of blending in the zero padding (the mean
    # colour, which a rotation's corners take).
    return "zeros" if cfg.rotate_degrees > 0 else "border"


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The notebook's training augmentation on a normalised batch, one draw per image.

    RandomHorizontalFlip, then RandomResizedCrop((32, 32), scale, ratio) with bilinear
    resizing, then (for Part 2's comparison model) a random rotation in [-d, d] degrees with
    the mean colour in the corners. All three are composed into one affine map per image.
    Training draws the same maps a block of batches at a time (AugmentStream).
    """
    n, _, h, w = x.shape
    theta = _affine_maps(_draw(n, cfg, g, x.device), h, w, cfg)
    return _resample(x, theta, "bilinear", None, padding=_padding(cfg))


def _resample_runs(xs: torch.Tensor, theta: torch.Tensor, pads: list[str]) -> torch.Tensor:
    """Run k's batch xs[k] resampled at its maps theta[k] (K x N x 2 x 3) with padding pads[k]."""
    if len(set(pads)) == 1:
        return _resample(xs.flatten(0, 1), theta.flatten(0, 1), "bilinear", None,
                         padding=pads[0]).view_as(xs)
    out = torch.empty_like(xs)
    for pad in set(pads):
        runs = [i for i, p in enumerate(pads) if p == pad]
        out[runs] = _resample(xs[runs].flatten(0, 1), theta[runs].flatten(0, 1), "bilinear",
                              None, padding=pad).view(len(runs), *xs.shape[1:])
    return out


AUGMENT_BLOCK = 64  # training batches whose augmentation one draw covers (AugmentStream)
# ... but at most this many images (unless one batch has more): a block's float64 crop
# arithmetic takes about 0.5 KB an image, and a huge batch has few steps to save.
AUGMENT_BLOCK_IMAGES = 8192


class AugmentStream:
    """One run's training augmentation: the affine maps of `augment`, drawn for
    AUGMENT_BLOCK batches (of at most AUGMENT_BLOCK_IMAGES images in all) at once from the
    run's generator and handed out batch by batch.

    The draws and the arithmetic that turns them into crop boxes and maps are some 90 small
    operations. Per batch, they cost a step about as much host time as Lightning's loop
    (0.5 of 1.8 ms a step on the 2-core CPU, with a model too small to matter), and on a GPU
    each is a kernel launch. Per block, a step keeps only the resampling. The maps depend
    only on the generator's seed and the sequence of batch shapes asked for, so a run
    reseeded at an epoch's start (as `Classifier` does) repeats them on resume and side by
    side."""

    def __init__(self, cfg: AugmentConfig, gen: torch.Generator):
        self.cfg, self.gen = cfg, gen
        self._maps: torch.Tensor | None = None
        self._shape: tuple[int, int, int] | None = None
        self._pos = 0

    def next_maps(self, n: int, h: int, w: int, device) -> torch.Tensor:
        """The n x 2 x 3 maps (output -> input) of the next batch of n images of size h x w."""
        if self._maps is None or self._shape != (n, h, w) or self._pos + n > len(self._maps):
            # Crop boxes are computed in float64, so an image's map does not depend on how
            # many images share its draw (see _crop_boxes).
            batches = max(1, min(AUGMENT_BLOCK, AUGMENT_BLOCK_IMAGES // n))
            draws = _draw(n * batches, self.cfg, self.gen, device)
            self._maps, self._shape, self._pos = _affine_maps(draws, h, w, self.cfg), (n, h, w), 0
        maps = self._maps[self._pos:self._pos + n]
        self._pos += n
        return maps


def augment_streams(xs: torch.Tensor, streams: list[AugmentStream]) -> torch.Tensor:
    """K runs' training augmentation at once: xs is K x N x C x H x W normalised, run k's
    batch at k, augmented with the next maps of its own stream."""
    k, n, _, h, w = xs.shape
    maps = [s.next_maps(n, h, w, xs.device) for s in streams]
    theta = maps[0].unsqueeze(0) if k == 1 else torch.stack(maps)  # a run alone: no copy
    return _resample_runs(xs, theta, [_padding(s.cfg) for s in streams])


def pixel_permutation(seed: int, size: int = 32 * 32) -> torch.Tensor:
    """A fixed random permutation of the pixel positions, reproducible from its seed."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def check_permutation(perm: object, size: int = 32 * 32) -> torch.Tensor:
    """Return `perm` as a LongTensor if it is a permutation of range(size), else raise ValueError."""
    if not isinstance(perm, torch.Tensor) or perm.ndim != 1 or perm.dtype not in (
            torch.int64, torch.int32, torch.int16):
        raise ValueError("a pixel permutation must be a 1-D integer tensor")
    if perm.numel() != size:
        raise ValueError(f"the pixel permutation has {perm.numel()} entries, expected {size} "
                         "(one per pixel of a 32x32 image)")
    if not torch.equal(torch.sort(perm.long()).values, torch.arange(size)):
        raise ValueError("the saved pixel permutation is not a permutation (repeated or "
                         "missing positions)")
    return perm.long()


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Move pixel perm[k] to position k, the same way in every channel and every image."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).index_select(2, perm.to(x.device)).reshape(n, c, h, w)


def permute_pixels_runs(xs: torch.Tensor, perms: list[torch.Tensor | None]) -> torch.Tensor:
    """`permute_pixels` for K runs at once: xs is K x N x C x H x W, run k's batch permuted
    by perms[k] (None: left as it is), in one gather."""
    k, n, c, h, w = xs.shape
    index = torch.stack([torch.arange(h * w, device=xs.device) if p is None else p.to(xs.device)
                         for p in perms])
    return xs.reshape(k, n, c, h * w).gather(
        3, index.view(k, 1, 1, h * w).expand(k, n, c, h * w)).view(k, n, c, h, w)
