"""The container: round trip, validation, and a parser written from docs/FORMAT.md alone."""
import struct
import zlib

import pytest

from anfcodec import container as fmt


def make(chunks=None, **kw):
    h = dict(model_id="anfic-test", weights_hash=bytes(range(8)), quality=3.5, width=100, height=70, mode="RGB",
             pad_multiple=64)
    h.update(kw)
    return fmt.pack(fmt.Container(fmt.Header(**h), chunks or [(b"HLAT", b"\x01\x02\x03\x04"),
                                                              (b"LATN", fmt.pack_latent(7, 1234, b"\0" * 8))]))


def test_round_trip():
    c = fmt.unpack(make())
    assert c.header.model_id == "anfic-test"
    assert c.header.quality == 3.5
    assert (c.header.width, c.header.height, c.header.mode) == (100, 70, "RGB")
    assert c.chunk(b"HLAT") == b"\x01\x02\x03\x04"
    assert fmt.unpack_latent(c.chunk(b"LATN")) == (7, 1234, b"\0" * 8)


def spec_parse(data: bytes) -> dict:
    """Independent parser following docs/FORMAT.md, not the module's code."""
    assert data[:8] == b"\x89ANF\r\n\x1a\n"
    version = int.from_bytes(data[8:10], "big")
    pos, chunks = 10, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + n]
        crc = int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big")
        assert crc == zlib.crc32(ctype + payload)
        chunks.append((ctype.decode(), payload))
        pos += 12 + n
    head = chunks[0][1]
    i = 0
    idlen = head[i]; model_id = head[i + 1:i + 1 + idlen].decode(); i += 1 + idlen
    whash = head[i:i + 8]; i += 8
    q, w, h = struct.unpack(">HII", head[i:i + 10]); i += 10
    mlen = head[i]; mode = head[i + 1:i + 1 + mlen].decode(); i += 1 + mlen
    (pad,) = struct.unpack(">H", head[i:i + 2]); i += 2
    assert i == len(head)
    return {"version": version, "model_id": model_id, "hash": whash, "quality": q / 256, "width": w, "height": h,
            "mode": mode, "pad": pad, "types": [t for t, _ in chunks], "chunks": dict(chunks)}


def test_spec_parser_reads_real_file(small_image, model):
    from anfcodec import api
    data = api.encode(small_image, quality=4)
    d = spec_parse(data)
    assert d["version"] == 1
    assert d["types"][0] == "HEAD" and d["types"][-1] == "IEND"
    assert {"HLAT", "LATN"} <= set(d["types"])
    assert (d["width"], d["height"], d["mode"], d["quality"]) == (100, 70, "RGB", 4.0)
    assert d["model_id"] == model.model_id and d["hash"] == model.weights_hash
    bound, crc = struct.unpack(">II", d["chunks"]["LATN"][:8])
    assert bound >= 1
    assert len(d["chunks"]["LATN"][8:]) % 4 == 0


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 10, 20, -13, -1])
def test_truncation_is_detected(cut):
    data = make()
    with pytest.raises(fmt.FormatError):
        fmt.unpack(data[:cut])


def test_bit_flip_caught_by_crc():
    data = bytearray(make())
    data[30] ^= 0x10
    with pytest.raises(fmt.FormatError):
        fmt.unpack(bytes(data))


def test_wrong_magic_and_future_version():
    data = make()
    with pytest.raises(fmt.FormatError, match="signature"):
        fmt.unpack(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(fmt.FormatError, match="version 2"):
        fmt.unpack(data[:8] + b"\x00\x02" + data[10:])


def test_unknown_ancillary_chunk_skipped_critical_refused():
    assert fmt.unpack(make(chunks=[(b"meta", b"hello"), (b"HLAT", b""), (b"LATN", b"")])).chunk(b"HLAT") == b""
    with pytest.raises(fmt.FormatError, match="unknown critical chunk FUTR"):
        fmt.unpack(make(chunks=[(b"FUTR", b"x")]))


def test_quality_stored_in_fixed_point():
    assert fmt.unpack(make(quality=4.37)).header.quality == round(4.37 * 256) / 256


def test_describe_reports_chunks():
    d = fmt.describe(make())
    assert d["model_id"] == "anfic-test"
    assert [c["type"] for c in d["chunks"]] == ["HLAT", "LATN"]
    assert d["chunks"][0]["bytes"] == 4
