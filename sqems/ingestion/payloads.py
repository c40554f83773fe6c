"""What sensors send: the MQTT topic scheme and the JSON readings, validated.

Topic: ``sqems/v1/{site}/{line}/{machine}/{parameter}``. Payload: one reading, a JSON
array of readings, or ``{"readings": [...]}``; a reading is

.. code-block:: json

    {"ts": "2026-03-02T06:00:00.125Z", "value": 243.1, "unit": "degC",
     "id": "oven2-000123", "quality": "good"}

``value`` is a JSON number (``true`` or ``"243"`` is refused, not read as a number);
``ts`` is not before :data:`EARLIEST` (a sender whose clock was reset says 1970 or
year 1); ``id`` is the sender's message id (deduplication key); ``quality`` is
``good`` (default), ``uncertain`` or ``bad``. See docs/ingestion.md.

>>> topic = Topic.parse("sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK")
>>> topic.machine, topic.parameter
('M-REFLOW-2', 'P-REFLOW-PEAK')
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, NotRequired

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from typing_extensions import TypedDict

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Uid, UnitSymbol

PREFIX = "sqems/v1"
"""Every topic of this scheme starts so."""
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No reading is older: an earlier timestamp comes from a clock that was reset."""


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


MESSAGE_ID_CHARS = 200
MessageId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MESSAGE_ID_CHARS)
]


class Reading(BaseModel):
    """One reading as sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: AwareDatetime
    value: float = Field(allow_inf_nan=False, strict=True)
    """Strict: a JSON number only (an integer is fine), never a boolean or a string."""
    unit: UnitSymbol
    id: MessageId
    quality: Quality = Quality.GOOD

    @field_validator("ts")
    @classmethod
    def _sane(cls, ts: datetime) -> datetime:
        try:
            utc = ts.astimezone(UTC)  # year 1 at +01:00 is before year 1 in UTC
        except OverflowError:
            raise ValueError("timestamp is outside the calendar in UTC") from None
        if utc < EARLIEST:
            raise ValueError(
                f"timestamp is before {EARLIEST.date().isoformat()}: check the sender's clock"
            )
        return ts


_UID: TypeAdapter[str] = TypeAdapter(Uid)


def check_levels(topic: str, levels: Iterable[tuple[str, str]]) -> None:
    """:class:`ValidationFailed` naming the first of ``topic``'s (name, value) levels
    that is not a uid."""
    for name, value in levels:
        try:
            _UID.validate_python(value)
        except ValidationError:
            raise ValidationFailed(f"topic {topic!r}: {name} {value!r} is not a uid") from None


class Topic(NamedTuple):
    site: str
    line: str
    machine: str
    parameter: str

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """The parts of a reading topic; :class:`ValidationFailed` says what is wrong."""
        parts = topic.split("/")
        if len(parts) != 6 or "/".join(parts[:2]) != PREFIX:
            raise ValidationFailed(
                f"topic {topic!r} is not {PREFIX}/<site>/<line>/<machine>/<parameter>"
            )
        keys = parts[2:]
        check_levels(topic, zip(cls._fields, keys, strict=True))
        return cls(*keys)

    def __str__(self) -> str:
        return f"{PREFIX}/{self.site}/{self.line}/{self.machine}/{self.parameter}"

    @property
    def alarm(self) -> str:
        """Where this series' alarms are published."""
        return f"{self}/alarm"

    @property
    def command(self) -> str:
        """The line's command topic (a stop-line command goes here); one level short
        of a reading topic, so no reading subscription receives it."""
        return f"{PREFIX}/{self.site}/{self.line}/command"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A part of a message that cannot be accepted, with the reason a person can act on.

    ``raw`` is always the whole payload as received (nothing is re-encoded, so nothing
    is lost); ``item`` is the position of the rejected reading in it, if it had any."""

    raw: bytes
    reason: str
    item: int | None = None


class Payload(NamedTuple):
    """What a payload holds: its valid readings, each one's position in the payload's
    list (None for a payload of one reading), and the parts that were refused."""

    readings: list[Reading]
    items: list[int | None]
    rejected: list[Rejected]


_READINGS: TypeAdapter[list[Reading]] = TypeAdapter(list[Reading])

ISO_TIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""The timestamps of the fast path: ISO 8601 with a ``T``, at most microseconds and an
offset (``Z`` or ``±hh:mm``), which pydantic and Arrow read as the same instant."""


class PlainReading(TypedDict):
    """A reading as :class:`Reading` checks it, with its timestamp still the text sent
    (matching :data:`ISO_TIME`): the fast path's form. Checking that the time is a
    real date after :data:`EARLIEST` is left to the caller, a whole batch at once."""

    ts: Annotated[str, StringConstraints(pattern=ISO_TIME)]
    value: Annotated[float, Field(allow_inf_nan=False, strict=True)]
    unit: UnitSymbol
    id: MessageId
    quality: NotRequired[Literal["good", "uncertain", "bad"]]


_PLAIN: TypeAdapter[list[PlainReading]] = TypeAdapter(
    list[PlainReading], config=ConfigDict(extra="forbid")
)


def decode_plain(payload: bytes) -> list[PlainReading] | None:
    """The readings of the usual payload — a non-empty list of valid readings stamped
    as :data:`ISO_TIME` says — without building a model or a datetime for each; None
    for anything else (which :func:`decode` then reads, and explains)."""
    try:
        readings = _PLAIN.validate_json(payload)
    except ValidationError:
        return None
    return readings or None


def decode(payload: bytes) -> Payload:
    """The valid readings of ``payload`` and the rejected parts, each with its reason.

    A payload that is not JSON, or not a reading, list or ``{"readings": [...]}``, is one
    rejected part; in a list each reading stands or falls alone.
    """
    # the common case, a list of good readings, is parsed and validated in one pass
    # of pydantic's core; anything else takes the careful path, which finds the reason
    try:
        readings = _READINGS.validate_json(payload)
    except ValidationError:
        pass
    else:
        if readings:
            return Payload(readings, list(range(len(readings))), [])
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Payload([], [], [Rejected(payload, f"payload is not JSON: {exc}")])
    if isinstance(data, dict) and set(data) == {"readings"}:
        data = data["readings"]
    single = not isinstance(data, list)
    items: list[Any] = [data] if single else data
    if not items:
        return Payload([], [], [Rejected(payload, "payload holds no readings")])
    out = Payload([], [], [])
    for index, item in enumerate(items):
        at = None if single else index
        if not isinstance(item, dict):
            reason = f"reading {index}: expected an object, got {item!r}"
            out.rejected.append(Rejected(payload, reason, at))
            continue
        try:
            out.readings.append(Reading.model_validate(item))
            out.items.append(at)
        except ValidationError as exc:
            where = "reading" if single else f"reading {index}"
            out.rejected.append(Rejected(payload, f"{where}: {_problems(exc)}", at))
    return out


def _problems(exc: ValidationError) -> str:
    """Each bad field with what it got: ``value: Input should be a finite number (got inf)``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(reading)"
        got = err.get("input")
        parts.append(
            f"{field}: {err['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})")
        )
    return "; ".join(parts)
