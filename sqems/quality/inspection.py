"""What the inspector on the floor does with a phone: identify what a code names, and
report a defect on it with photos.

``identify`` takes whatever a scanner reads or a person types and finds the unit,
batch or material lot it names:

* a bare uid (``U-0042``, ``B-2026-118``, ``LOT-7731``);
* a GS1 element string, as printed under a barcode with parentheses
  (``(01)09506000134352(21)U-0042``) or as a scanner returns it, raw, with FNC1 as the
  GS character (``\\x1d``) after each variable-length field and possibly a symbology
  identifier in front (``]d2``): AI 21 (serial) names a unit, AI 10 (lot) a batch or a
  material lot;
* a URL (a GS1 Digital Link, a label pointing at the plant's pages): its ``uid=`` query
  parameter, else its last path segment.

and says what the inspector needs at the line: the product, the batch, its status, the
batches on hold, the open CAPAs and the defects already recorded.

``report_defect`` records a defect found by hand as a ``Defect`` node
``DEF-R-<report id>``, ``FOUND_ON`` the unit or batch and ``OF_TYPE`` its type, with the
photos' digests (:mod:`sqems.quality.evidence`) and one entry in the audit trail. The
report id is a UUID the phone made when the report was written: a report sent again
(the phone lost the answer, its offline queue replays it) finds its defect and changes
nothing.

>>> read_gs1("(01)09506000134352(21)U-0042(10)B-7")
{'01': '09506000134352', '21': 'U-0042', '10': 'B-7'}
>>> read_gs1("0109506000134352" "21U-0042\\x1d" "10B-7")
{'01': '09506000134352', '21': 'U-0042', '10': 'B-7'}
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import (
    Batch,
    BatchStatus,
    Capa,
    CapaStatus,
    Defect,
    DefectType,
    Material,
    MaterialLot,
    Product,
    Severity,
    Unit,
)
from sqems.graph_model.nodes import Node as GraphNode
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.quality.audit import AuditTrail
from sqems.quality.evidence import Evidence, EvidenceStore, sniff

log = logging.getLogger(__name__)
IN, OUT = Direction.IN, Direction.OUT
KINDS = ("Unit", "Batch", "MaterialLot")
"""What a code may name."""
RECENT = 5
"""How many of the latest defects ``identify`` lists."""
FUTURE_SLACK = timedelta(minutes=5)
"""How far ahead of the server's clock a report's time may be (a phone's clock drifts)."""
MAX_PHOTOS = 12
DEFECT_PREFIX = "DEF-R-"
GS = "\x1d"
N = TypeVar("N", bound=GraphNode)

_SYMBOLOGY = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
"""An AIM symbology identifier some scanners put in front (``]d2`` DataMatrix,
``]C1`` GS1-128, ``]Q3`` QR with FNC1)."""
_PARENTHESISED = re.compile(r"\((\d{2,4})\)([^()]*)")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_FIXED = {"00": 18, "01": 14, "02": 14, "03": 14, "04": 16, "11": 6, "12": 6, "13": 6,
          "14": 6, "15": 6, "16": 6, "17": 6, "18": 6, "19": 6, "20": 2, "31": 6, "32": 6,
          "33": 6, "34": 6, "35": 6, "36": 6, "41": 13}  # fmt: skip
"""Data lengths of the AIs whose length is predefined by their first two digits (GS1
General Specifications, figure 7.8.5-2): no FNC1 follows them. Every other field runs
to the next FNC1 (GS) or the end."""
_AI_DIGITS = {"23": 3, "24": 3, "25": 3, "31": 4, "32": 4, "33": 4, "34": 4, "35": 4, "36": 4,
              "39": 4, "40": 3, "41": 3, "42": 3, "43": 4, "70": 4, "71": 3, "72": 4, "80": 4,
              "81": 4, "82": 4}  # fmt: skip
"""How many digits an AI has, by its first two (two where not listed)."""


# --- reading codes ---------------------------------------------------------------------


def read_gs1(code: str) -> dict[str, str] | None:
    """The application identifiers and values of a GS1 element string, or None when
    ``code`` is not one (the parenthesised human-readable form or the raw form)."""
    text = _SYMBOLOGY.sub("", code.strip()).lstrip(GS)
    if text.startswith("("):
        fields = _PARENTHESISED.findall(text)
        if not fields or "".join(f"({ai}){value}" for ai, value in fields) != text:
            return None
        return {ai: value.strip(GS) for ai, value in fields}
    found: dict[str, str] = {}
    at = 0
    while at < len(text):
        head = text[at : at + 2]
        digits = _AI_DIGITS.get(head, 2)
        ai = text[at : at + digits]
        if len(ai) < digits or not ai.isdigit():
            return None
        at += digits
        if head in _FIXED:
            value, at = text[at : at + _FIXED[head]], at + _FIXED[head]
            if len(value) < _FIXED[head]:
                return None
            if text[at : at + 1] == GS:
                at += 1
        else:
            end = text.find(GS, at)
            end = len(text) if end < 0 else end
            value, at = text[at:end], end + 1
        if not value or ai in found:
            return None
        found[ai] = value
    return found or None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A uid a code may name, and the labels it may name there."""

    uid: str
    kinds: tuple[str, ...]
    read_as: str


def candidates(code: str) -> list[Candidate]:
    """What ``code`` may name, in the order to try: a URL's ``uid=`` then its last
    path segment; a GS1 string's serial (a unit) then its lot (a batch or a lot); the
    code itself as a uid."""
    text = code.strip()
    found: list[Candidate] = []
    if _URL.match(text):
        parts = urlsplit(text)
        for value in parse_qs(parts.query).get("uid", []):
            found.append(Candidate(value.strip(), KINDS, "the URL's uid parameter"))
        segments = [s for s in parts.path.split("/") if s]
        if segments:
            found.append(Candidate(unquote(segments[-1]).strip(), KINDS, "the URL's last segment"))
        return [c for c in found if c.uid]
    gs1 = read_gs1(text)
    if gs1 is not None:
        if "21" in gs1:
            found.append(Candidate(gs1["21"], ("Unit",), "GS1 AI 21 (serial)"))
        if "10" in gs1:
            found.append(Candidate(gs1["10"], ("Batch", "MaterialLot"), "GS1 AI 10 (lot)"))
    marked = GS in text or text.startswith("(") or _SYMBOLOGY.match(text) is not None
    if text and not marked:  # a plain uid that happens to read as GS1 is first of all a uid
        found.insert(0, Candidate(text, KINDS, "a uid"))
    return found


# --- identify --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapaBrief:
    """An open CAPA, as a card on the phone."""

    uid: str
    title: str
    status: str
    priority: str | None
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class DefectBrief:
    """A recorded defect, as a line on the phone."""

    uid: str
    type: str | None = field(metadata={"description": "The defect type's uid."})
    type_name: str | None
    severity: str
    found_at: datetime
    evidence: int = field(metadata={"description": "How many photos are kept for it."})


@dataclass(frozen=True, slots=True)
class Identified:
    """What a code names and what the inspector should know about it."""

    code: str
    kind: str = field(metadata={"description": "Unit, Batch or MaterialLot."})
    uid: str
    product: str | None
    product_name: str | None
    batch: str | None = field(
        metadata={"description": "The unit's batch, the batch itself; null for a lot."}
    )
    status: str = field(metadata={"description": "A lot: received or expired."})
    held_batches: list[str] = field(
        metadata={
            "description": "This batch, the unit's batch or the batches that consumed "
            "this lot, those on hold."
        }
    )
    open_capas: list[CapaBrief] = field(
        metadata={
            "description": "Open CAPAs addressing defects found on it or its batch, "
            "or complaints about it."
        }
    )
    defects: int = field(metadata={"description": "Defects recorded on it."})
    recent_defects: list[DefectBrief] = field(
        metadata={"description": "The latest defects recorded on it, newest first."}
    )
    material: str | None = field(metadata={"description": "A lot's part number."})
    material_name: str | None


def find_target(store: GraphStore, code: str) -> tuple[Candidate, Unit | Batch | MaterialLot]:
    """The unit, batch or material lot ``code`` names; :class:`NotFound` otherwise."""
    tried = candidates(code)
    if not tried:
        raise NotFound(f"the code {code!r} names nothing: scan again or type the uid")
    found = store.get_many(dict.fromkeys(c.uid for c in tried))
    for c in tried:
        node = found.get(c.uid)
        if isinstance(node, Unit | Batch | MaterialLot) and node.label in c.kinds:
            return c, node
    read = "; ".join(f"{c.uid!r} ({c.read_as})" for c in tried)
    raise NotFound(
        f"no unit, batch or material lot is known by the code {code!r} (read as {read}; "
        f"store: {store.description}): check the label, or type the uid"
    )


AROUND: dict[str, list[dict[str, Direction]]] = {
    "Unit": [
        {"PRODUCED": IN, "FOUND_ON": IN, "ABOUT": IN},
        {"OF_PRODUCT": OUT, "FOUND_ON": IN, "ADDRESSES": IN, "OF_TYPE": OUT},
        {"ADDRESSES": IN},
    ],
    "Batch": [{"OF_PRODUCT": OUT, "FOUND_ON": IN}, {"ADDRESSES": IN, "OF_TYPE": OUT}],
    "MaterialLot": [{"CONSUMED_IN": OUT, "LOT_OF": OUT}],
}
"""What ``identify`` reads around each kind, step by step (:meth:`GraphStore.edges_along`):
a unit's batch, defects and complaints, then the batch's product and defects, the
CAPAs and the defect types, then the CAPAs on the batch's defects; a batch's product
and defects, then their CAPAs and types; a lot's consumers and part number."""


def identify(store: GraphStore, code: str) -> Identified:
    """What ``code`` names (see the module docstring) and its quality state: three
    calls to the store (one round trip each to a server), however much it holds."""
    _, node = find_target(store, code)
    uid = node.uid
    edges = [e for step in store.edges_along([uid], AROUND[node.label]) for e in step]

    def ends(typ: str, *, to: str | None = None, of: str | None = None) -> list[str]:
        """Sources of ``typ`` edges into ``to``, or targets of those out of ``of``."""
        if to is not None:
            return [e.src for e in edges if e.type == typ and e.dst == to]
        return [e.dst for e in edges if e.type == typ and e.src == of]

    batch_uid = uid if node.label == "Batch" else next(iter(ends("PRODUCED", to=uid)), None)
    on_it = ends("FOUND_ON", to=uid)
    addressed = on_it + ends("ABOUT", to=uid)
    if batch_uid is not None and batch_uid != uid:
        addressed += ends("FOUND_ON", to=batch_uid)
    capas = {e.src for e in edges if e.type == "ADDRESSES" and e.dst in set(addressed)}
    found = store.get_many({e.src for e in edges} | {e.dst for e in edges})
    maker = node if isinstance(node, Batch) else found.get(batch_uid or "")
    batch = maker if isinstance(maker, Batch) else None
    product = _first(found, ends("OF_PRODUCT", of=batch_uid), Product)
    if isinstance(node, MaterialLot):
        held = [b for b in ends("CONSUMED_IN", of=uid) if _held(found.get(b))]
        expired = node.expires_at is not None and node.expires_at <= datetime.now(UTC)
        status = "expired" if expired else "received"
    else:
        held = [batch.uid] if batch is not None and _held(batch) else []
        status = node.status.value
    material = _first(found, ends("LOT_OF", of=uid), Material)
    return Identified(
        code=code, kind=node.label, uid=uid,
        product=product.uid if product else None, product_name=product.name if product else None,
        batch=batch.uid if batch else None, status=status, held_batches=sorted(held),
        open_capas=_open_capas([found.get(c) for c in capas]), defects=len(on_it),
        recent_defects=_recent(found, on_it, {e.src: e.dst for e in edges if e.type == "OF_TYPE"}),
        material=material.uid if material else None,
        material_name=material.name if material else None,
    )  # fmt: skip


def _first(found: dict[str, GraphNode], uids: Iterable[str], kind: type[N]) -> N | None:
    return next((n for n in map(found.get, uids) if isinstance(n, kind)), None)


def _held(node: GraphNode | None) -> bool:
    return isinstance(node, Batch) and node.status is BatchStatus.ON_HOLD


def _open_capas(capas: Iterable[GraphNode | None]) -> list[CapaBrief]:
    """The CAPAs among ``capas`` that are not closed, the nearest due date first."""
    open_ = [c for c in capas if isinstance(c, Capa) and c.status is not CapaStatus.CLOSED]
    far = datetime.max.replace(tzinfo=UTC)
    open_.sort(key=lambda c: (c.due_at or far, c.uid))
    return [CapaBrief(c.uid, c.title, c.status.value, c.priority.value if c.priority else None,
                      c.due_at) for c in open_]  # fmt: skip


def _recent(found: dict[str, GraphNode], defect_uids: Iterable[str],
            typed: dict[str, str]) -> list[DefectBrief]:  # fmt: skip
    """The latest :data:`RECENT` of the defects, newest first, with their types."""
    defects = [d for d in map(found.get, defect_uids) if isinstance(d, Defect)]
    defects.sort(key=lambda d: (d.found_at, d.uid), reverse=True)
    briefs = []
    for d in defects[:RECENT]:
        kind = found.get(typed.get(d.uid, ""))
        briefs.append(DefectBrief(d.uid, typed.get(d.uid), getattr(kind, "name", None),
                                  d.severity.value, d.found_at,
                                  len(evidence_of(d))))  # fmt: skip
    return briefs


def evidence_of(defect: Defect) -> list[str]:
    """The digests of the photos kept for ``defect``."""
    listed = json.loads(defect.evidence)
    return [d for d in listed if isinstance(d, str)] if isinstance(listed, list) else []


# --- defect types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefectTypeChoice:
    """A defect type an inspector may pick."""

    uid: str
    name: str
    category: str = field(metadata={"description": "Its 6M (fishbone) category."})


def defect_types(store: GraphStore) -> list[DefectTypeChoice]:
    """Every defect type in the graph, by name."""
    found = [t for t in store.find("DefectType") if isinstance(t, DefectType)]
    found.sort(key=lambda t: (t.name.casefold(), t.uid))
    return [DefectTypeChoice(t.uid, t.name, t.category.value) for t in found]


# --- reporting -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefectReport:
    """A defect as the inspector wrote it on the phone."""

    report_id: str
    target: str
    defect_type: str
    severity: Severity
    note: str = ""
    found_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo sent with a report: its file name and its bytes."""

    name: str
    source: BinaryIO


@dataclass(frozen=True, slots=True)
class Reported:
    """The defect a report made (or had made before: ``created`` False)."""

    defect: Defect
    created: bool
    evidence: list[Evidence]


def defect_uid(report_id: str) -> str:
    """The uid of the defect a report makes: ``DEF-R-`` and the report's UUID."""
    try:
        return DEFECT_PREFIX + str(uuid.UUID(report_id.strip()))
    except ValueError:
        raise ValidationFailed(
            f"reportId {report_id!r} is not a UUID: the phone makes one for each report "
            "(crypto.randomUUID())"
        ) from None


class Inspector:
    """Defect reports into ``store``, audited in ``trail``, photos kept in ``files``."""

    def __init__(self, store: GraphStore, trail: AuditTrail, files: EvidenceStore) -> None:
        self.store = store
        self.trail = trail
        self.files = files

    def report(
        self,
        user: str,
        role: str,
        report: DefectReport,
        photos: Sequence[Photo] = (),
        *,
        now: datetime | None = None,
    ) -> Reported:
        """Record ``report`` as a Defect with ``photos``, or find the one it made before.

        Everything that can be checked is checked before a photo is stored, so a
        refused report leaves nothing behind; photos stored for a report whose graph or
        trail write then fails are removed again (those that were new to the store).
        """
        uid = defect_uid(report.report_id)
        earlier = self._earlier(uid, report)
        if earlier is not None:
            return earlier
        now = now or datetime.now(UTC)
        defect_type, found_at = self._check(report, now, len(photos))
        stored, new = self._store(photos)
        written = False
        try:
            with self.trail.writing() as w:
                earlier = self._earlier(uid, report)  # sent twice at once: the first wins
                if earlier is not None:
                    kept = set(evidence_of(earlier.defect))
                    new = [d for d in new if d not in kept]
                    self._discard(new)
                    return earlier
                defect = Defect.parse({
                    "uid": uid, "found_at": found_at, "severity": report.severity,
                    "description": report.note.strip() or None,
                    "evidence": json.dumps([e.digest for e in stored]), "reported_by": user,
                })  # fmt: skip
                record = defect.model_dump(mode="json") | {
                    "found_on": report.target.strip(), "of_type": defect_type.uid,
                    "report_id": report.report_id.strip(),
                }  # fmt: skip
                w.append(user, role, "Defect", uid, "reported", None, record)
                with self.store.transaction() as tx:
                    tx.add_nodes([defect])
                    tx.add_edges([Edge("FOUND_ON", uid, report.target.strip()),
                                  Edge("OF_TYPE", uid, defect_type.uid)])  # fmt: skip
                written = True
        except BaseException:
            if not written:  # else the defect stands (its entry failed): keep its photos
                self._discard(new)
            raise
        log.info("defect %s reported by %s on %s", uid, user, report.target,
                 extra={"defect": uid, "photos": len(stored)})  # fmt: skip
        return Reported(defect, True, stored)

    def _earlier(self, uid: str, report: DefectReport) -> Reported | None:
        """The defect this report made before, if it did; a report id reused for
        another target is refused (it would otherwise be lost without a word)."""
        found = self.store.get_many([uid]).get(uid)
        if found is None:
            return None
        if not isinstance(found, Defect):
            raise ValidationFailed(f"{uid} is a {found.label}, not a reported defect")
        on = {e.dst for e in self.store.edges([uid], {"FOUND_ON": OUT})}
        if on and report.target.strip() not in on:
            raise ValidationFailed(
                f"report {report.report_id} was recorded on {', '.join(sorted(on))}, not on "
                f"{report.target}: give a new report its own reportId"
            )
        files = []
        for digest in evidence_of(found):
            try:
                files.append(self.files.get(digest))
            except NotFound:
                log.warning("evidence %s of %s is missing from the evidence store", digest, uid)
        return Reported(found, False, files)

    def _check(
        self, report: DefectReport, now: datetime, photos: int
    ) -> tuple[DefectType, datetime]:
        target_uid, type_uid = report.target.strip(), report.defect_type.strip()
        found = self.store.get_many([target_uid, type_uid])
        target, kind = found.get(target_uid), found.get(type_uid)
        if target is None:
            raise NotFound(f"{target_uid!r} is not in the graph: a defect is reported on a unit "
                           "or a batch; scan or type its uid")  # fmt: skip
        if not isinstance(target, Unit | Batch):
            raise ValidationFailed(f"a defect is found on a unit or a batch; {target_uid} is a "
                                   f"{target.label}")  # fmt: skip
        if not isinstance(kind, DefectType):
            what = f"a {kind.label}" if kind is not None else "not in the graph"
            raise ValidationFailed(f"defect type {type_uid!r} is {what}: pick one of the "
                                   "defect types (defectTypes)")  # fmt: skip
        if photos > MAX_PHOTOS:
            raise ValidationFailed(f"{photos} photos sent; a report takes at most {MAX_PHOTOS}")
        found_at = report.found_at or now
        if found_at.tzinfo is None:
            raise ValidationFailed(f"foundAt {found_at.isoformat()} has no time zone")
        if found_at > now + FUTURE_SLACK:
            raise ValidationFailed(
                f"foundAt {found_at.isoformat()} is in the future (the server's time is "
                f"{now.isoformat(timespec='seconds')}): check the phone's clock"
            )
        made = target.produced_at if isinstance(target, Unit) else target.started_at
        if found_at < made:
            raise ValidationFailed(
                f"foundAt {found_at.isoformat()} is before {target_uid} was produced "
                f"({made.isoformat()})"
            )
        return kind, found_at

    def _store(self, photos: Sequence[Photo]) -> tuple[list[Evidence], list[str]]:
        """Keep the photos; the evidence and the digests that are new to the store. A
        file that is not a photo, or a photo that does not parse, refuses them all."""
        for photo in photos:
            photo.source.seek(0)
            kind = sniff(photo.source.read(16))
            if kind is None or kind[0] != "photo":
                raise ValidationFailed(
                    f"{photo.name} is not a photo: a defect report takes JPEG, PNG or WebP"
                )
        stored: list[Evidence] = []
        new: list[str] = []
        try:
            for photo in photos:
                evidence, fresh = self.files.receive(photo.source, photo.name)
                if evidence.digest not in {e.digest for e in stored}:
                    stored.append(evidence)
                if fresh:
                    new.append(evidence.digest)
        except BaseException:
            self._discard(new)
            raise
        return stored, new

    def _discard(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.files.discard(digest)


def report_defect(
    store: GraphStore,
    trail: AuditTrail,
    files: EvidenceStore,
    user: str,
    role: str,
    report: DefectReport,
    photos: Sequence[Photo] = (),
) -> Reported:
    """:meth:`Inspector.report` in one call."""
    return Inspector(store, trail, files).report(user, role, report, photos)
