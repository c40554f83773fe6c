"""Which ingestion worker owns a reading topic, when several share the stream.

Every worker subscribes to the whole reading tree in a persistent session of its own
(``sqems-ingest-0of4`` …) and keeps only the topics its partition owns; it acknowledges
the others at once without reading them, since their owner receives its own copy in its
own session. The owner of a topic is a pure function of the topic's text and the number
of workers — the CRC-32 of its ``machine/parameter`` levels (the series the pipeline
watches), modulo the number of workers — so:

- each series always goes to the same worker, in the order the broker sends it: its
  streaming SPC rules and its per-run summaries see every reading, in order;
- every message has exactly one owner, whatever the graph says or when the workers
  started, so it is counted, stored or quarantined exactly once and a series' alarms
  come from one worker;
- a worker that is away loses nothing: the broker holds its partition in its session.

An MQTT 5 shared subscription (``$share/<group>/…``) would spread the messages
round-robin (Mosquitto's only strategy), splitting a series between workers: each
would see a part of the series, the run rules would be judged on fragments, two
workers would summarise the same run from partial readings, and readings of one
series would be stored out of order in several files. docs/ingestion.md says more.

>>> Partition.parse("1/4")
Partition(index=1, count=4)
>>> owner("sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK", 4)
2
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from sqems.errors import ValidationFailed

MAX_WORKERS = 64
"""The most workers one stream may be split between (each receives every message)."""
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def owner(topic: str, count: int) -> int:
    """The partition (0 to ``count`` - 1) that owns reading topic ``topic``: by its
    machine and parameter levels when it has the six levels of a reading topic, else by
    the whole text (a malformed topic still has one owner, which quarantines it)."""
    if count == 1:
        return 0
    parts = topic.split("/")
    key = "/".join(parts[4:]) if len(parts) == 6 else topic
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % count


@dataclass(frozen=True, slots=True)
class Partition:
    """Worker ``index`` of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"k/N"`` (0 ≤ k < N ≤ :data:`MAX_WORKERS`); :class:`ValidationFailed` else."""
        found = _SPEC.match(text)
        if found is None:
            raise ValidationFailed(f"partition {text!r} is not k/N (e.g. 0/4: the first of four)")
        index, count = int(found[1]), int(found[2])
        if not 0 <= index < count <= MAX_WORKERS:
            raise ValidationFailed(
                f"partition {text!r}: k must be 0 to N-1 and N 1 to {MAX_WORKERS}"
            )
        return cls(index, count)

    @property
    def whole(self) -> bool:
        """One worker takes the whole stream."""
        return self.count == 1

    @property
    def name(self) -> str:
        """``0of4``: in client ids and file names."""
        return f"{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Partition(0, 1)


class Owned:
    """Whether topics belong to ``partition``, remembered per topic (a bounded cache:
    a flood of distinct bad topics costs a hash each, not memory)."""

    __slots__ = ("_known", "partition")

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        self._known: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        mine = self._known.get(topic)
        if mine is None:
            mine = owner(topic, self.partition.count) == self.partition.index
            if len(self._known) < 100_000:
                self._known[topic] = mine
        return mine
