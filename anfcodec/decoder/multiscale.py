"""MS-ANFIC as the torch-free decoder holds it: ``bitstream._ms_symbols`` and ``MSANFIC.dequantize``
over numpy arrays.

A tile's chunks ``SPLT CHYP CLAT HLAT LATN`` decode in that order: the split map (one bit per
32x32-pixel region, 1 = fine); the coarse hyperlatent and latent at the coarse regions, under the
coarse hyper-synthesis; the coarse context ``v``, the coarse synthesis ``split_up`` of the coarse
latent on the entropy parameters' grid; the fine hyperlatent, whose hyper-synthesis takes ``v`` at
the input of its last layer; the fine latent in its two checkerboard passes restricted to the fine
regions, the context seeing only their anchors. The dequantized latent is the fine one in fine
regions and ``split_up`` of the coarse one, on the synthesis's grid, elsewhere; the synthesis is the
checkerboard model's.
"""
from __future__ import annotations

import numpy as np

from .. import container as fmt
from .. import entropy_coding as ec
from . import program as prog
from .model import DecodeError, DecoderModel, anchor_mask
from .nets import ACT_BITS, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, WEIGHT_BITS, ExactNet, to_grid


class SplitUp:
    """``MSANFIC.ExactSplitUp``: the linear part plus the branch, on one grid, summed."""

    def __init__(self, program: dict, arrays: dict, act_bits: int, weight_bits: int):
        self.linear = ExactNet(prog.lower(program["split_up_linear"], arrays), act_bits, weight_bits)
        self.branch = ExactNet(prog.lower(program["split_up_branch"], arrays), act_bits, weight_bits)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return self.linear(a) + self.branch(a)


class MSDecoderModel(DecoderModel):
    archs = ("ms-anfic",)

    def __init__(self, program: dict, arrays: dict, model_id: str = ""):
        super().__init__(program, arrays, model_id)
        self.coarse_m, self.coarse_hyper_n, self.region = program["coarse_M"], program["coarse_hyper_N"], program["region"]
        self.h_s_head = ExactNet(prog.lower(program["hyper_head"], arrays))
        self.h_s_c = ExactNet(prog.lower(program["coarse_hyper"], arrays))
        t = {k[len("tables.coarse_"):]: v for k, v in arrays.items() if k.startswith("tables.coarse_")}
        self.coarse_tables = ec.FactorizedTables(t["hyper_cdf"], t["hyper_cdf_length"], t["hyper_offset"])
        self.coarse_medians = t["hyper_medians"].astype(np.float32).reshape(-1, 1, 1)
        self.context_up = SplitUp(program, arrays, ACT_BITS, WEIGHT_BITS)
        self.synthesis_up = SplitUp(program, arrays, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS)

    def _split_map(self, payload: bytes, shape: tuple[int, int]) -> np.ndarray:
        region, crc, stream = fmt.unpack_split(payload)
        if region != self.region:
            raise DecodeError(f"SPLT: region size {region}, this model uses {self.region}")
        try:
            split = ec.decode_split(stream, shape)
        except ec.EntropyCodingError as e:
            raise DecodeError(f"SPLT: {e}") from None
        if ec.split_checksum(split) != crc:
            raise DecodeError("SPLT: the split map does not decode to what the encoder wrote (corrupt stream)")
        return split

    def _coarse_latent(self, chunks: dict, split: np.ndarray, hshape: tuple) -> np.ndarray:
        """CHYP and CLAT -> the dequantized coarse latent [1, M_c, h, w], zero in fine regions."""
        shape = (self.coarse_m, *split.shape)
        if split.all():  # every region fine: the coarse scale is not coded
            if chunks[fmt.COARSE_HYPER_CHUNK] or chunks[fmt.COARSE_LATENT_CHUNK]:
                raise DecodeError("CHYP/CLAT: coarse-scale data in a file whose split map has no coarse region")
            return np.zeros((1, *shape))
        try:
            hc_sym = self.coarse_tables.decode(chunks[fmt.COARSE_HYPER_CHUNK], (self.coarse_hyper_n, *hshape[1:]))
        except ec.EntropyCodingError as e:
            raise DecodeError(f"CHYP: {e}") from None
        params = self._split(self.h_s_c(to_grid((hc_sym.astype(np.float32) + self.coarse_medians)[None])))
        yc_sym, mu_c = self._decode_passes(chunks[fmt.COARSE_LATENT_CHUNK], [(~split, lambda _: params)], "CLAT")
        return (yc_sym[None].astype(np.float64) + self.grid_mean(mu_c)) * ~split

    def latent(self, chunks: dict[bytes, bytes], width: int, height: int) -> np.ndarray:
        """SPLT, CHYP, CLAT, HLAT and LATN of one image or tile -> the dequantized fine latent."""
        types = (fmt.SPLIT_CHUNK, fmt.COARSE_HYPER_CHUNK, fmt.COARSE_LATENT_CHUNK, fmt.HYPER_CHUNK, fmt.LATENT_CHUNK)
        missing = [t.decode() for t in types if t not in chunks]
        if missing:
            raise DecodeError(f"missing {', '.join(missing)} chunk(s) for this model")
        hshape, yshape = self.latent_shape(width, height)
        split = self._split_map(chunks[fmt.SPLIT_CHUNK], (yshape[1] // 2, yshape[2] // 2))
        yc_hat = self._coarse_latent(chunks, split, hshape)
        try:
            h_sym = self.hyper_tables.decode(chunks[fmt.HYPER_CHUNK], hshape)
        except ec.EntropyCodingError as e:
            raise DecodeError(f"HLAT: {e}") from None
        base = self.h_s_head(np.concatenate([self._hyper(h_sym), self.context_up(to_grid(yc_hat))], 1))
        first = self._split(base)
        up = np.repeat(np.repeat(split, 2, 0), 2, 1)
        anchor = anchor_mask(*yshape[1:])

        def with_context(y_sym: np.ndarray):  # the fine regions' anchors are decoded: every position's parameters
            y_round = y_sym[None].astype(np.float64) + np.rint(first[1]).astype(np.float64)
            return self._split(self._with_context(base, y_round, up))
        y_sym, mu = self._decode_passes(chunks[fmt.LATENT_CHUNK], [(anchor & up, lambda _: first),
                                                                   (~anchor & up, with_context)])
        coarse = self.synthesis_up(to_grid(yc_hat, SYNTH_ACT_BITS)) * 2.0**-SYNTH_ACT_BITS
        return np.where(up, y_sym[None].astype(np.float64) + self.grid_mean(mu), coarse)
