"""Range coding of latent and hyperlatent symbols with constriction.

Both streams are vectorized: the latent is one ``QuantizedGaussian`` call for
the whole tensor (each symbol's scale is a snapped entry of the model's fixed
scale table and its mean a fixed-point value from the exact hyper path, so
encoder and decoder build bit-identical tables from identical float64 inputs); the hyperlatent is one ``Categorical`` call per channel,
from the integer CDF tables frozen in the weights.

Escape path: values outside a model's alphabet are coded as the alphabet's
edge (latent) or escape symbol (hyperlatent), followed by their exact value
as two 16-bit uniform symbols in the same stream. Nothing is clipped, wrapped
or refused, whatever the magnitude of an int32 symbol.
"""
from __future__ import annotations

import zlib

import numpy as np
import constriction

_model = constriction.stream.model
_queue = constriction.stream.queue

# Largest alphabet half-width for the latent model. Every symbol in the
# alphabet gets at least 2^-24 probability, so a wider alphabet would waste
# rate; larger values take the escape path instead.
LATENT_BOUND_CAP = 1 << 14
_UNIFORM16 = _model.Uniform(1 << 16)


class EntropyCodingError(ValueError):
    """A stream does not decode to what its container claims."""


def _encode_u32(encoder, values: np.ndarray) -> None:
    v = values.astype(np.uint32)
    pairs = np.stack([v >> 16, v & 0xFFFF], axis=-1).reshape(-1).astype(np.int32)
    if pairs.size:
        encoder.encode(pairs, _UNIFORM16)


def _decode_u32(decoder, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.uint32)
    pairs = decoder.decode(_UNIFORM16, 2 * count).astype(np.uint32).reshape(-1, 2)
    return (pairs[:, 0] << 16) | pairs[:, 1]


def _zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint32)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.int64)
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2).astype(np.int32)


def _to_bytes(words: np.ndarray) -> bytes:
    return words.astype("<u4").tobytes()


def _from_bytes(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise EntropyCodingError("range-coder payload is not a whole number of 32-bit words")
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def _decoder(data: bytes):
    return _queue.RangeDecoder(_from_bytes(data))


def _guarded(decode):
    """constriction reports corrupt data as AssertionError/ValueError/...: report it as ours."""
    def wrapper(*args, **kwargs):
        try:
            return decode(*args, **kwargs)
        except EntropyCodingError:
            raise
        except (AssertionError, ValueError, RuntimeError, OverflowError, TypeError) as e:
            raise EntropyCodingError(f"corrupt range-coded stream ({e})") from None
    return wrapper


# -- latents: Gaussian with snapped scales ---------------------------------------

def index_checksum(scale_index: np.ndarray) -> int:
    """CRC32 of the scale-table indices: lets the decoder prove it rebuilt the encoder's tables."""
    return zlib.crc32(np.ascontiguousarray(scale_index, dtype=np.uint8).tobytes())


def latent_bound(symbols: np.ndarray) -> int:
    peak = int(np.abs(symbols.astype(np.int64)).max()) if symbols.size else 0
    return max(1, min(peak, LATENT_BOUND_CAP))


def _means(means: np.ndarray | None, std: np.ndarray) -> np.ndarray:
    if means is None:
        return np.zeros_like(std)
    return np.ascontiguousarray(means.reshape(-1), dtype=np.float64)


def encode_latent(symbols: np.ndarray, scales: np.ndarray, means: np.ndarray | None = None) -> tuple[int, bytes]:
    """Symbols (int), per-symbol scales and means (float64, |mean| <= 0.5), same shape -> (bound, payload)."""
    return encode_latent_parts([(symbols, scales, means)])


def encode_latent_parts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> tuple[int, bytes]:
    """Several (symbols, scales, means) groups in one stream, one after the other, with a shared bound.

    Each group's escapes follow its own symbols, so a decoder has a group's exact values
    before it needs them to compute the next group's parameters (the checkerboard context).
    """
    flat = [(s.reshape(-1).astype(np.int64), np.ascontiguousarray(sc.reshape(-1), dtype=np.float64), m)
            for s, sc, m in parts]
    bound = latent_bound(np.concatenate([s for s, _, _ in flat]) if flat else np.zeros(0))
    enc = _queue.RangeEncoder()
    for sym, std, means in flat:
        if sym.size:
            clipped = np.clip(sym, -bound, bound).astype(np.int32)
            enc.encode(clipped, _model.QuantizedGaussian(-bound, bound), _means(means, std), std)
        if bound == LATENT_BOUND_CAP:  # the alphabet's edge is the escape symbol
            edge = np.abs(sym) >= bound
            _encode_u32(enc, np.abs(sym[edge]) - bound)
    return bound, _to_bytes(enc.get_compressed())


class LatentDecoder:
    """Reads the groups of an ``encode_latent_parts`` stream in order, each with its own parameters."""

    @_guarded
    def __init__(self, payload: bytes, bound: int):
        if not 1 <= bound <= LATENT_BOUND_CAP:
            raise EntropyCodingError(f"latent bound {bound} out of range")
        self.bound = bound
        self._dec = _decoder(payload)

    @_guarded
    def decode(self, scales: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
        """The next group: int32 symbols of ``scales.shape``."""
        std = np.ascontiguousarray(scales.reshape(-1), dtype=np.float64)
        if std.size == 0:
            return np.zeros(scales.shape, dtype=np.int32)
        bound = self.bound
        sym = self._dec.decode(_model.QuantizedGaussian(-bound, bound), _means(means, std), std).astype(np.int64)
        edge = np.abs(sym) == bound
        if bound == LATENT_BOUND_CAP and edge.any():
            # Only a capped alphabet escapes; the extra magnitude follows the group's symbols.
            extra = _decode_u32(self._dec, int(edge.sum())).astype(np.int64)
            sym[edge] += np.sign(sym[edge]) * extra
        if np.abs(sym).max(initial=0) > np.iinfo(np.int32).max:
            raise EntropyCodingError("latent escape value out of int32 range")
        return sym.astype(np.int32).reshape(scales.shape)


def decode_latent(payload: bytes, bound: int, scales: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
    return LatentDecoder(payload, bound).decode(scales, means)


# -- split maps: one binary decision per region ----------------------------------------

SPLIT_PROB_BITS = 16


def _split_model(k: int):
    """Static binary model: P(fine) = k / 2^16. Integer-valued pmf, so every machine builds the same table."""
    return _model.Categorical(np.array([(1 << SPLIT_PROB_BITS) - k, k], dtype=np.float64), perfect=False)


def split_checksum(split: np.ndarray) -> int:
    """CRC32 of a split map (one byte per region, row-major): a forged or damaged map is caught."""
    return zlib.crc32(np.ascontiguousarray(split, dtype=np.uint8).tobytes())


def encode_split(split: np.ndarray) -> bytes:
    """Boolean split map (True = fine) -> payload: P(fine) as u16 (big-endian), then range-coder words."""
    bits = split.reshape(-1).astype(np.int32)
    k = int(round((1 << SPLIT_PROB_BITS) * bits.mean())) if bits.size else 1
    k = min(max(k, 1), (1 << SPLIT_PROB_BITS) - 1)
    enc = _queue.RangeEncoder()
    if bits.size:
        enc.encode(bits, _split_model(k))
    return k.to_bytes(2, "big") + _to_bytes(enc.get_compressed())


@_guarded
def decode_split(payload: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of ``encode_split``: a boolean map of ``shape``."""
    if len(payload) < 2:
        raise EntropyCodingError("split map payload too short")
    k = int.from_bytes(payload[:2], "big")
    if not 1 <= k < 1 << SPLIT_PROB_BITS:
        raise EntropyCodingError(f"split probability {k} out of range")
    bits = _decoder(payload[2:]).decode(_split_model(k), int(np.prod(shape)))
    return bits.astype(bool).reshape(shape)


# -- hyperlatents: per-channel factorized tables ------------------------------------

class FactorizedTables:
    """Per-channel pmfs from the EntropyBottleneck's frozen integer CDFs.

    ``cdf[c, :length[c]]`` is CompressAI's 16-bit quantized CDF: symbols
    ``offset[c] .. offset[c] + length[c] - 3`` and one escape bin.
    """

    def __init__(self, cdf: np.ndarray, length: np.ndarray, offset: np.ndarray):
        self.offset = offset.astype(np.int64)
        self.size = length.astype(np.int64) - 2   # regular symbols per channel
        self.models = []
        for c in range(cdf.shape[0]):
            pmf = np.diff(cdf[c, : length[c]].astype(np.int64)).astype(np.float64)
            self.models.append(_model.Categorical(pmf, perfect=False))

    @property
    def channels(self) -> int:
        return len(self.models)

    def encode(self, symbols: np.ndarray) -> bytes:
        """int symbols [C, ...] (value domain) -> payload."""
        if symbols.shape[0] != self.channels:
            raise ValueError("hyperlatent channel count does not match the tables")
        enc = _queue.RangeEncoder()
        escaped = []
        for c in range(self.channels):
            idx = symbols[c].reshape(-1).astype(np.int64) - self.offset[c]
            esc = (idx < 0) | (idx >= self.size[c])
            idx[esc] = self.size[c]
            enc.encode(idx.astype(np.int32), self.models[c])
            escaped.append(symbols[c].reshape(-1)[esc])
        _encode_u32(enc, _zigzag(np.concatenate(escaped)))
        return _to_bytes(enc.get_compressed())

    @_guarded
    def decode(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """payload -> int32 symbols of ``shape`` = (C, h, w)."""
        if shape[0] != self.channels:
            raise EntropyCodingError("hyperlatent channel count does not match the tables")
        dec = _decoder(payload)
        per_channel = int(np.prod(shape[1:]))
        out = np.empty((self.channels, per_channel), dtype=np.int64)
        for c in range(self.channels):
            out[c] = dec.decode(self.models[c], per_channel)
        esc = out >= self.size[:, None]
        values = out + self.offset[:, None]
        values[esc] = _unzigzag(_decode_u32(dec, int(esc.sum())))
        return values.astype(np.int32).reshape(shape)


# -- near-lossless residuals: Laplace with per-block scales ---------------------------

RESIDUAL_SCALES = np.round(np.exp(np.linspace(np.log(0.04), np.log(64.0), 64)) * 2**16) / 2**16
_SCALE_INDEX = _model.Uniform(len(RESIDUAL_SCALES))


def encode_residual(symbols: np.ndarray, scale_index: np.ndarray, per_index: int) -> tuple[int, bytes]:
    """Residual symbols [n * per_index] (int, |s| < 2^15) and one scale index per run of
    ``per_index`` symbols -> (bound, payload): the indices, then the symbols, in one stream."""
    sym = symbols.reshape(-1).astype(np.int32)
    bound = max(1, int(np.abs(sym).max(initial=0)))
    enc = _queue.RangeEncoder()
    enc.encode(scale_index.reshape(-1).astype(np.int32), _SCALE_INDEX)
    scales = np.repeat(RESIDUAL_SCALES[scale_index.reshape(-1)], per_index)
    if sym.size:
        enc.encode(sym, _model.QuantizedLaplace(-bound, bound), np.zeros_like(scales), scales)
    return bound, _to_bytes(enc.get_compressed())


@_guarded
def decode_residual(payload: bytes, bound: int, count: int, per_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_residual``: (symbols [count * per_index], scale indices [count])."""
    if not 1 <= bound < 1 << 15:
        raise EntropyCodingError(f"residual bound {bound} out of range")
    dec = _decoder(payload)
    index = dec.decode(_SCALE_INDEX, count).astype(np.int64)
    scales = np.repeat(RESIDUAL_SCALES[index], per_index)
    sym = dec.decode(_model.QuantizedLaplace(-bound, bound), np.zeros_like(scales), scales)
    return sym.astype(np.int32), index
