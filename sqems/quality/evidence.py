"""Evidence for CAPA actions: photos, videos and PDFs in a content-addressed store.

A file is identified by the SHA-256 of its bytes (``sha256:<hex>``): the same photo
attached twice is stored once, and a digest in a CAPA can always be checked against
the file. The type is read from the file's first bytes, not from its name or what the
client says, and each type has its size limit:

| kind | formats | limit |
| --- | --- | --- |
| photo | JPEG, PNG, WebP | 25 MiB |
| video | MP4/MOV, WebM | 500 MiB |
| document | PDF | 50 MiB |

Files live under ``$SQEMS_DATA_DIR/evidence/ab/abcdef…`` with a JSON sidecar (name,
media type, size, when it was stored); they are written to a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqems.errors import NotFound, ValidationFailed

EVIDENCE_DIR = "evidence"
MIB = 1 << 20
LIMITS = {"photo": 25 * MIB, "video": 500 * MIB, "document": 50 * MIB}
_CHUNK = 1 << 20


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
        """Store what ``source`` reads (from its start), refusing what is not a photo,
        video or PDF, or is over its kind's limit."""
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
            key = digest.hexdigest()
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                partial.unlink()
                return self.get(f"sha256:{key}")
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        found = Evidence(f"sha256:{key}", kind[0], kind[1], size, Path(name).name[:300],
                         datetime.now(UTC).isoformat())  # fmt: skip
        target.with_suffix(".json").write_text(json.dumps(asdict(found)))
        return found

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
