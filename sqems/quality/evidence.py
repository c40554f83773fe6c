"""Evidence for CAPA actions: photos, videos and PDFs in a content-addressed store.

A file is identified by the SHA-256 of its bytes (``sha256:<hex>``): the same photo
attached twice is stored once, and a digest in a CAPA can always be checked against
the file. The type is read from the file's first bytes, not from its name or what the
client says, and then the whole file must be what its first bytes claim: a PNG parses
chunk by chunk (lengths, CRCs) to its IEND with nothing after, a JPEG segment by
segment to its end-of-image marker with nothing after, a WebP's RIFF size is the
file's, a PDF ends with ``%%EOF``, an MP4/MOV's boxes tile the file exactly. A photo
holding HTML markup (``<html``, ``<script``, … — a polyglot a browser could run) is
refused. Each type has its size limit:

| kind | formats | limit |
| --- | --- | --- |
| photo | JPEG, PNG, WebP | 25 MiB |
| video | MP4/MOV, WebM | 500 MiB |
| document | PDF | 50 MiB |

Files live under ``$SQEMS_DATA_DIR/evidence/ab/abcdef…`` with a JSON sidecar (name,
media type, size, when it was stored); they are written to a temporary name and
renamed, so a reader never sees half a file. Nothing is written for a file that is
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqems.errors import NotFound, ValidationFailed

EVIDENCE_DIR = "evidence"
MIB = 1 << 20
LIMITS = {"photo": 25 * MIB, "video": 500 * MIB, "document": 50 * MIB}
_CHUNK = 1 << 20
_PNG = b"\x89PNG\r\n\x1a\n"
_MARKUP = re.compile(
    rb"<\s*(?:!doctype|html|head|body|script|iframe|svg|object|embed|meta|img|style|form|"
    rb"link|base)[\s>/]|<\?xml[\s>]",
    re.IGNORECASE,
)
"""HTML (or XML, for SVG) markup a browser would act on, if it took the file for a page."""


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, media type) of a file from its first bytes, or None if not accepted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "photo", "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "photo", "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "photo", "image/webp"
    if head.startswith(b"%PDF-"):
        return "document", "application/pdf"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "video", "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "video/webm"
    return None


def check_whole(path: Path, media_type: str) -> str | None:
    """Why the file at ``path`` is not a well-formed ``media_type``, or None if it is."""
    if media_type == "video/webm":
        return None  # the EBML header was checked by sniff; no parser at hand for the rest
    if media_type in ("video/mp4", "video/quicktime"):
        return _mp4_problem(path)
    if media_type == "application/pdf":
        return _pdf_problem(path)
    data = path.read_bytes()  # a photo: at most 25 MiB
    problem = {"image/png": _png_problem, "image/jpeg": _jpeg_problem,
               "image/webp": _webp_problem}[media_type](data)  # fmt: skip
    if problem is None and (markup := _MARKUP.search(data)) is not None:
        found = markup.group().decode("latin-1").strip()
        problem = f"it holds HTML markup ({found!r} at byte {markup.start()})"
    return problem


def _png_problem(data: bytes) -> str | None:
    at, first = len(_PNG), True
    while True:
        if at + 12 > len(data):
            return f"its chunk at byte {at} is cut short (no IEND chunk)"
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 12 + length
        if not kind.isalpha() or end > len(data):
            return f"its chunk at byte {at} is not a PNG chunk"
        body = data[at + 4 : at + 8 + length]
        if zlib.crc32(body) != struct.unpack(">I", data[end - 4 : end])[0]:
            return f"its {kind.decode()} chunk at byte {at} fails its CRC"
        if first and (kind != b"IHDR" or length != 13):
            return "it does not start with an IHDR chunk"
        first = False
        if kind == b"IEND":
            return None if end == len(data) else f"{len(data) - end} bytes follow its IEND"
        at = end


def _jpeg_problem(data: bytes) -> str | None:
    at = 2  # after SOI
    while True:
        if at + 2 > len(data) or data[at] != 0xFF:
            return f"byte {at} is not a JPEG marker (no end-of-image marker)"
        marker = data[at + 1]
        if marker == 0xD9:
            end = at + 2
            return None if end == len(data) else f"{len(data) - end} bytes follow its end"
        if marker == 0xFF:
            at += 1  # fill byte
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            at += 2
            continue
        if at + 4 > len(data):
            return f"its segment at byte {at} is cut short"
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            while True:
                at = data.find(b"\xff", at)
                if at < 0 or at + 1 >= len(data):
                    return "its scan data has no end-of-image marker"
                following = data[at + 1]
                if following == 0 or 0xD0 <= following <= 0xD7:
                    at += 2
                    continue
                break


def _webp_problem(data: bytes) -> str | None:
    size = struct.unpack("<I", data[4:8])[0]
    if size + 8 != len(data):
        return f"its RIFF size says {size + 8} bytes, the file has {len(data)}"
    if data[12:16] not in (b"VP8 ", b"VP8L", b"VP8X"):
        return "its first chunk is not a VP8 image"
    return None


def _pdf_problem(path: Path) -> str | None:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        tail = f.read()
    if not tail.rstrip().endswith(b"%%EOF"):
        return "it does not end with %%EOF (a PDF cut short, or something after it)"
    return None


def _mp4_problem(path: Path) -> str | None:
    size, at = path.stat().st_size, 0
    with path.open("rb") as f:
        while at < size:
            f.seek(at)
            head = f.read(16)
            if len(head) < 8:
                return f"its box at byte {at} is cut short"
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1:
                if len(head) < 16:
                    return f"its box at byte {at} is cut short"
                length = struct.unpack(">Q", head[8:16])[0]
            elif length == 0:
                length = size - at
            if length < 8 or at + length > size or not all(32 <= c < 127 for c in kind):
                return f"its box at byte {at} does not fit the file"
            at += length
    return None


@dataclass(frozen=True, slots=True)
class Evidence:
    digest: str
    kind: str
    media_type: str
    size: int
    name: str
    stored_at: str


class EvidenceStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, source: BinaryIO, name: str) -> Evidence:
        """Store what ``source`` reads (from its start), refusing what is not a
        well-formed photo, video or PDF, or is over its kind's limit."""
        return self.receive(source, name)[0]

    def receive(self, source: BinaryIO, name: str) -> tuple[Evidence, bool]:
        """:meth:`put`, and whether the file is new to the store (False: it was there)."""
        source.seek(0)
        head = source.read(16)
        kind = sniff(head)
        if kind is None:
            raise ValidationFailed(
                f"{name} is not a photo (JPEG, PNG, WebP), video (MP4, MOV, WebM) or PDF: "
                "evidence of other types is not accepted"
            )
        limit = LIMITS[kind[0]]
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(head)
        size = len(head)
        handle = tempfile.NamedTemporaryFile(dir=self.root, prefix=".incoming-", delete=False)  # noqa: SIM115
        partial = Path(handle.name)
        try:
            with handle:
                handle.write(head)
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ValidationFailed(
                            f"{name} is over the limit for a {kind[0]} ({limit // MIB} MiB)"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
            problem = check_whole(partial, kind[1])
            if problem is not None:
                raise ValidationFailed(f"{name} is not a well-formed {kind[1]}: {problem}")
            key = digest.hexdigest()
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                partial.unlink()
                return self.get(f"sha256:{key}"), False
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        found = Evidence(f"sha256:{key}", kind[0], kind[1], size, Path(name).name[:300],
                         datetime.now(UTC).isoformat())  # fmt: skip
        target.with_suffix(".json").write_text(json.dumps(asdict(found)))
        return found, True

    def discard(self, digest: str) -> None:
        """Remove a file (one just stored that its CAPA refused)."""
        path = self._path(self._key(digest))
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def get(self, digest: str) -> Evidence:
        path = self._path(self._key(digest)).with_suffix(".json")
        if not path.is_file():
            raise NotFound(f"evidence {digest} is not in the store")
        return Evidence(**json.loads(path.read_text()))

    def open(self, digest: str) -> BinaryIO:
        self.get(digest)
        return self._path(self._key(digest)).open("rb")

    def check(self, digest: str) -> bool:
        """The file still hashes to its digest."""
        sha = hashlib.sha256()
        with self.open(digest) as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                sha.update(block)
        return f"sha256:{sha.hexdigest()}" == digest

    def _key(self, digest: str) -> str:
        key = digest.removeprefix("sha256:")
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValidationFailed(f"{digest!r} is not an evidence digest (sha256:<64 hex>)")
        return key

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key
