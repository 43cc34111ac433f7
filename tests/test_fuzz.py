"""Hostile input: every truncation and random mutations end in a clean error or a valid image.

Raw mutations are mostly caught by the chunk CRCs; "forged" mutations
recompute the CRCs so the damage reaches the entropy decoder and the model.
FUZZ_EXAMPLES sets the number of cases per strategy (`make fuzz` runs 20000).
"""
import os
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from anfcodec import api
from anfcodec import container as fmt
from anfcodec.zoo import ModelNotFound
from conftest import synthetic_image

CLEAN_ERRORS = (fmt.FormatError, api.DecodeError, ModelNotFound)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=10_000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def valid() -> bytes:
    return api.encode(synthetic_image(72, 40, seed=5), quality=4)


def decode_is_clean(data: bytes, width=None, height=None):
    try:
        img = api.decode(data)
    except CLEAN_ERRORS:
        return
    c = fmt.unpack(data)  # it decoded: then it must be a well-formed file and image of the declared size
    assert img.size == (c.header.width, c.header.height)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    return list(fmt.iter_chunks(data))


def reframe(parts: list[tuple[bytes, bytes]]) -> bytes:
    out = [fmt.SIGNATURE, struct.pack(">H", fmt.FORMAT_VERSION)]
    for t, p in parts:
        out.append(struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p)))
    return b"".join(out)


def test_every_truncation(valid):
    for cut in range(len(valid)):
        with pytest.raises(CLEAN_ERRORS):
            api.decode(valid[:cut])


def test_empty_and_foreign():
    for data in (b"", b"\x89PNG\r\n\x1a\n" + bytes(40), bytes(1000), b"\x89ANF\r\n\x1a\n\xff\xff"):
        with pytest.raises(fmt.FormatError):
            api.decode(data)


@FUZZ
@given(st.data())
def test_raw_mutations(valid, data):
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "length"]))
        pos = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 8))]
        else:  # overwrite a 32-bit field with 0, a huge or a "negative" value
            value = data.draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 2**30 + 1]))
            buf[pos:pos + 4] = struct.pack(">I", value)
    decode_is_clean(bytes(buf))


@FUZZ
@given(st.data())
def test_forged_mutations(valid, data):
    """Valid framing and CRCs around damaged content: the model and entropy decoder must cope."""
    parts = chunks(valid)
    kind = data.draw(st.sampled_from(["payload", "swap", "drop", "duplicate", "unknown", "head"]))
    i = data.draw(st.integers(0, len(parts) - 1))
    t, p = parts[i]
    if kind == "payload" and p:
        b = bytearray(p)
        for _ in range(data.draw(st.integers(1, 6))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            b = b[: data.draw(st.integers(0, len(b)))]
        parts[i] = (t, bytes(b))
    elif kind == "swap":
        j = data.draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
    elif kind == "drop":
        del parts[i]
    elif kind == "duplicate":
        parts.insert(i, parts[i])
    elif kind == "unknown":
        parts.insert(max(1, i), (data.draw(st.sampled_from([b"ZZZZ", b"zzzz", b"Tile"])), b"\0" * 4))
    else:  # a forged header: other sizes, quality, mode, model id
        h = fmt.Header.unpack(parts[0][1])
        h.width = data.draw(st.sampled_from([1, h.width + 64, 10**5, 2**32 - 1]))
        h.height = data.draw(st.sampled_from([1, h.height, 3, 10**5]))
        h.quality = data.draw(st.sampled_from([0.5, 1.0, 8.0, 200.0]))
        h.mode = data.draw(st.sampled_from(["RGB", "L", "CMYK"]))
        h.model_id = data.draw(st.sampled_from([h.model_id, "anfic-nonexistent"]))
        parts[0] = (b"HEAD", h.pack())
    decode_is_clean(reframe(parts))
