"""What an edge agent knows of its line: its machines, the parameters each one's steps
have, and every parameter's unit, specification limits and criticality.

The central ingestion asks the graph which parameters a machine may report and where
their limits are. An edge has no graph, and must judge while the central system is out
of reach, so it reads the same facts from a small JSON file in its data directory
(``line.json``), exported from the central graph with :func:`line_from_graph`
(``sqems edge line``) when the edge is set up and again when the line's specification
changes. The streaming SPC limits come from these parameters through the same
:func:`~sqems.ingestion.pipeline.monitor_for` the central ingestion uses, so the edge and
the centre raise the same alarms on the same readings.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Parameter
from sqems.graph_model.store import Direction, GraphStore

LINE_FILE = "line.json"


class LineSpec(BaseModel):
    """A line's machines and parameters, as an edge needs them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    line: str
    machines: dict[str, list[str]]
    """Machine uid → the uids of the parameters its steps have."""
    parameters: list[Parameter]

    def parameter(self, machine: str, parameter: str) -> Parameter:
        """The specification of ``parameter`` as ``machine`` reports it;
        :class:`ValidationFailed` when the line has no such machine or the machine no
        such parameter (the reason the central ingestion would give, too)."""
        if machine not in self.machines:
            raise ValidationFailed(
                f"machine {machine} is not on line {self.site}/{self.line} in the edge's "
                "line file: fix the sender's topic, or export the line file again"
            )
        if parameter not in self.machines[machine]:
            raise ValidationFailed(
                f"parameter {parameter} belongs to no step machine {machine} can perform: "
                "fix the topic, or export the line file again"
            )
        return self._by_uid()[parameter]

    def _by_uid(self) -> dict[str, Parameter]:
        return {p.uid: p for p in self.parameters}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.model_dump_json(indent=1))
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> LineSpec:
        """The line file at ``path``; :class:`NotFound` or :class:`ValidationFailed`
        with what to do."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotFound(
                f"the edge's line file {path} does not exist: export it from the central "
                "graph with `sqems edge line --site S --line L --out PATH`"
            ) from None
        try:
            return cls.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValidationFailed(f"the edge's line file {path} is not a line: {exc}") from None


def line_from_graph(graph: GraphStore, site: str, line: str) -> LineSpec:
    """The machines and parameters of ``line`` of ``site`` as the graph holds them."""
    machines_of = graph.edges([line], {"PART_OF": Direction.IN})
    sites = [e.dst for e in graph.edges([line], {"PART_OF": Direction.OUT})]
    if site not in sites:
        raise NotFound(f"line {line} of site {site} is not in the graph (its sites: {sites})")
    machines: dict[str, list[str]] = {}
    wanted: set[str] = set()
    for machine in sorted(e.src for e in machines_of):
        if graph.label_of(machine) != "Machine":
            continue
        steps = [e.dst for e in graph.edges([machine], {"CAN_PERFORM": Direction.OUT})]
        found = graph.edges(steps, {"PARAMETER_OF": Direction.IN}) if steps else []
        machines[machine] = sorted({e.src for e in found})
        wanted.update(machines[machine])
    nodes = graph.get_many(sorted(wanted))
    parameters = [p for p in nodes.values() if isinstance(p, Parameter)]
    return LineSpec(
        site=site,
        line=line,
        machines=machines,
        parameters=sorted(parameters, key=lambda p: p.uid),
    )
