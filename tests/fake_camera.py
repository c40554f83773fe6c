"""A phone camera for browser tests: Chromium's fake capture device playing a generated
video of a printed code held in front of it.

The video is a YUV4MPEG2 file (4:2:0, 640x480, 10 frames per second) that Chromium loops:
a QR code made with ``segno``, printed on a white label with its human-readable text under
it, lying on a grey bench, slightly rotated, moving a few pixels and a fraction of a degree
from frame to frame as a hand-held phone does. A second Chromium started by
:func:`launch_with_camera` reads it for every ``getUserMedia`` call, with the camera
permission granted and no prompt.

:meth:`FakeCamera.show` writes a new video to the same path (atomically, so a capture
already running keeps its old file): the next capture the page starts sees the new code,
so one browser can be shown several codes in turn.

>>> camera = FakeCamera(tmp_path / "camera.y4m")  # doctest: +SKIP
>>> camera.show("U-000042")                        # doctest: +SKIP
>>> browser = launch_with_camera(playwright.chromium, camera)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import segno
from conftest import chromium_path
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 480
"""The frame size: a phone camera's low-resolution preview (both even, as 4:2:0 needs)."""
FPS = 10
FRAMES = 8
"""Frames in the loop: enough for the movement to read as a hand, few enough to write fast."""
BENCH = (118, 122, 126)
"""The grey of the bench the label lies on (RGB)."""


def label_image(text: str, *, module: int = 7) -> Image.Image:
    """The printed label: ``text`` as a QR code (error correction M, its four-module quiet
    zone kept) with ``text`` in type under it, on white paper with a margin."""
    qr = segno.make_qr(text, error="m", boost_error=False)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=module, border=4, dark="black", light="white")
    code = Image.open(io.BytesIO(out.getvalue())).convert("RGB")
    font = ImageFont.load_default(size=22)
    caption = ImageDraw.Draw(code).textbbox((0, 0), text, font=font)
    caption_height = caption[3] - caption[1]
    margin = 14
    label = Image.new(
        "RGB", (code.width + 2 * margin, code.height + caption_height + 3 * margin), "white"
    )
    label.paste(code, (margin, margin))
    draw = ImageDraw.Draw(label)
    text_width = caption[2] - caption[0]
    draw.text(
        ((label.width - text_width) // 2 - caption[0], code.height + margin - caption[1]),
        text, fill="black", font=font,
    )  # fmt: skip
    return label


def frames(
    text: str, *, count: int = FRAMES, tilt: float = 4.0, seed: int = 7
) -> list[Image.Image]:
    """``count`` frames of the label lying on the bench, centred, tilted by about ``tilt``
    degrees, each moved a little from the last (a hand's tremor: up to ~6 px and ~1.5
    degrees), with a faint sensor noise. Deterministic for a given ``seed``."""
    label = label_image(text).convert("RGBA")
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
        self.show(text)

    def show(self, text: str, *, tilt: float = 4.0) -> None:
        """Hold a label with ``text`` as a QR code in front of the camera (from the next
        capture the page starts)."""
        write_y4m(self.path, frames(text, tilt=tilt, seed=sum(map(ord, text))))
        self.showing = text


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
