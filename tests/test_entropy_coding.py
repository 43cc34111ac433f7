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


def test_latent_groups_decode_in_turn_with_their_own_escapes():
    # The checkerboard's two passes: each group's exact values (escapes included) are read
    # before the next group's parameters are needed.
    rng = np.random.default_rng(2)
    a = rng.integers(-3, 4, (4, 5)).astype(np.int32)
    b = rng.integers(-3, 4, (4, 7)).astype(np.int32)
    a[0, 0], b[3, 6] = ec.LATENT_BOUND_CAP + 9, -(2**31 - 1)
    sa, sb = np.full(a.shape, 2.0), np.full(b.shape, 3.0)
    mb = rng.uniform(-0.5, 0.5, b.shape)
    bound, payload = ec.encode_latent_parts([(a, sa, None), (b, sb, mb)])
    dec = ec.LatentDecoder(payload, bound)
    assert np.array_equal(dec.decode(sa), a)
    assert np.array_equal(dec.decode(sb, mb), b)


def test_one_group_is_the_plain_latent_stream():
    rng = np.random.default_rng(3)
    sym = rng.integers(-20, 21, (3, 4, 4)).astype(np.int32)
    std = np.full(sym.shape, 6.0)
    assert ec.encode_latent_parts([(sym, std, None)]) == ec.encode_latent(sym, std)


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
