"""Symbols <-> chunk payloads for each model family: the step between the model and the container.

ANFIC writes two chunks per image (or tile): ``HLAT`` (hyperlatent) and ``LATN``
(latent), its positions in the passes the model names (``latent_passes``). The
checkerboard model has two: the anchors, then the other positions, whose
parameters depend on the decoded anchors. MS-ANFIC writes the split map first, then its coarse scale, then the
fine one (its two checkerboard passes restricted to the fine regions): ``SPLT``, ``CHYP``, ``CLAT``, ``HLAT``, ``LATN``. The decoder rebuilds
each scale's entropy parameters in the same order the encoder used them (the
fine hyperprior is conditioned on the decoded coarse latent) and checks each
scale's table-index CRC before decoding its latent.
"""
from __future__ import annotations

import numpy as np
import torch

from . import container as fmt
from . import entropy_coding as ec
from .decoder.model import DecodeError  # noqa: F401 (both decoders raise the one class)
from .exact import ExactnessError
from .models.anfic import Symbols
from .models.msanfic import REGION, MSSymbols
from .timing import phase


def _tables(model, name: str = "entropy_bottleneck") -> ec.FactorizedTables:
    """The frozen hyperlatent CDFs of one EntropyBottleneck, cached on the model."""
    cache = model.__dict__.setdefault("_factorized_tables", {})
    if name not in cache:
        eb = getattr(model, name)
        cache[name] = ec.FactorizedTables(eb._quantized_cdf.cpu().numpy(), eb._cdf_length.cpu().numpy(),
                                          eb._offset.cpu().numpy())
    return cache[name]


def latent_shape(model, width: int, height: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(hyperlatent shape, latent shape) of the fine scale for an image, both (C, H, W)."""
    m, f = model.pad_multiple, model.config.block
    ph, pw = -(-height // m) * m, -(-width // m) * m
    return (model.config.hyper_N, ph // (4 * f), pw // (4 * f)), (model.config.M, ph // f, pw // f)


def symbols_to_chunks(model, sym) -> list[tuple[bytes, bytes]]:
    """One image's (or tile's) symbols -> its chunks, in stream order."""
    if isinstance(sym, MSSymbols):
        split = sym.split.cpu().numpy().astype(bool)
        up = np.repeat(np.repeat(split, 2, 0), 2, 1)
        fine_passes = [up & m for m in model.latent_passes(up.shape)]
        coarse = split.all()  # no coarse region: CHYP and CLAT are empty
        return [(fmt.SPLIT_CHUNK, fmt.pack_split(REGION, ec.split_checksum(split), ec.encode_split(split))),
                (fmt.COARSE_HYPER_CHUNK, b"" if coarse else
                 _tables(model, "entropy_bottleneck_c").encode(sym.coarse.hyper.cpu().numpy())),
                (fmt.COARSE_LATENT_CHUNK, b"" if coarse else _latent_payload(model, sym.coarse, [~split])),
                (fmt.HYPER_CHUNK, _tables(model).encode(sym.fine.hyper.cpu().numpy())),
                (fmt.LATENT_CHUNK, _latent_payload(model, sym.fine, fine_passes))]
    return [(fmt.HYPER_CHUNK, _tables(model).encode(sym.hyper.cpu().numpy())),
            (fmt.LATENT_CHUNK, _latent_payload(model, sym, model.latent_passes(sym.latent.shape[1:])))]


def _latent_payload(model, sym: Symbols, passes: list[np.ndarray]) -> bytes:
    """LATN/CLAT payload: the symbols at each pass's positions in turn, channel by channel within a pass."""
    scale_index = sym.scale_index.cpu().numpy()
    scales = model.scale_values().cpu().numpy()[scale_index]
    latent, offset = sym.latent.cpu().numpy(), sym.offset.cpu().numpy()
    bound, stream = ec.encode_latent_parts([(latent[:, m], scales[:, m], offset[:, m]) for m in passes])
    return fmt.pack_latent(bound, ec.index_checksum(scale_index), stream)


def chunks_to_symbols(model, chunks: dict[bytes, bytes], width: int, height: int):
    """One image's (or tile's) chunk payloads, by type -> the model's symbols."""
    device = next(model.parameters()).device
    hshape, yshape = latent_shape(model, width, height)
    if model.arch == "ms-anfic":
        return _ms_symbols(model, chunks, hshape, yshape, device)
    _require(chunks, fmt.HYPER_CHUNK, fmt.LATENT_CHUNK)
    h_sym = _hyper(model, "entropy_bottleneck", chunks[fmt.HYPER_CHUNK], hshape, device)
    first = _params("HLAT", model.hyper_decode, h_sym)
    passes = model.latent_passes(yshape[1:])
    if len(passes) == 1:
        return _latent(model, "LATN", chunks[fmt.LATENT_CHUNK], h_sym, [(passes[0], lambda _: first)], device)
    mu_anchor = torch.round(first[1]).double()

    def with_context(y_sym: np.ndarray):  # the anchors are decoded: every position's parameters
        y_round = torch.from_numpy(y_sym).to(device).double()[None] + mu_anchor
        return _params("LATN", lambda h: model.hyper_decode(h, y_round), h_sym)
    return _latent(model, "LATN", chunks[fmt.LATENT_CHUNK], h_sym,
                   [(passes[0], lambda _: first), (passes[1], with_context)], device)


def _ms_symbols(model, chunks: dict, hshape, yshape, device) -> MSSymbols:
    _require(chunks, fmt.SPLIT_CHUNK, fmt.COARSE_HYPER_CHUNK, fmt.COARSE_LATENT_CHUNK, fmt.HYPER_CHUNK,
             fmt.LATENT_CHUNK)
    cshape = (model.config.coarse_M, yshape[1] // 2, yshape[2] // 2)
    region, crc, stream = fmt.unpack_split(chunks[fmt.SPLIT_CHUNK])
    if region != REGION:
        raise DecodeError(f"SPLT: region size {region}, this model uses {REGION}")
    try:
        split = ec.decode_split(stream, cshape[1:])
    except ec.EntropyCodingError as e:
        raise DecodeError(f"SPLT: {e}") from None
    if ec.split_checksum(split) != crc:
        raise DecodeError("SPLT: the split map does not decode to what the encoder wrote (corrupt stream)")
    hc_shape = (model.config.coarse_hyper_N, *hshape[1:])
    if split.all():  # every region fine: the coarse scale is not coded
        if chunks[fmt.COARSE_HYPER_CHUNK] or chunks[fmt.COARSE_LATENT_CHUNK]:
            raise DecodeError("CHYP/CLAT: coarse-scale data in a file whose split map has no coarse region")
        hc_sym = torch.zeros(hc_shape, dtype=torch.int32, device=device)
        idx_c, mu_c = _params("CHYP", model.coarse_params, hc_sym)
        coarse = Symbols(hc_sym, torch.zeros(cshape, dtype=torch.int32, device=device), idx_c[0],
                         model.coding_offset(mu_c)[0], mu_c)
    else:
        hc_sym = _hyper(model, "entropy_bottleneck_c", chunks[fmt.COARSE_HYPER_CHUNK], hc_shape, device)
        idx_c, mu_c = _params("CHYP", model.coarse_params, hc_sym)
        coarse = _latent(model, "CLAT", chunks[fmt.COARSE_LATENT_CHUNK], hc_sym, [(~split, lambda _: (idx_c, mu_c))],
                         device)
    yc_hat = (coarse.latent.double() + torch.round(mu_c[0]).double()) * torch.from_numpy(~split).to(device)
    h_sym = _hyper(model, "entropy_bottleneck", chunks[fmt.HYPER_CHUNK], hshape, device)
    v_grid = model.context(yc_hat)
    first = _params("HLAT", lambda h: model.hyper_decode(h, v_grid), h_sym)
    mu_anchor = torch.round(first[1]).double()
    up = np.repeat(np.repeat(split, 2, 0), 2, 1)
    up_t = torch.from_numpy(up).to(device).double()[None, None]

    def with_context(y_sym: np.ndarray):  # the fine regions' anchors are decoded: every position's parameters
        y_round = torch.from_numpy(y_sym).to(device).double()[None] + mu_anchor
        return _params("LATN", lambda h: model.hyper_decode(h, v_grid, y_round, up_t), h_sym)
    anchors, others = (up & m for m in model.latent_passes(up.shape))
    fine = _latent(model, "LATN", chunks[fmt.LATENT_CHUNK], h_sym, [(anchors, lambda _: first),
                                                                    (others, with_context)], device)
    return MSSymbols(fine, coarse, torch.from_numpy(split.astype(np.uint8)).to(device))


def _require(chunks: dict, *types: bytes) -> None:
    missing = [t.decode() for t in types if t not in chunks]
    if missing:
        raise DecodeError(f"missing {', '.join(missing)} chunk(s) for this model")


def _hyper(model, name: str, payload: bytes, shape, device) -> torch.Tensor:
    try:
        with phase("entropy"):
            return torch.from_numpy(_tables(model, name).decode(payload, shape)).to(device)
    except ec.EntropyCodingError as e:
        raise DecodeError(f"{'HLAT' if name == 'entropy_bottleneck' else 'CHYP'}: {e}") from None


def _params(what: str, decode, h_sym: torch.Tensor):
    try:
        with phase("model"):
            return decode(h_sym)
    except ExactnessError:
        raise DecodeError(f"{what}: hyperlatent values out of range (corrupt stream)") from None


def _latent(model, what: str, payload: bytes, h_sym, passes, device) -> Symbols:
    """Decode a latent stream pass by pass.

    ``passes``: (positions, parameters) in stream order, where ``parameters(symbols so far)``
    gives (scale indices, means) of the whole latent. The table-index CRC is checked against
    the last pass's indices (the final tables) before that pass's symbols are read.
    """
    bound, crc, stream = fmt.unpack_latent(payload, what)
    y_sym = None
    try:
        dec = ec.LatentDecoder(stream, bound)
        for i, (where, parameters) in enumerate(passes):
            scale_index, mu = parameters(y_sym)
            scale_index = scale_index[0].cpu().numpy()
            offset = model.coding_offset(mu)[0]
            if y_sym is None:
                y_sym = np.zeros(scale_index.shape, dtype=np.int32)
            if i == len(passes) - 1 and ec.index_checksum(scale_index) != crc:
                raise DecodeError(f"{what}: decoder/encoder mismatch: the rebuilt entropy parameters differ from the "
                                  "encoder's (file written by different weights or a non-deterministic platform)")
            scales = model.scale_values().cpu().numpy()[scale_index]
            off = offset.cpu().numpy()
            with phase("entropy"):
                y_sym[:, where] = dec.decode(scales[:, where], off[:, where])
    except ec.EntropyCodingError as e:
        raise DecodeError(f"{what}: {e}") from None
    return Symbols(h_sym[0] if h_sym.dim() == 4 else h_sym, torch.from_numpy(y_sym).to(device),
                   torch.from_numpy(scale_index).to(device), offset, mu)
