"""A phone camera for browser tests: Chromium's fake capture device playing a generated
video of a printed code held in front of it.

The video is a YUV4MPEG2 file (4:2:0, 640x480, 10 frames per second) that Chromium loops:
a code printed on a white label with its human-readable text under it — a QR code made
with ``segno``, a DataMatrix (ECC 200) with ``ppf-datamatrix``, a GS1 DataMatrix (the
same, its data opened by FNC1 and its variable-length fields ended by FNC1) or a Code 128
with ``python-barcode`` — lying on a grey bench, slightly rotated, moving a few pixels
and a fraction of a degree from frame to frame as a hand-held phone does. A second
Chromium started by :func:`launch_with_camera` reads it for every ``getUserMedia`` call,
with the camera permission granted and no prompt.

:meth:`FakeCamera.show` writes a new video to the same path (atomically, so a capture
already running keeps its old file): the next capture the page starts sees the new code,
so one browser can be shown several codes in turn.

>>> camera = FakeCamera(tmp_path / "camera.y4m")  # doctest: +SKIP
>>> camera.show("U-000042")                        # doctest: +SKIP
>>> camera.show("WO-ASM-00001", symbology="code128")  # doctest: +SKIP
>>> camera.show("(10)LOT-7", symbology="gs1-datamatrix")  # doctest: +SKIP
>>> browser = launch_with_camera(playwright.chromium, camera)  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import io
import os
import random
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import segno
from barcode import Code128  # type: ignore[import-untyped]
from conftest import chromium_path
from PIL import Image, ImageDraw, ImageFont
from ppf.datamatrix import DataMatrix  # type: ignore[import-untyped]

Symbology = Literal["qr", "datamatrix", "gs1-datamatrix", "code128"]

WIDTH, HEIGHT = 640, 480
"""The frame size: a phone camera's low-resolution preview (both even, as 4:2:0 needs)."""
FPS = 10
FRAMES = 8
"""Frames in the loop: enough for the movement to read as a hand, few enough to write fast."""
BENCH = (118, 122, 126)
"""The grey of the bench the label lies on (RGB)."""


FNC1 = 232
"""The DataMatrix codeword FNC1: first, it marks the data as GS1; later, it ends a
variable-length field (a reader hands it on as GS, ``\\x1d``)."""
GS1_CODEC = "datamatrix.gs1"
_GS1_FIELD = re.compile(r"\((\d{2,4})\)([^()]+)")


def _gs1_ascii(message: str, errors: str = "strict") -> tuple[bytes, int]:
    """DataMatrix ASCII encodation of a GS1 element string whose fields are separated by
    GS: FNC1 first and for each GS, digit pairs as 130 + their value, any other ASCII
    character as its code + 1 (ISO/IEC 16022, 5.2.3)."""
    words = [FNC1]
    at = 0
    while at < len(message):
        pair = message[at : at + 2]
        if len(pair) == 2 and pair.isdigit():
            words.append(130 + int(pair))
            at += 2
            continue
        char = message[at]
        if char == "\x1d":
            words.append(FNC1)
        elif ord(char) < 128:
            words.append(ord(char) + 1)
        else:
            raise ValueError(f"{char!r} in {message!r} is not ASCII, which a GS1 code needs")
        at += 1
    return bytes(words), len(message)


def _gs1_unread(data: object, errors: str = "strict") -> tuple[str, int]:
    """Reading codewords back is the code reader's work (zxing-wasm in the page), not
    the label printer's."""
    raise UnicodeError(f"{GS1_CODEC} only writes GS1 DataMatrix codewords")


codecs.register(
    lambda name: (
        codecs.CodecInfo(_gs1_ascii, _gs1_unread, name=GS1_CODEC) if name == GS1_CODEC else None
    )
)


_GS1_PREDEFINED = {"00", "01", "02", "03", "04", "11", "12", "13", "14", "15", "16", "17",
                   "18", "19", "20", "31", "32", "33", "34", "35", "36", "41"}  # fmt: skip
"""The first two digits of the AIs whose data length is predefined (GS1 General
Specifications, figure 7.8.5-2): no FNC1 ends their field."""


def gs1_element_string(text: str) -> str:
    """``(01)09506000134352(10)LOT-7(17)301231`` as the data a GS1 symbol carries: the
    AIs and values run together, a GS (FNC1) after each variable-length field but the
    last."""
    fields = _GS1_FIELD.findall(text)
    if not fields or "".join(f"({ai}){value}" for ai, value in fields) != text:
        raise ValueError(f"{text!r} is not a GS1 element string like (10)LOT-7")
    data = ""
    for i, (ai, value) in enumerate(fields):
        data += ai + value
        if i < len(fields) - 1 and ai[:2] not in _GS1_PREDEFINED:
            data += "\x1d"
    return data


def _modules_image(rows: list[list[int]], module: int, quiet: int) -> Image.Image:
    """A 2D symbol's modules (1 = dark) drawn ``module`` pixels each, with ``quiet``
    light modules around it."""
    dark = np.array(rows, dtype=bool)
    padded = np.pad(dark, quiet, constant_values=False)
    pixels = np.where(padded, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "L").resize(
        (padded.shape[1] * module, padded.shape[0] * module), Image.Resampling.NEAREST
    )
    return image.convert("RGB")


def symbol_image(text: str, symbology: Symbology, module: int) -> Image.Image:
    """``text`` as a code of ``symbology``, black on white with its quiet zone: QR (error
    correction M, four modules around), DataMatrix (square, two modules around), GS1
    DataMatrix (``text`` in parentheses form, e.g. ``(10)LOT-7``) or Code 128 (bars
    ``module // 2`` pixels a module, 80 pixels high, ten modules either side)."""
    if symbology == "qr":
        out = io.BytesIO()
        segno.make_qr(text, error="m", boost_error=False).save(
            out, kind="png", scale=module, border=4, dark="black", light="white"
        )
        return Image.open(io.BytesIO(out.getvalue())).convert("RGB")
    if symbology in ("datamatrix", "gs1-datamatrix"):
        if symbology == "datamatrix":
            symbol = DataMatrix(text)
        else:
            symbol = DataMatrix(gs1_element_string(text))
            symbol.codecs = [GS1_CODEC]
        return _modules_image(symbol.matrix, module, quiet=2)
    if symbology == "code128":
        bars = [[int(bit) for bit in Code128(text).build()[0]]]
        width = max(2, module // 2)
        strip = _modules_image(bars, width, quiet=0)
        quiet = 10 * width
        image = Image.new("RGB", (strip.width + 2 * quiet, 80), "white")
        image.paste(strip.resize((strip.width, 80), Image.Resampling.NEAREST), (quiet, 0))
        return image
    raise ValueError(f"no such symbology {symbology!r}: qr, datamatrix, gs1-datamatrix, code128")


def label_image(text: str, *, symbology: Symbology = "qr", module: int = 7) -> Image.Image:
    """The printed label: ``text`` as a code of ``symbology`` (see :func:`symbol_image`)
    with ``text`` in type under it, on white paper with a margin."""
    code = symbol_image(text, symbology, module)
    font = ImageFont.load_default(size=22)
    caption = ImageDraw.Draw(code).textbbox((0, 0), text, font=font)
    caption_height = round(caption[3] - caption[1])
    text_width = round(caption[2] - caption[0])
    margin = 14
    width = max(code.width, text_width) + 2 * margin  # a small DataMatrix, a long caption
    label = Image.new("RGB", (width, code.height + caption_height + 3 * margin), "white")
    label.paste(code, ((width - code.width) // 2, margin))
    draw = ImageDraw.Draw(label)
    draw.text(
        ((label.width - text_width) // 2 - caption[0], code.height + margin - caption[1]),
        text, fill="black", font=font,
    )  # fmt: skip
    return label


def frames(
    text: str,
    *,
    symbology: Symbology = "qr",
    count: int = FRAMES,
    tilt: float = 4.0,
    seed: int = 7,
) -> list[Image.Image]:
    """``count`` frames of the label lying on the bench, centred, tilted by about ``tilt``
    degrees, each moved a little from the last (a hand's tremor: up to ~6 px and ~1.5
    degrees), with a faint sensor noise. Deterministic for a given ``seed``."""
    label = label_image(text, symbology=symbology).convert("RGBA")
    shake = random.Random(seed)
    noise = np.random.default_rng(seed)
    out: list[Image.Image] = []
    for _ in range(count):
        angle = tilt + shake.uniform(-1.5, 1.5)
        turned = label.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        frame = Image.new("RGB", (WIDTH, HEIGHT), BENCH)
        x = (WIDTH - turned.width) // 2 + shake.randint(-6, 6)
        y = (HEIGHT - turned.height) // 2 + shake.randint(-6, 6)
        frame.paste(turned, (x, y), turned)
        grain = noise.normal(0.0, 3.0, (HEIGHT, WIDTH, 1))
        pixels = np.clip(np.asarray(frame, dtype=np.float64) + grain, 0, 255)
        out.append(Image.fromarray(pixels.astype(np.uint8), "RGB"))
    return out


def yuv420(frame: Image.Image) -> bytes:
    """One frame as planar Y, Cb, Cr (full-range BT.601, as JPEG uses), the chroma planes
    averaged over 2x2 blocks: the layout of a Y4M ``C420jpeg`` frame."""
    rgb = np.asarray(frame.convert("RGB"), dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 + (b - y) * 0.564
    cr = 128 + (r - y) * 0.713

    def quarter(plane: Any) -> Any:
        h, w = plane.shape
        return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [y, quarter(cb), quarter(cr)]
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def write_y4m(path: Path, images: list[Image.Image], fps: int = FPS) -> None:
    """Write ``images`` (all ``WIDTH`` x ``HEIGHT``) as a YUV4MPEG2 video to ``path``,
    atomically: a reader that has the old file open keeps reading the old file."""
    header = f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii")
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as out:
        out.write(header)
        for image in images:
            if image.size != (WIDTH, HEIGHT):
                raise ValueError(f"a frame is {image.size}, the video is {(WIDTH, HEIGHT)}")
            out.write(b"FRAME\n")
            out.write(yuv420(image))
    os.replace(partial, path)


class FakeCamera:
    """The video file Chromium's fake camera plays, and what it currently shows."""

    def __init__(self, path: Path, text: str = "SQEMS") -> None:
        self.path = path
        self.showing = ""
        self.symbology: Symbology = "qr"
        self.show(text)

    def show(self, text: str, *, symbology: Symbology = "qr", tilt: float = 4.0) -> None:
        """Hold a label with ``text`` as a code of ``symbology`` in front of the camera
        (from the next capture the page starts)."""
        seed = sum(map(ord, text))
        write_y4m(self.path, frames(text, symbology=symbology, tilt=tilt, seed=seed))
        self.showing = text
        self.symbology = symbology


def camera_args(camera: FakeCamera) -> list[str]:
    """Chromium's switches for a fake camera playing ``camera``'s file, its permission
    prompt answered yes."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera.path}",
    ]


def launch_with_camera(browser_type: Any, camera: FakeCamera) -> Any:
    """A headless Debian Chromium (Playwright ``BrowserType.launch``) whose camera is
    ``camera``. ``browser_type`` is ``playwright.chromium``, or ``browser.browser_type`` of
    the session's browser. Contexts still need ``permissions=["camera"]`` for the page's
    Permissions API to answer "granted"."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium")
    return browser_type.launch(
        executable_path=executable, args=["--no-sandbox", *camera_args(camera)]
    )
