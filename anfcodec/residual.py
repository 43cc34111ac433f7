"""Near-lossless layer: the pixel residual of the lossy decode, quantized with an error bound.

With a maximum error ``tau`` (0 = lossless) every residual r = x - x_lossy is
quantized to k = round(r / (2 tau + 1)), so ``x_lossy + (2 tau + 1) k``, clipped to
0..255, is within ``tau`` of the original in every sample. The symbols are coded
as Laplace variables whose scale is chosen per 16x16 block and plane by the
encoder (the maximum-likelihood scale, snapped to a fixed table) and sent as side
information: the decoder needs nothing it could compute differently.

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


class ResidualError(ValueError):
    pass


@dataclass
class Residual:
    tau: int
    lossy_crc: int
    bound: int
    stream: bytes

    def pack(self) -> bytes:
        """RESI payload: tau (u8), block size (u8), bound (u16), lossy CRC32 (u32), range-coder words."""
        return struct.pack(">BBHI", self.tau, BLOCK, self.bound, self.lossy_crc) + self.stream

    @classmethod
    def unpack(cls, payload: bytes) -> "Residual":
        if len(payload) < 8:
            raise ResidualError("RESI chunk too short")
        tau, block, bound, crc = struct.unpack(">BBHI", payload[:8])
        if block != BLOCK or tau > MAX_TAU:
            raise ResidualError(f"RESI: unsupported block {block} or max error {tau}")
        return cls(tau, crc, bound, payload[8:])

    def matches(self, lossy: np.ndarray) -> bool:
        """Whether ``lossy`` is the base layer the encoder coded this residual against."""
        return zlib.crc32(np.ascontiguousarray(lossy).tobytes()) == self.lossy_crc


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


def encode(original: np.ndarray, lossy: np.ndarray, tau: int) -> Residual:
    """uint8 [H, W, C] planes -> the residual layer that brings ``lossy`` within ``tau`` of ``original``."""
    if not 0 <= tau <= MAX_TAU:
        raise ValueError(f"max error must be 0..{MAX_TAU}, got {tau}")
    step = 2 * tau + 1
    r = original.astype(np.int32) - lossy.astype(np.int32)
    k = np.sign(r) * ((np.abs(r) + tau) // step)
    blocks = np.concatenate([_blocks(k[..., c]) for c in range(k.shape[2])])
    # Laplace ML scale is mean |k|; snap it to the table in log space.
    b = np.abs(blocks).mean(axis=1)
    index = np.abs(np.log(np.maximum(b, 1e-3))[:, None] - np.log(ec.RESIDUAL_SCALES)[None]).argmin(axis=1)
    bound, stream = ec.encode_residual(blocks, index, BLOCK * BLOCK)
    return Residual(tau, zlib.crc32(np.ascontiguousarray(lossy).tobytes()), bound, stream)


def decode(res: Residual, lossy: np.ndarray) -> tuple[np.ndarray, bool]:
    """(pixels within tau of the original, whether the lossy layer matched the encoder's)."""
    h, w, c = lossy.shape
    nb = (-(-h // BLOCK)) * (-(-w // BLOCK))
    sym, _ = ec.decode_residual(res.stream, res.bound, nb * c, BLOCK * BLOCK)
    planes = sym.reshape(c, nb, BLOCK * BLOCK)
    k = np.stack([_unblocks(planes[i], h, w) for i in range(c)], axis=-1)
    out = np.clip(lossy.astype(np.int32) + (2 * res.tau + 1) * k, 0, 255).astype(np.uint8)
    return out, res.matches(lossy)
