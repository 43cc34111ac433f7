"""Near-lossless layer: the pixel residual of the lossy decode, quantized with an error bound.

With a maximum error ``tau`` (0 = lossless) every residual r = x - x_lossy is
quantized to k = round(r / (2 tau + 1)), so ``x_lossy + (2 tau + 1) k``, clipped to
0..255, is within ``tau`` of the original in every sample. The symbols are coded
as Laplace variables whose scale is chosen per 16x16 block by the encoder (the
maximum-likelihood scale, snapped to a fixed table) and sent as side
information: the decoder needs nothing it could compute differently.

Two layouts. ``RESC`` (what the encoder writes) first decorrelates: the colour
residuals are strongly correlated, so RGB symbols pass through the reversible
YCoCg-R lifting; and the chroma error of the lossy layer is smooth, so each plane
is split like a checkerboard, the "anchor" half coded as is and the other half as
its difference from a prediction, a per-plane weight times the mean of its four
anchor neighbours (integer arithmetic). ``RESI`` codes the symbols of each plane
directly. The encoder writes whichever is smaller: on Kodak 1-3 at quality 8 RESC
takes lossless from 12.07 to 10.68 bpp, but costs 4-6% at max errors 3-4, where
the symbols are mostly 0 and +-1 (``make bench-high-rate``).

The bound holds only if the decoder reproduces the encoder's lossy pixels, so the
payload carries their CRC32; a mismatch (a platform whose float synthesis rounds
one pixel differently) is reported, and the decode is then within tau + 1.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import entropy_coding as ec

BLOCK = 16
MAX_TAU = 127
WEIGHT_SCALE = 32  # prediction weights: i8 on a 1/32 grid


class ResidualError(ValueError):
    pass


@dataclass
class Residual:
    tau: int
    lossy_crc: int
    bound: int
    stream: bytes
    weights: tuple[int, ...] | None = None  # per plane, on the 1/WEIGHT_SCALE grid; None: the RESI layout

    def pack(self) -> bytes:
        """Payload: tau (u8), block size (u8), bound (u16), lossy CRC32 (u32); RESC adds the plane
        count (u8) and one prediction weight per plane (i8); then the range-coder words."""
        head = struct.pack(">BBHI", self.tau, BLOCK, self.bound, self.lossy_crc)
        if self.weights is not None:
            head += struct.pack(f">B{len(self.weights)}b", len(self.weights), *self.weights)
        return head + self.stream

    @classmethod
    def unpack(cls, payload: bytes, context: bool = True) -> "Residual":
        """Parse a RESC payload (``context``) or a RESI one."""
        name = "RESC" if context else "RESI"
        if len(payload) < 8 + context:
            raise ResidualError(f"{name} chunk too short")
        tau, block, bound, crc = struct.unpack(">BBHI", payload[:8])
        if block != BLOCK or tau > MAX_TAU:
            raise ResidualError(f"{name}: unsupported block {block} or max error {tau}")
        if not context:
            return cls(tau, crc, bound, payload[8:])
        planes = payload[8]
        if planes not in (1, 3) or len(payload) < 9 + planes:
            raise ResidualError(f"RESC: {planes} planes")
        weights = struct.unpack(f">{planes}b", payload[9:9 + planes])
        return cls(tau, crc, bound, payload[9 + planes:], weights)

    def matches(self, lossy: np.ndarray) -> bool:
        """Whether ``lossy`` is the base layer the encoder coded this residual against."""
        return _crc(lossy) == self.lossy_crc


def _blocks(plane: np.ndarray) -> np.ndarray:
    """[H, W] -> [nb, BLOCK*BLOCK], edge-padded to whole blocks, in raster order of blocks."""
    h, w = plane.shape
    ph, pw = -h % BLOCK, -w % BLOCK
    p = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    hb, wb = p.shape[0] // BLOCK, p.shape[1] // BLOCK
    return p.reshape(hb, BLOCK, wb, BLOCK).transpose(0, 2, 1, 3).reshape(hb * wb, BLOCK * BLOCK)


def _unblocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    p = blocks.reshape(hb, wb, BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(hb * BLOCK, wb * BLOCK)
    return p[:h, :w]


def _to_ycocg(k: np.ndarray) -> np.ndarray:
    """Integer RGB [H, W, 3] -> YCoCg-R (reversible lifting); one plane passes through."""
    if k.shape[2] != 3:
        return k
    r, g, b = k[..., 0], k[..., 1], k[..., 2]
    co = r - b
    t = b + (co >> 1)
    cg = g - t
    return np.stack([t + (cg >> 1), co, cg], axis=-1)


def _from_ycocg(p: np.ndarray) -> np.ndarray:
    if p.shape[2] != 3:
        return p
    y, co, cg = p[..., 0], p[..., 1], p[..., 2]
    t = y - (cg >> 1)
    b = t - (co >> 1)
    return np.stack([b + co, cg + t, b], axis=-1)


def _padded(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    return np.pad(plane, ((0, -h % BLOCK), (0, -w % BLOCK)), mode="edge")


# Within a block (even origin) the anchors are the samples with an even row + column.
_ANCHOR = ((np.arange(BLOCK)[:, None] + np.arange(BLOCK)[None]) % 2 == 0).reshape(-1)


def _neighbours(anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the in-plane 4-neighbours of every sample of a padded plane whose
    non-anchor samples are zero: for a non-anchor sample, its anchor neighbours."""
    a = np.pad(anchors, 1)
    one = np.pad(np.ones(anchors.shape, np.int64), 1)
    total = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]
    count = one[:-2, 1:-1] + one[2:, 1:-1] + one[1:-1, :-2] + one[1:-1, 2:]
    return total, count


def _prediction(total: np.ndarray, count: np.ndarray, weight: int) -> np.ndarray:
    """round(weight / WEIGHT_SCALE * total / count), half up, in integers."""
    den = 2 * WEIGHT_SCALE * count
    return (2 * weight * total + WEIGHT_SCALE * count) // den


def _anchor_mask(shape: tuple[int, int]) -> np.ndarray:
    return (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) % 2) == 0


def _scale_index(groups: np.ndarray) -> np.ndarray:
    """Laplace ML scale (mean |k|) of each row, snapped to the table in log space."""
    b = np.abs(groups).mean(axis=1)
    return np.abs(np.log(np.maximum(b, 1e-3))[:, None] - np.log(ec.RESIDUAL_SCALES)[None]).argmin(axis=1)


def encode(original: np.ndarray, lossy: np.ndarray, tau: int) -> Residual:
    """uint8 [H, W, C] planes -> the residual layer that brings ``lossy`` within ``tau`` of ``original``:
    the smaller of the two layouts. Decorrelation pays for fine steps (lossless: -11.5%) but not for
    coarse ones, whose symbols are mostly 0 and +-1 (max error 4: +6%)."""
    return min(encode_context(original, lossy, tau), encode_plain(original, lossy, tau), key=lambda r: len(r.pack()))


def encode_context(original: np.ndarray, lossy: np.ndarray, tau: int) -> Residual:
    """The RESC layout: YCoCg-R, then checkerboard prediction, one scale per block and half."""
    k = _to_ycocg(_symbols(original, lossy, tau))
    anchors, errors, weights = [], [], []
    for c in range(k.shape[2]):
        plane = _padded(k[..., c])
        mask = _anchor_mask(plane.shape)
        total, count = _neighbours(np.where(mask, plane, 0))
        mean = total[~mask] / count[~mask]
        fit = (mean * plane[~mask]).sum() / max((mean * mean).sum(), 1e-9)  # least squares
        weight = int(np.clip(round(fit * WEIGHT_SCALE), -128, 127))
        blocks = _blocks(plane - np.where(mask, 0, _prediction(total, count, weight)))
        anchors.append(blocks[:, _ANCHOR])
        errors.append(blocks[:, ~_ANCHOR])
        weights.append(weight)
    groups = np.concatenate(anchors + errors)
    bound, stream = ec.encode_residual(groups, _scale_index(groups), BLOCK * BLOCK // 2)
    return Residual(tau, _crc(lossy), bound, stream, tuple(weights))


def encode_plain(original: np.ndarray, lossy: np.ndarray, tau: int) -> Residual:
    """The RESI layout: the symbols of each plane as they are, one scale per block."""
    k = _symbols(original, lossy, tau)
    blocks = np.concatenate([_blocks(k[..., c]) for c in range(k.shape[2])])
    bound, stream = ec.encode_residual(blocks, _scale_index(blocks), BLOCK * BLOCK)
    return Residual(tau, _crc(lossy), bound, stream)


def _symbols(original: np.ndarray, lossy: np.ndarray, tau: int) -> np.ndarray:
    """k = sign(r) floor((|r| + tau) / (2 tau + 1)) of the residual r, int64 [H, W, C]."""
    if not 0 <= tau <= MAX_TAU:
        raise ValueError(f"max error must be 0..{MAX_TAU}, got {tau}")
    r = original.astype(np.int64) - lossy.astype(np.int64)
    return np.sign(r) * ((np.abs(r) + tau) // (2 * tau + 1))


def _crc(lossy: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(lossy).tobytes())


def decode(res: Residual, lossy: np.ndarray) -> tuple[np.ndarray, bool]:
    """(pixels within tau of the original, whether the lossy layer matched the encoder's)."""
    h, w, c = lossy.shape
    nb = (-(-h // BLOCK)) * (-(-w // BLOCK))
    if res.weights is None:
        sym, _ = ec.decode_residual(res.stream, res.bound, nb * c, BLOCK * BLOCK)
        planes = sym.reshape(c, nb, BLOCK * BLOCK)
        k = np.stack([_unblocks(planes[i], h, w) for i in range(c)], axis=-1)
    else:
        if len(res.weights) != c:
            raise ResidualError(f"RESC: {len(res.weights)} planes for a {c}-plane image")
        sym, _ = ec.decode_residual(res.stream, res.bound, 2 * nb * c, BLOCK * BLOCK // 2)
        halves = sym.astype(np.int64).reshape(2, c, nb, BLOCK * BLOCK // 2)
        planes = []
        for i, weight in enumerate(res.weights):
            blocks = np.empty((nb, BLOCK * BLOCK), np.int64)
            blocks[:, _ANCHOR], blocks[:, ~_ANCHOR] = halves[0, i], halves[1, i]
            ph, pw = -(-h // BLOCK) * BLOCK, -(-w // BLOCK) * BLOCK
            plane = _unblocks(blocks, ph, pw)
            mask = _anchor_mask(plane.shape)
            total, count = _neighbours(np.where(mask, plane, 0))
            planes.append((plane + np.where(mask, 0, _prediction(total, count, weight)))[:h, :w])
        k = _from_ycocg(np.stack(planes, axis=-1))
    out = np.clip(lossy.astype(np.int32) + (2 * res.tau + 1) * k, 0, 255).astype(np.uint8)
    return out, res.matches(lossy)
