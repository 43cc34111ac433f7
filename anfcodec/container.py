"""The .anf container: signature, format version, CRC-protected chunks.

Pure Python (struct + zlib): ``anfcodec info`` and third-party tools parse
files without PyTorch. docs/FORMAT.md is the normative description; keep the
two in step field for field.

    file   = signature(8) version(u16) chunk*          all integers big-endian
    chunk  = length(u32) type(4 ASCII) payload crc32(u32 over type+payload)

The first chunk is HEAD, the last is IEND. A chunk type whose first letter is
upper case is critical (a decoder that does not know it must refuse the
file); lower case is ancillary (safe to skip).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass, field

SIGNATURE = b"\x89ANF\r\n\x1a\n"
FORMAT_VERSION = 1
QUALITY_SCALE = 256          # quality is stored as u16 fixed point 8.8
MAX_CHUNK = 1 << 30
HEADER_CHUNK, END_CHUNK = b"HEAD", b"IEND"
ALPHA_CHUNK = b"ALPH"                 # critical: skipping it would silently lose the alpha channel
RESIDUAL_CONTEXT_CHUNK = b"RESC"      # critical: the near-lossless layer (see residual.py)
RESIDUAL_CHUNK = b"RESI"              # critical: its plain layout (written when smaller; older files)
RESIDUAL_CHUNKS = (RESIDUAL_CONTEXT_CHUNK, RESIDUAL_CHUNK)
TILE_CHUNK = b"TILE"                  # critical: the image is coded as independent tiles
MAX_TILES = 1 << 16
ICC_CHUNK, EXIF_CHUNK = b"iccp", b"exif"   # ancillary metadata
HYPER_CHUNK, LATENT_CHUNK = b"HLAT", b"LATN"          # the (fine-scale) hyperlatent and latent
SPLIT_CHUNK = b"SPLT"                                 # multiscale models: the split map
COARSE_HYPER_CHUNK, COARSE_LATENT_CHUNK = b"CHYP", b"CLAT"   # multiscale models: the coarse scale
# Chunks that occur once per tile, in this order within a tile's group.
PER_TILE = (SPLIT_CHUNK, COARSE_HYPER_CHUNK, COARSE_LATENT_CHUNK, HYPER_CHUNK, LATENT_CHUNK)
KNOWN_CRITICAL = {HEADER_CHUNK, *PER_TILE, ALPHA_CHUNK, *RESIDUAL_CHUNKS, TILE_CHUNK, END_CHUNK}


class FormatError(ValueError):
    """The bytes are not a valid .anf file (corrupt, truncated or foreign)."""


@dataclass
class Header:
    model_id: str
    weights_hash: bytes      # first 8 bytes of the SHA-256 of the weights file
    quality: float
    width: int
    height: int
    mode: str                # PIL mode to restore: "RGB", "L", "RGBA" or "LA"
    pad_multiple: int        # the coded image is padded to a multiple of this

    def pack(self) -> bytes:
        mid, mode = self.model_id.encode("ascii"), self.mode.encode("ascii")
        if not 1 <= len(mid) <= 255 or not 1 <= len(mode) <= 255:
            raise ValueError("model id and mode must be 1..255 ASCII characters")
        if len(self.weights_hash) != 8:
            raise ValueError("weights hash must be 8 bytes")
        q = quantize_quality(self.quality)
        return (struct.pack(">B", len(mid)) + mid + self.weights_hash + struct.pack(">HII", q, self.width, self.height)
                + struct.pack(">B", len(mode)) + mode + struct.pack(">H", self.pad_multiple))

    @classmethod
    def unpack(cls, data: bytes) -> "Header":
        r = _Reader(data, "HEAD")
        model_id = r.text()
        weights_hash = r.take(8)
        q, width, height = r.unpack(">HII")
        mode = r.text()
        (pad,) = r.unpack(">H")
        r.end()
        if width == 0 or height == 0:
            raise FormatError("HEAD: image size is zero")
        if pad == 0:
            raise FormatError("HEAD: pad multiple is zero")
        return cls(model_id, weights_hash, q / QUALITY_SCALE, width, height, mode, pad)

    def to_json(self) -> dict:
        d = asdict(self)
        d["weights_hash"] = self.weights_hash.hex()
        return d


@dataclass
class Container:
    header: Header
    chunks: list[tuple[bytes, bytes]] = field(default_factory=list)   # (type, payload), HEAD/IEND excluded

    def chunk(self, ctype: bytes) -> bytes:
        found = [p for t, p in self.chunks if t == ctype]
        if len(found) != 1:
            raise FormatError(f"expected exactly one {ctype.decode()} chunk, found {len(found)}")
        return found[0]

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """(x0, y0, x1, y1) of each coded tile in stream order; one box for an untiled file."""
        size = None
        if any(t == TILE_CHUNK for t, _ in self.chunks):
            size = unpack_tile_size(self.chunk(TILE_CHUNK), self.header.pad_multiple)
            count = -(-self.header.width // size[0]) * -(-self.header.height // size[1])
            if count > MAX_TILES:
                raise FormatError(f"TILE: {count} tiles declared, more than {MAX_TILES}")
        return tile_grid(self.header.width, self.header.height, size)

    def streams(self) -> list[dict[bytes, bytes]]:
        """Each tile's coded chunks (type -> payload), in stream order.

        HLAT and LATN occur once per tile; a multiscale file's SPLT, CHYP and CLAT too.
        Which set a model needs is the decoder's check (``bitstream``).
        """
        n = len(self.tiles())
        per_type = {t: [p for ct, p in self.chunks if ct == t] for t in PER_TILE}
        for t, found in per_type.items():
            if (found or t in (HYPER_CHUNK, LATENT_CHUNK)) and len(found) != n:
                raise FormatError(f"expected {n} {t.decode()} chunk(s) (one per tile), found {len(found)}")
        return [{t: found[i] for t, found in per_type.items() if found} for i in range(n)]


def tile_grid(width: int, height: int, size: tuple[int, int] | None) -> list[tuple[int, int, int, int]]:
    """Raster-order tile boxes of ``size`` (the last row and column may be smaller); None = one box."""
    if size is None:
        return [(0, 0, width, height)]
    tw, th = size
    return [(x, y, min(x + tw, width), min(y + th, height)) for y in range(0, height, th) for x in range(0, width, tw)]


def pack_tile_size(tile_width: int, tile_height: int) -> bytes:
    """TILE payload: tile width and height in pixels (u32 each)."""
    return struct.pack(">II", tile_width, tile_height)


def unpack_tile_size(payload: bytes, pad_multiple: int) -> tuple[int, int]:
    r = _Reader(payload, "TILE")
    tw, th = r.unpack(">II")
    r.end()
    if tw == 0 or th == 0 or tw % pad_multiple or th % pad_multiple:
        raise FormatError(f"TILE: tile size {tw}x{th} is not a positive multiple of {pad_multiple}")
    return tw, th


def quantize_quality(q: float) -> int:
    v = round(q * QUALITY_SCALE)
    if not 0 < v < 1 << 16:
        raise ValueError(f"quality {q} out of range")
    return v


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    if len(ctype) != 4 or not ctype.isalpha() or not ctype.isascii():
        raise ValueError(f"bad chunk type {ctype!r}")
    if len(payload) > MAX_CHUNK:
        raise ValueError("chunk too large")
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def pack(container: Container) -> bytes:
    out = [SIGNATURE, struct.pack(">H", FORMAT_VERSION), _chunk(HEADER_CHUNK, container.header.pack())]
    out += [_chunk(t, p) for t, p in container.chunks]
    out.append(_chunk(END_CHUNK, b""))
    return b"".join(out)


def iter_chunks(data: bytes):
    """Yield (type, payload) of every chunk, checking framing and CRCs."""
    if len(data) < len(SIGNATURE) + 2:
        raise FormatError("not an .anf file (too short)" if data else "empty input")
    if data[: len(SIGNATURE)] != SIGNATURE:
        raise FormatError("not an .anf file (bad signature)")
    (version,) = struct.unpack_from(">H", data, len(SIGNATURE))
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported .anf format version {version} (this decoder reads version {FORMAT_VERSION})")
    pos = len(SIGNATURE) + 2
    while True:
        if pos + 8 > len(data):
            raise FormatError("truncated file (no IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if not (ctype.isascii() and ctype.isalpha()):
            raise FormatError(f"corrupt chunk type at byte {pos}")
        end = pos + 8 + length + 4
        if length > MAX_CHUNK or end > len(data):
            raise FormatError(f"truncated or corrupt {ctype.decode()} chunk at byte {pos}")
        payload = data[pos + 8: pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if crc != zlib.crc32(ctype + payload):
            raise FormatError(f"CRC mismatch in {ctype.decode()} chunk at byte {pos} (file is corrupt)")
        yield ctype, payload
        pos = end
        if ctype == END_CHUNK:
            if pos != len(data):
                raise FormatError("trailing bytes after IEND")
            return


def unpack(data: bytes) -> Container:
    """Parse and validate a whole file. Unknown ancillary chunks are kept, unknown critical ones refused."""
    header = None
    chunks = []
    for i, (ctype, payload) in enumerate(iter_chunks(data)):
        if i == 0:
            if ctype != HEADER_CHUNK:
                raise FormatError("first chunk is not HEAD")
            header = Header.unpack(payload)
        elif ctype == HEADER_CHUNK:
            raise FormatError("duplicate HEAD chunk")
        elif ctype == END_CHUNK:
            if payload:
                raise FormatError("IEND chunk is not empty")
        elif ctype[:1].isupper() and ctype not in KNOWN_CRITICAL:
            raise FormatError(f"unknown critical chunk {ctype.decode()} (written by a newer anfcodec?)")
        else:
            chunks.append((ctype, payload))
    return Container(header, chunks)


def describe(data: bytes) -> dict:
    """What ``anfcodec info`` shows: header fields and per-chunk sizes."""
    c = unpack(data)
    h = c.header
    pixels = h.width * h.height
    resi = [p for t, p in c.chunks if t in RESIDUAL_CHUNKS]
    tiles = c.tiles()
    return {
        "format_version": FORMAT_VERSION,
        "file_bytes": len(data),
        "bpp": 8 * len(data) / pixels,
        **h.to_json(),
        "metadata": [name for ctype, name in ((ALPHA_CHUNK, "alpha channel (lossless)"), (ICC_CHUNK, "ICC profile"),
                                                (EXIF_CHUNK, "EXIF")) if any(t == ctype for t, _ in c.chunks)],
        "max_error": resi[0][0] if resi and resi[0] else None,  # the residual layer's first byte; None = lossy
        "tiles": {"count": len(tiles), "size": [tiles[0][2] - tiles[0][0], tiles[0][3] - tiles[0][1]],
                  "boxes": tiles} if len(tiles) > 1 else None,
        "chunks": [{"type": t.decode(), "bytes": len(p)} for t, p in c.chunks],
        "scales": describe_scales(c) if any(t == SPLIT_CHUNK for t, _ in c.chunks) else None,
    }


def split_maps(c: Container) -> list[tuple[int, "object"]]:
    """(region side, boolean map: True = fine) of each tile of a multiscale file, decoded."""
    from . import entropy_coding as ec   # numpy and constriction, still no PyTorch
    maps = []
    pad = c.header.pad_multiple
    for (x0, y0, x1, y1), chunks in zip(c.tiles(), c.streams()):
        region, crc, coded = unpack_split(chunks[SPLIT_CHUNK])
        shape = (-(-(y1 - y0) // pad) * pad // region, -(-(x1 - x0) // pad) * pad // region)
        try:
            split = ec.decode_split(coded, shape)
        except ec.EntropyCodingError as e:
            raise FormatError(f"SPLT: {e}") from None
        if ec.split_checksum(split) != crc:
            raise FormatError("SPLT: the split map does not match its CRC")
        maps.append((region, split))
    return maps


def describe_scales(c: Container) -> dict:
    """Bytes per scale, split-map bytes and the share of regions (latent area) coded at each scale."""
    groups = c.streams()
    maps = split_maps(c)
    regions = sum(int(m.size) for _, m in maps)
    fine = sum(int(m.sum()) for _, m in maps) / max(regions, 1)

    def size(*types: bytes) -> int:
        return sum(len(g[t]) for g in groups for t in types)
    return {"region": maps[0][0], "regions": regions, "split_bytes": size(SPLIT_CHUNK),
            "fine": {"bytes": size(HYPER_CHUNK, LATENT_CHUNK), "share": fine},
            "coarse": {"bytes": size(COARSE_HYPER_CHUNK, COARSE_LATENT_CHUNK), "share": 1 - fine}}


class _Reader:
    """Bounds-checked reader for chunk payloads."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"{self.what}: payload too short")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def text(self) -> str:
        (n,) = self.unpack(">B")
        raw = self.take(n)
        if not raw or not raw.isascii() or not raw.decode().isprintable():
            raise FormatError(f"{self.what}: invalid text field")
        return raw.decode()

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


# -- payload layouts of the model chunks ------------------------------------------

def pack_latent(bound: int, index_crc: int, stream: bytes) -> bytes:
    """LATN payload: alphabet bound (u32), CRC32 of the scale indices (u32), range-coder words."""
    return struct.pack(">II", bound, index_crc) + stream


def unpack_latent(payload: bytes, what: str = "LATN") -> tuple[int, int, bytes]:
    """LATN or CLAT payload -> (bound, index CRC, range-coder words)."""
    r = _Reader(payload, what)
    bound, index_crc = r.unpack(">II")
    return bound, index_crc, r.rest()


def pack_split(region: int, map_crc: int, coded: bytes) -> bytes:
    """SPLT payload: region side in pixels (u16), CRC-32 of the decoded map (u32), the coded map."""
    return struct.pack(">HI", region, map_crc) + coded


def unpack_split(payload: bytes) -> tuple[int, int, bytes]:
    """SPLT payload -> (region side, map CRC, coded map: P(fine) u16 and range-coder words)."""
    r = _Reader(payload, "SPLT")
    region, map_crc = r.unpack(">HI")
    if region == 0:
        raise FormatError("SPLT: region size is zero")
    return region, map_crc, r.rest()
