"""A shipped model as the torch-free decoder holds it: entropy parameters, latent decoding, synthesis.

``DecoderModel.load`` reads the model's compiled decoder program (``program.load``, hash-checked
against the manifest; the weights file is not needed), then rebuilds exactly what ``ANFIC`` and
``ANFICCheckerboard`` compute from a file's chunks: the hyperlatent's integer CDFs, the
fixed-point hyper-synthesis and checkerboard context (``nets.ExactNet``), the scale-table indices
and means, the latent symbols pass by pass, and the image (``synthesis``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import entropy_coding as ec
from .. import zoo
from .. import container as fmt
from ..zoo import ModelNotFound, find_entry, sha256_file
from . import program as prog
from .nets import ACT_BITS, ExactNet, to_grid
from .synthesis import Synthesis

LOG_SCALE_MIN, LOG_SCALE_MAX = -4.0, 6.0  # the log-scale range of the entropy parameters (both decoders)


class NoDecoderProgram(ModelNotFound):
    """The model is installed, but the torch-free decoder cannot run it (no program, or an
    architecture it does not know)."""


class DecodeError(ValueError):
    """The file is well-formed but its content does not decode consistently."""


def anchor_mask(height: int, width: int) -> np.ndarray:
    """True at the checkerboard's anchors, (row + column) even."""
    return (np.arange(height)[:, None] + np.arange(width)[None, :]) % 2 == 0


class DecoderModel:
    archs = ("anfic", "anfic-ckbd")

    def __init__(self, program: dict, arrays: dict, model_id: str = ""):
        self.model_id, self.arch = model_id, program["arch"]
        if self.arch not in self.archs:
            raise NoDecoderProgram(f"the torch-free decoder does not know architecture {self.arch!r}")
        self.fixed = program["quantizer"] == "fixed"
        self.num_qualities, self.pad_multiple = program["num_qualities"], program["pad_multiple"]
        self.block, self.hyper_n, self.m = program["block"], program["hyper_N"], program["M"]
        t = {k[len("tables."):]: v for k, v in arrays.items() if k.startswith("tables.")}
        self.hyper_tables = ec.FactorizedTables(t["hyper_cdf"], t["hyper_cdf_length"], t["hyper_offset"])
        self.medians = t["hyper_medians"].astype(np.float32).reshape(-1, 1, 1)
        self.scales = t["scale_table"].astype(np.float64)
        self.thresholds = np.ascontiguousarray(t["log_scale_thresholds"].astype(np.float64)[:-1])
        self.h_s = ExactNet(prog.lower(program["hyper"], arrays))
        self.context = None
        if "context" in program:  # the checkerboard context (and the multiscale model's fine scale)
            (ctx,) = prog.lower(program["context"], arrays)
            self.context_pad = ctx.pad
            ctx.stride, ctx.pad = 2, (0, 0)  # evaluated at one lattice of non-anchors at a time
            self.context, self.fusion = ExactNet([ctx]), ExactNet(prog.lower(program["fusion"], arrays))
        self.synthesis = Synthesis(program, arrays)

    @classmethod
    def load(cls, model_id: str, weights_hash: bytes | None = None, weights_dir: Path | None = None) -> "DecoderModel":
        wdir = Path(weights_dir) if weights_dir else zoo.WEIGHTS_DIR  # read now: tests install models
        entry = find_entry(model_id, weights_hash, weights_dir=wdir)
        if "decoder" not in entry:
            raise NoDecoderProgram(f"model {model_id!r} ({entry['sha256'][:16]}) has no decoder program for the "
                                "torch-free decoder (make decoder-programs)")
        path = wdir / entry["decoder"]["file"]
        if sha256_file(path) != entry["decoder"]["sha256"]:
            raise ModelNotFound(f"{path} is damaged: its SHA-256 does not match the manifest")
        try:
            program, arrays = prog.load(path)
        except prog.ProgramError as e:
            raise NoDecoderProgram(f"model {model_id!r}: {e}") from None
        return cls.build(program, arrays, model_id)

    @staticmethod
    def build(program: dict, arrays: dict, model_id: str = "") -> "DecoderModel":
        """The decoder of a program's architecture. From float weights (at export) it records every
        weight's decoder forms in ``arrays`` (``program.compiled_arrays``)."""
        if program["arch"] == "ms-anfic":
            from .multiscale import MSDecoderModel
            return MSDecoderModel(program, arrays, model_id)
        return DecoderModel(program, arrays, model_id)

    # -- entropy parameters -------------------------------------------------------------------------
    def latent_shape(self, width: int, height: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        m, f = self.pad_multiple, self.block
        ph, pw = -(-height // m) * m, -(-width // m) * m
        return (self.hyper_n, ph // (4 * f), pw // (4 * f)), (self.m, ph // f, pw // f)

    def _hyper(self, h_sym: np.ndarray) -> np.ndarray:
        h_hat = h_sym.astype(np.float32) + self.medians   # EntropyBottleneck.dequantize
        return self.h_s(to_grid(h_hat[None]))

    def _split(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact network output (means, then log-scales) -> (scale-table indices, means fp32)."""
        half = out.shape[1] // 2
        mu, log_sigma = out[:, :half], out[:, half:]
        log_sigma = np.clip(log_sigma, LOG_SCALE_MIN * 2**ACT_BITS, LOG_SCALE_MAX * 2**ACT_BITS)
        return np.searchsorted(self.thresholds, log_sigma, side="left").astype(np.int32), \
            (mu * 2.0**-ACT_BITS).astype(np.float32)

    def _with_context(self, base: np.ndarray, y_round: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``ANFICCheckerboard.exact_entropy_parameters`` with the anchors decoded (those in ``mask``)."""
        out = base.copy()
        anchor = anchor_mask(*y_round.shape[-2:])
        anchors = to_grid(y_round * (anchor if mask is None else anchor & mask))
        p = self.context_pad
        padded = np.pad(anchors, ((0, 0), (0, 0), p, p))
        lattices = [(slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2))]
        ctx = [self.context(padded[:, :, rows.start:, cols.start:]) for rows, cols in lattices]
        flat = [np.concatenate([base[:, :, rows, cols], c], 1).reshape(*c.shape[:1], -1, c.shape[2] * c.shape[3])
                for (rows, cols), c in zip(lattices, ctx)]
        corr = self.fusion(np.concatenate(flat, 2)[:, :, None])[:, :, 0]
        n0 = flat[0].shape[-1]
        for (rows, cols), c, part in zip(lattices, ctx, (corr[..., :n0], corr[..., n0:])):
            out[:, :, rows, cols] += part.reshape(*part.shape[:2], *c.shape[2:])
        return out

    def coding_offset(self, mu: np.ndarray) -> np.ndarray:
        mu = mu.astype(np.float64)
        return mu - np.rint(mu) if self.fixed else np.zeros_like(mu)

    def grid_mean(self, mu: np.ndarray) -> np.ndarray:
        return np.rint(mu).astype(np.float64) if self.fixed else mu.astype(np.float64)

    # -- a tile's chunks -> its latent ----------------------------------------------------------------
    def latent(self, chunks: dict[bytes, bytes], width: int, height: int) -> np.ndarray:
        """HLAT and LATN of one image or tile -> the dequantized latent [1, M, h, w], float64."""
        for t in (fmt.HYPER_CHUNK, fmt.LATENT_CHUNK):
            if t not in chunks:
                raise DecodeError(f"missing {t.decode()} chunk")
        hshape, yshape = self.latent_shape(width, height)
        try:
            h_sym = self.hyper_tables.decode(chunks[fmt.HYPER_CHUNK], hshape)
        except ec.EntropyCodingError as e:
            raise DecodeError(f"HLAT: {e}") from None
        base = self._hyper(h_sym)
        first = self._split(base)
        if self.context is None:
            passes = [(np.ones(yshape[1:], dtype=bool), lambda _: first)]
        else:
            anchor = anchor_mask(*yshape[1:])

            def with_context(y_sym: np.ndarray):  # the anchors are decoded: every position's parameters
                y_round = y_sym[None].astype(np.float64) + np.rint(first[1]).astype(np.float64)
                return self._split(self._with_context(base, y_round))
            passes = [(anchor, lambda _: first), (~anchor, with_context)]
        y_sym, mu = self._decode_passes(chunks[fmt.LATENT_CHUNK], passes)
        return y_sym[None].astype(np.float64) + self.grid_mean(mu)

    def _decode_passes(self, payload: bytes, passes, what: str = "LATN") -> tuple[np.ndarray, np.ndarray]:
        """``bitstream._latent``: a latent stream (LATN, CLAT) pass by pass; the CRC of the final
        scale indices is checked before the last pass's symbols are read."""
        bound, crc, stream = fmt.unpack_latent(payload, what)
        y_sym = None
        try:
            dec = ec.LatentDecoder(stream, bound)
            for i, (where, parameters) in enumerate(passes):
                scale_index, mu = parameters(y_sym)
                scale_index = scale_index[0]
                if y_sym is None:
                    y_sym = np.zeros(scale_index.shape, dtype=np.int32)
                if i == len(passes) - 1 and ec.index_checksum(scale_index) != crc:
                    raise DecodeError(f"{what}: decoder/encoder mismatch: the rebuilt entropy parameters differ from "
                                      "the encoder's (file written by different weights or a non-deterministic platform)")
                off = self.coding_offset(mu)[0]
                y_sym[:, where] = dec.decode(self.scales[scale_index][:, where], off[:, where])
        except ec.EntropyCodingError as e:
            raise DecodeError(f"{what}: {e}") from None
        return y_sym, mu[0]
