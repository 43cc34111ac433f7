"""Range coding: exact round trips, escapes for extreme values, rate near the ideal."""
import numpy as np
import pytest

from anfcodec import entropy_coding as ec


def test_latent_round_trip_and_rate():
    rng = np.random.default_rng(0)
    std = np.exp(rng.uniform(np.log(0.11), np.log(50), (8, 16, 16)))
    sym = np.round(rng.normal(0, std)).astype(np.int32)
    bound, payload = ec.encode_latent(sym, std)
    assert np.array_equal(ec.decode_latent(payload, bound, std), sym)
    from scipy.stats import norm
    ideal = -np.log2(norm.cdf((sym + 0.5) / std) - norm.cdf((sym - 0.5) / std)).sum() / 8
    assert len(payload) <= ideal * 1.02 + 16


def test_latent_with_means_round_trip_and_rate():
    rng = np.random.default_rng(1)
    std = np.exp(rng.uniform(np.log(0.11), np.log(20), (4, 16, 16)))
    mean = rng.uniform(-0.5, 0.5, std.shape)
    sym = np.round(rng.normal(mean, std)).astype(np.int32)
    bound, payload = ec.encode_latent(sym, std, mean)
    assert np.array_equal(ec.decode_latent(payload, bound, std, mean), sym)
    from scipy.stats import norm
    ideal = -np.log2(norm.cdf((sym + 0.5 - mean) / std) - norm.cdf((sym - 0.5 - mean) / std)).sum() / 8
    assert len(payload) <= ideal * 1.02 + 16
    # Decoding with other means desynchronises the stream: the symbols come out wrong.
    try:
        wrong = ec.decode_latent(payload, bound, std, -mean)
    except ec.EntropyCodingError:
        return
    assert not np.array_equal(wrong, sym)


@pytest.mark.parametrize("extreme", [ec.LATENT_BOUND_CAP, ec.LATENT_BOUND_CAP + 1, 2**31 - 1, -(2**31 - 1)])
def test_latent_escape(extreme):
    sym = np.zeros((2, 3, 3), dtype=np.int32)
    sym[1, 2, 0] = extreme
    sym[0, 0, 1] = -5
    std = np.full(sym.shape, 0.5)
    bound, payload = ec.encode_latent(sym, std)
    assert np.array_equal(ec.decode_latent(payload, bound, std), sym)


def test_latent_all_zero():
    sym = np.zeros((3, 2, 2), dtype=np.int32)
    std = np.ones(sym.shape)
    bound, payload = ec.encode_latent(sym, std)
    assert np.array_equal(ec.decode_latent(payload, bound, std), sym)


def tables(channels=3):
    # Two regular symbols around offset -1 plus an escape bin, like CompressAI's layout.
    cdf = np.zeros((channels, 6), dtype=np.int32)
    for c in range(channels):
        cdf[c, :5] = [0, 10000, 50000, 65000, 65536]
    return ec.FactorizedTables(cdf, np.full(channels, 5), np.full(channels, -1))


def test_hyper_round_trip_with_escapes():
    t = tables()
    rng = np.random.default_rng(1)
    sym = rng.integers(-1, 2, (3, 4, 5)).astype(np.int32)
    sym[0, 0, 0] = 40
    sym[2, 3, 4] = -2**31 + 1
    sym[1, 1, 1] = 2**31 - 1
    assert np.array_equal(t.decode(t.encode(sym), sym.shape), sym)


def test_index_checksum_detects_change():
    idx = np.arange(60, dtype=np.int32).reshape(3, 4, 5) % 64
    other = idx.copy()
    other[2, 3, 4] += 1
    assert ec.index_checksum(idx) != ec.index_checksum(other)


def test_bad_payload_length_rejected():
    with pytest.raises(ec.EntropyCodingError):
        ec.decode_latent(b"\0\0\0", 3, np.ones(4))
