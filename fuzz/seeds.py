#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-*.

decode_preprocess: one small image per format and colour type setr decodes (PNG RGB, RGBA,
grey, palette, 16-bit; JPEG baseline, progressive, grey, EXIF-rotated; GIF; BMP; TIFF
RGB and LZW; WebP lossy and lossless), a few hundred bytes each.
request_json: a route selector byte then a JSON or multipart body per route.

Needs Pillow (`pip install pillow`). Deterministic; rerun after changing it, then
`cargo +nightly fuzz cmin <target>` to keep the corpus small.
"""

import base64
import io
import json
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def scene(mode="RGB", size=(8, 6)):
    """A small image with some structure (gradients and a block) in `mode`."""
    w, h = size
    img = Image.new("RGBA", size)
    for y in range(h):
        for x in range(w):
            inside = 2 <= x < 5 and 1 <= y < 4
            img.putpixel(
                (x, y),
                (x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 200 if inside else 40,
                 255 if inside else 128 + x * 10),
            )
    if mode == "RGBA":
        return img
    if mode == "P":
        return img.convert("RGB").quantize(colors=8)
    return img.convert(mode)


def encode(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def exif_rotated_jpeg():
    img = scene("RGB", (8, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW
    return encode(img, "JPEG", quality=70, exif=exif.tobytes())


def images():
    return {
        "png-rgb.png": encode(scene("RGB"), "PNG"),
        "png-rgba.png": encode(scene("RGBA"), "PNG"),
        "png-grey.png": encode(scene("L"), "PNG"),
        "png-palette.png": encode(scene("P"), "PNG"),
        "png-16bit.png": encode(scene("L").convert("I;16"), "PNG"),
        "jpeg-baseline.jpg": encode(scene("RGB"), "JPEG", quality=60),
        "jpeg-progressive.jpg": encode(scene("RGB"), "JPEG", quality=60, progressive=True),
        "jpeg-grey.jpg": encode(scene("L"), "JPEG", quality=60),
        "jpeg-exif-rotated.jpg": exif_rotated_jpeg(),
        "gif.gif": encode(scene("P"), "GIF"),
        "bmp.bmp": encode(scene("RGB", (4, 3)), "BMP"),
        "tiff.tif": encode(scene("RGB", (4, 3)), "TIFF"),
        "tiff-lzw.tif": encode(scene("RGB"), "TIFF", compression="tiff_lzw"),
        "webp-lossy.webp": encode(scene("RGB"), "WEBP", quality=50),
        "webp-lossless.webp": encode(scene("RGBA"), "WEBP", lossless=True),
    }


# Selector byte of request_json: low 3 bits the route, 0x08 the multipart boundary taken
# from the body's first line, 0x40 the key sent, 0x80 the keyed app.
SEARCH, IMAGES, EMBED, RERANK, INDEX, SEARCH_FORM, IMAGES_FORM = range(7)
KEYED, AUTHORISED, OWN_BOUNDARY = 0x80, 0x40, 0x08
BOUNDARY = "XyZfuzzBoundary"


def form(fields, boundary=BOUNDARY):
    """multipart/form-data body of (name, bytes, filename-or-None) fields."""
    out = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def requests():
    png = base64.b64encode(encode(scene("RGB", (4, 3)), "PNG")).decode()
    j = lambda v: json.dumps(v).encode()  # noqa: E731
    bodies = {
        "search-id": (SEARCH, j({"image": {"id": 1}, "strategy": "intersection", "k": 3})),
        "search-rerank": (SEARCH, j({"image": {"id": 2}, "text": "red", "k": 5,
                                     "rerank": {"enabled": True, "k": 3, "weight": 0.5,
                                                "rerankers": ["none"]}})),
        "search-base64": (SEARCH, j({"image": {"base64": png}, "strategy": "union:0.3", "k": 2})),
        "search-url": (SEARCH, j({"image": {"url": "http://x/y.png"}, "k": 1})),
        # The CLIP fixture's embeddings have 16 dimensions.
        "search-embeddings": (SEARCH, j({"image_embedding": [0.5] * 16,
                                         "text_embedding": [0.25, -1.0] * 8,
                                         "strategy": "intersection:0.2", "k": 4})),
        "search-text-rerank": (SEARCH, j({"text": "a red square", "k": 3,
                                          "rerank": {"k": 3, "rerankers": ["fuzz"]}})),
        "images-add": (IMAGES, j({"base64": png, "metadata": {"brand": "x", "n": [1, 2]}})),
        "embed-id": (EMBED, j({"image": {"id": 1}})),
        "embed-text": (EMBED, j({"text": "a red dress"})),
        "rerank": (RERANK, j({"query": {"text": "red", "image": {"id": 1}},
                              "documents": [{"id": 2}, {"base64": png}],
                              "reranker": "fuzz"})),
        "index": (INDEX, j({"path": "photos"})),
        "search-form": (SEARCH_FORM, form([("image_id", b"1", None), ("text", b"red", None),
                                           ("k", b"3", None), ("strategy", b"image", None),
                                           ("rerank", b'{"k": 2}', None)])),
        "search-form-upload": (SEARCH_FORM, form([("image", base64.b64decode(png), "q.png"),
                                                  ("k", b"2", None)])),
        "images-form": (IMAGES_FORM, form([("image", base64.b64decode(png), "a.png"),
                                           ("metadata", b'{"a": 1}', None)])),
        # Bit 3: the boundary is the body's first line (here a one-letter boundary).
        "search-form-short-boundary": (SEARCH_FORM | OWN_BOUNDARY,
                                       b"b\n" + form([("image_id", b"2", None), ("k", b"1", None)],
                                                      boundary="b")),
        "keyed-search": (SEARCH | KEYED | AUTHORISED, j({"image": {"id": 1}, "k": 2})),
        "keyed-no-key": (SEARCH | KEYED, j({"image": {"id": 1}, "k": 2})),
        "keyed-bad-json": (EMBED | KEYED, b'{"text": '),
    }
    return {name: bytes([sel]) + body for name, (sel, body) in bodies.items()}


def write(target, files):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / f"seed-{name}").write_bytes(data)
        print(f"{target}/seed-{name}: {len(data)} bytes")


if __name__ == "__main__":
    write("decode_preprocess", images())
    write("request_json", requests())
