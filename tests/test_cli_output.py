"""What the commands print on an 80-column terminal: identifiers whole, numbers plain,
KPIs by name and unit, no line wider than the terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from sqems.cli import render
from sqems.figures import plain, probability, ranged

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]
E_NOTATION = re.compile(r"(?<![\w$-])\d+(\.\d+)?e[+-]\d+(?!\w)")
"""``1.055e+04``, ``2e-54`` (as Python's ``g`` prints them), not a hex uid's ``9e44``."""
CUT_UID = re.compile(r"[A-Za-z0-9_-]…")


def sqems(data_dir: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": str(columns)}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("plant")
    done = sqems(data, "demo", "--units", "1500")
    assert done.returncode == 0, done.stderr
    (data / "demo.out").write_text(done.stdout)
    return data


def _readable(text: str, uids: list[str], width: int = 80) -> None:
    wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not wide, "\n".join(wide)
    assert not E_NOTATION.search(text), E_NOTATION.search(text)
    assert not CUT_UID.search(text), text
    for uid in uids:
        assert uid in text, f"{uid} is not whole in:\n{text}"


def _commands(plant: Path) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    truth = json.loads((plant / "demo-plant" / "ground_truth.json").read_text())
    cause = truth["causes"][0]
    batch = cause["batches"][0]
    scope = json.loads(sqems(plant, "recall", "--lot", cause["uid"], "--json").stdout)
    unit = scope["units"][0]["uid"]
    yield ("recall", "--lot", cause["uid"]), [cause["uid"], unit, *scope["customers"][:5]]
    yield ("recall", "--batch", batch), [batch]
    yield ("trace", "--unit", unit), [unit]
    yield ("kpis",), ["LINE-PCB", "LINE-ASM"]
    scene = json.loads(sqems(plant, "scene", "LINE-PCB", "--json").stdout)
    yield (
        ("scene", "LINE-PCB"),
        [o["uid"] for o in scene["objects"]] + [o["bim_element"] for o in scene["objects"]],
    )
    cards = json.loads(sqems(plant, "suppliers", "--json").stdout)
    yield ("suppliers",), [c["supplier"] for c in cards]
    yield ("suppliers", "--supplier", cards[0]["supplier"]), [cards[0]["supplier"]]
    yield ("stats",), []
    yield ("bim", "list"), []
    yield ("quarantine", "list"), []
    yield ("report", "dhr", batch, "--html", str(plant / "dhr.html")), [batch]


@pytest.mark.parametrize("columns", [80, 120])
def test_every_command_prints_whole_uids_and_plain_numbers_within_the_width(
    plant: Path, columns: int
) -> None:
    _readable((plant / "demo.out").read_text(), [], width=200)  # the demo ran at 80
    for args, uids in _commands(plant):
        done = sqems(plant, *args, columns=columns)
        assert done.returncode == 0, (args, done.stderr)
        _readable(done.stdout, uids, columns)


def test_rootcause_and_investigate_print_q_values_and_intervals_in_words(plant: Path) -> None:
    truth = json.loads((plant / "demo-plant" / "ground_truth.json").read_text())
    kind = truth["causes"][0]["defect_type"]
    done = sqems(plant, "rootcause", "--defect-type", kind)
    assert done.returncode == 0, done.stderr
    _readable(done.stdout, [kind])
    assert "< 0.0001" in done.stdout  # the planted cause is beyond doubt
    assert "95 % interval" in done.stdout
    complaint = re.search(r"CMP-\d+", (plant / "demo.out").read_text())
    assert complaint is not None
    found = sqems(plant, "investigate", complaint[0], "--no-simulate")
    assert found.returncode == 0, found.stderr
    _readable(found.stdout, [complaint[0]])


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, force_terminal=False), buffer


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_a_table_keeps_uid_columns_whole_and_wraps_or_stacks_the_rest(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    console, buffer = _console(width)
    monkeypatch.setattr(render, "out", console)
    uids = ["LOT-RESIN-00003", "BIM-a96bcd2ec2b39d18", "1kKXAAtpDLWwnr_cpy$Dfs"]
    rows = [
        (uid, "a description long enough to need wrapping at any narrow width", "1,234")
        for uid in uids
    ]
    render.print_table(
        [render.Column("uid", "id"), "description", render.Column("units", "number")], rows
    )
    text = buffer.getvalue()
    _readable(text, [*uids, "1,234"], width)
    stacked = "uid:" in text
    # 22 + 11 ("description") + 5 + 2 spaces between columns: a table from 42 columns
    assert stacked == (width < 42)


def _figure(mean: float, low: float, high: float) -> dict[str, float]:
    return {"mean": mean, "low": low, "high": high}


def test_kpi_changes_name_each_kpi_with_its_unit_and_say_no_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console, buffer = _console(80)
    monkeypatch.setattr(render, "out", console)
    yield_ = (_figure(0.976, 0.935, 0.995), _figure(0.938, 0.81, 0.996))
    render.print_kpi_changes(
        {
            "throughput_per_h": (
                _figure(130.3, 125.7, 132.6),
                _figure(125.7, 110.2, 132.8),
                _figure(-4.65, -18.7, 1.55),
                "no credible change",
            ),
            "yield": (*yield_, _figure(-0.038, -0.15, 0.012), "no credible change"),
            "fpy": (*yield_, _figure(-0.038, -0.15, 0.012), "no credible change"),
            "ppm": (
                _figure(1533, 0, 5333),
                _figure(5131, 0, 24240),
                _figure(3597, -1148, 17610),
                "no credible change",
            ),
            "wip": (_figure(25, 25, 25), _figure(25, 25, 25), _figure(0, 0, 0), "credible"),
        },
        scenario="scenario",
        caption="8 replications",
    )
    text = buffer.getvalue()
    _readable(text, [])
    for name in ("throughput (units/h)", "yield (%)", "defectives shipped (ppm)"):
        assert name in text
    assert "work in progress (units)" in text and "no change" in text
    assert "first-pass yield equals yield" in text
    assert "first-pass yield (%)" not in text  # one figure, not two equal findings
    assert "97.6 (93.5 to 99.5)" in text and "24,200" in text


def test_kpi_changes_show_first_pass_yield_when_a_scenario_reworks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console, buffer = _console(120)
    monkeypatch.setattr(render, "out", console)
    render.print_kpi_changes(
        {
            "yield": (_figure(0.97, 0.96, 0.98), _figure(0.99, 0.98, 1), None, ""),
            "fpy": (_figure(0.97, 0.96, 0.98), _figure(0.95, 0.94, 0.96), None, ""),
        },
        scenario="scenario",
        caption="",
    )
    assert "first-pass yield (%)" in buffer.getvalue()


def test_a_scenario_reads_as_one_line_a_change() -> None:
    lines = render.scenario_lines(
        {
            "line_speed": 1.1,
            "parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 249.0}],
            "shifts": ["early", "late"],
            "lots": [{"lot": "LOT-RESIN-00003"}],
        }
    )
    assert lines == [
        "line speed x 1.1",
        "P-REFLOW-PEAK set to 249",
        "shifts working: early, late",
        "lot LOT-RESIN-00003 replaced by a new lot of the same material",
    ]
    assert render.scenario_lines({}) == ["nothing changed (today's line)"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10550.0, "10,600"),
        (1040.0, "1,040"),
        (4.56e3, "4,560"),
        (0.0959, "0.0959"),
        (25.0, "25"),
        (9.996, "10"),
        (-18.66, "-18.7"),
        (0.0, "0"),
        (float("nan"), "-"),
    ],
)
def test_plain_numbers_have_separators_and_no_e_notation(value: float, text: str) -> None:
    assert plain(value) == text


def test_tiny_probabilities_and_intervals_read_in_words() -> None:
    assert probability(2.1e-54) == "< 0.0001"
    assert probability(0.0031) == "0.0031"
    assert ranged(632, 87.5, 4560) == "632 (95 % interval 87.5 to 4,560)"
    assert ranged(-4.65, -18.7, 1.55, level=None, signed=True) == "-4.65 (-18.7 to +1.55)"


@pytest.mark.parametrize("group", [[], ["lake"], ["quarantine"]])
def test_command_lists_wrap_each_summary_to_the_width_not_at_the_sources_line_breaks(
    tmp_path: Path, group: list[str]
) -> None:
    # on a wide terminal every command's summary (its docstring's first paragraph) is one
    # row: a row that ends in the middle of a sentence broke where the source line did
    done = sqems(tmp_path, *group, "--help", columns=2000)
    assert done.returncode == 0, done.stderr
    rows = [line.strip().strip("│").rstrip() for line in done.stdout.splitlines()]
    listed = rows[rows.index(next(r for r in rows if "─ Commands ─" in r)) + 1 :]
    listed = listed[: next(i for i, r in enumerate(listed) if r.startswith("╰"))]
    assert listed
    continued = [r.strip() for r in listed if re.match(r"^\s{4,}\S", r)]
    assert not continued, f"summaries broken over rows: {continued[:3]}"
