"""Pillow plugin: ``import anfcodec.pillow`` and ``PIL.Image.open("x.anf")`` decodes .anf files.

Registered the way pillow-avif-plugin and pillow-jxl-plugin do it: an opener found by the
file's signature (so a file without the extension opens too), a saver, the ``.anf`` extension
and the MIME type ``image/x-anf``. Opening is lazy: it reads and checks only the HEAD chunk
(size, mode, quality, model), without torch; the pixels are decoded, bit-exactly, on ``load()``.
``info`` carries ``quality`` and ``model_id``, and after loading the ICC profile and EXIF.

    im = Image.open("photo.anf")              # header only
    im.save("copy.anf", quality=4)            # encode; also max_error=, lossless=, model=
    imageio.v3.imread("photo.anf")            # through Pillow
"""
from __future__ import annotations

import struct
import zlib

from PIL import Image, ImageFile

from . import container

FORMAT = "ANF"
MIME = "image/x-anf"
_HEAD = len(container.SIGNATURE) + 2 + 8   # signature, version, HEAD's length and type


def _accept(prefix: bytes) -> bool:
    return prefix[:len(container.SIGNATURE)] == container.SIGNATURE


class AnfImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "anfcodec learned image (augmented normalizing flows)"

    def _open(self) -> None:
        start = self.fp.read(_HEAD)
        if len(start) < _HEAD or not _accept(start):
            raise SyntaxError("not an .anf file")
        (version,) = struct.unpack_from(">H", start, len(container.SIGNATURE))
        length, ctype = struct.unpack_from(">I4s", start, _HEAD - 8)
        if version != container.FORMAT_VERSION or ctype != container.HEADER_CHUNK or length > 1 << 16:
            raise SyntaxError(f"unsupported .anf file (format version {version})")
        payload, crc = self.fp.read(length), self.fp.read(4)
        if len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(ctype + payload):
            raise SyntaxError("corrupt .anf header")
        h = container.Header.unpack(payload)
        self._size, self._mode = (h.width, h.height), h.mode
        self.info.update(quality=h.quality, model_id=h.model_id)
        self.tile = [ImageFile._Tile("anf", (0, 0) + self.size, 0, None)]

    def load(self):
        if self.tile:  # decode the whole file once: the codec has no partial (row-band) output
            from . import decode
            self.fp.seek(0)
            img = decode(self.fp.read())  # the torch decoder, or where torch is absent the numpy one
            self.info.update({k: img.info[k] for k in ("icc_profile", "exif") if img.info.get(k)})
            self.im = img.im
            self.tile = []
            if self._exclusive_fp and self.fp is not None:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:
    from . import api
    opts = im.encoderinfo
    options = {k: opts[k] for k in ("quality", "max_error", "tile", "refine") if opts.get(k) is not None}
    if opts.get("lossless"):
        options["max_error"] = 0
    if opts.get("model"):
        options["model_id"] = opts["model"]
    fp.write(api.encode(im, **options))


Image.register_open(FORMAT, AnfImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".anf")
Image.register_mime(FORMAT, MIME)
