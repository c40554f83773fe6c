// The SQEMS quality dashboard: the latest production day's board (yield, first-pass
// yield, defective per million, top 3 defect types, defect rate by shift), the KPI
// panel, the edge agents beside the lines (last seen, online, model version, queue
// depth), a defect-rate heat map (line x day) and a control chart of a parameter picked
// from the graph, drawn with its control limits and its spec limits, all from the
// GraphQL API, the charts drawn with Chart.js. Refreshed every minute; the edges every
// ten seconds.
//
// /dashboard?parameter=P-REFLOW-PEAK&machine=M-REFLOW-2&kind=INDIVIDUALS#key=<API key>
// (machine: omitted for all machines; kind: INDIVIDUALS by default)
// window.sqemsDashboard describes what is shown, for scripts and browser tests.

import { apiKey, gql, pageLink, showError } from "/viewer/app/api.js";

const REFRESH_MS = 60_000;
const EDGES_MS = 10_000;
const KINDS = ["INDIVIDUALS", "XBAR_R", "XBAR_S", "EWMA", "CUSUM"];
const COLOURS = { data: "#1f77b4", centre: "#2ca02c", control: "#d62728", spec: "#7b2cbf",
                  signal: "#d62728", made: "#9aa0a6", defective: "#e8590c" };
// the machines of a per-machine chart (neither red nor purple: signals and spec)
const MACHINE_COLOURS = ["#1f77b4", "#2a9d8f", "#b8860b", "#8c564b", "#e377c2", "#17becf"];
const $ = (id) => document.getElementById(id);
const charts = {};
const shown = { state: "loading" };
window.sqemsDashboard = shown;

const FIELDS = `fragment Board on KpiReport {
  total { produced defective yield firstPassYield ppm fieldPpm }
  byShift { key produced defective ppm }
  topDefects { uid name count share }
  costOfPoorQuality { total currency }
  heatmap { lines days rate }
}`;

const KPIS = `query Kpis { kpis(top: 3) { ...Board siteZone } } ${FIELDS}`;

// A line with its machines, the steps they can perform and the steps' parameters: what
// the picker offers.
const LINE = `query Line($uid: String!) {
  entity(uid: $uid) {
    uid
    ... on Line {
      name
      machines: neighbours(type: "PART_OF", direction: IN, first: 500) {
        edges { node { uid ... on Machine {
          name
          steps: neighbours(type: "CAN_PERFORM", direction: OUT) {
            edges { node { uid ... on ProcessStep {
              name
              parameters: neighbours(type: "PARAMETER_OF", direction: IN) {
                edges { node { uid ... on Parameter { name unit lsl usl target critical } } } }
            } } } }
        } } } }
    }
  }
}`;

const SPC = `query Spc($input: SpcChartInput!) {
  spcChart(input: $input) {
    kind subject unit
    points { index key time value center lcl ucl machine }
    violations { rule title indices }
    spec { lsl usl target runs below above points outOfSpec }
    notes
  }
}`;

// open alarms per machine, as the 3D viewer shows them (an empty window: no KPIs needed)
const ALARMS = `query Alarms($line: String!, $now: DateTime!) {
  lineScene(line: $line, start: $now, end: $now) {
    objects { uid overlay { openAlarms alarmSeverity } }
  }
}`;

// the edge agents as their latest status says (ingestionStatus: what the ingestion in the
// server, or its workers, heard)
const EDGES = `query Edges {
  ingestionStatus { edges { edge site line online lastSeen models { kind version } queueDepth } }
}`;

const UNITS = { degC: "°C", degF: "°F", "N*m": "N·m", um: "µm" };
const unitText = (u) => (u == null ? "" : UNITS[u] || u);
const percent = (v) => (v == null ? "—" : `${(v * 100).toFixed(2)} %`);
const whole = (v) => (v == null ? "—" : Math.round(v).toLocaleString("en"));
const nodes = (connection) => connection.edges.map((e) => e.node);
const plural = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  config.options = { animation: false, responsive: true, maintainAspectRatio: false,
                     ...config.options };
  charts[id] = new Chart($(id), config);
  return charts[id];
}

// --- the plant: lines, machines, parameters --------------------------------------------

const plant = { lines: {}, machines: {}, parameters: {}, zone: "UTC" };

async function loadPlant(lineUids) {
  // a line the heat map names but the graph no longer holds offers nothing to pick
  const found = await Promise.all(lineUids.map((uid) => gql(LINE, { uid }).catch((e) => {
    if (/\(NOT_FOUND\)$/.test(e.message)) return { entity: null };
    throw e;
  })));
  for (const { entity: line } of found) {
    if (!line || !line.machines) continue;
    plant.lines[line.uid] = { uid: line.uid, name: line.name };
    for (const m of nodes(line.machines)) {
      if (!m.steps) continue;
      plant.machines[m.uid] = { uid: m.uid, name: m.name, line: line.uid };
      for (const step of nodes(m.steps)) {
        for (const p of step.parameters ? nodes(step.parameters) : []) {
          const known = plant.parameters[p.uid] ||= { ...p, step: step.name, machines: [] };
          if (!known.machines.includes(m.uid)) known.machines.push(m.uid);
        }
      }
    }
  }
  for (const p of Object.values(plant.parameters)) p.machines.sort();
}

// --- the board: the latest production day in the site's time zone -------------------

const dayIn = (zone, at = new Date()) =>
  new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit",
                                     day: "2-digit" }).format(at);

function shiftDay(day, by) {
  const d = new Date(`${day}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() + by);
  return d.toISOString().slice(0, 10);
}

// The heat map's days are UTC dates; in another zone the latest local production day
// is that date, the day after or the day before: the latest of them with production.
async function latestDay(utcDay) {
  const candidates = plant.zone === "UTC" ? [utcDay]
    : [shiftDay(utcDay, 1), utcDay, shiftDay(utcDay, -1)];
  const vars = candidates.map((_, i) => `$d${i}: WindowInput`).join(", ");
  const fields = candidates.map((_, i) => `d${i}: kpis(window: $d${i}, top: 3) { ...Board }`);
  const query = `query Days(${vars}) { ${fields.join(" ")} } ${FIELDS}`;
  // a date alone is the site's whole local day
  const data = await gql(query, Object.fromEntries(
    candidates.map((day, i) => [`d${i}`, { start: day, end: day }])));
  const i = candidates.findIndex((_, j) => data[`d${j}`].total.produced > 0);
  return i < 0 ? null : { day: candidates[i], kpis: data[`d${i}`] };
}

function board(day, k) {
  const today = dayIn(plant.zone);
  const isToday = day === today;
  $("board-label").textContent = isToday ? "Today" : "Latest production day";
  const weekday = new Date(`${day}T12:00:00Z`).toLocaleDateString("en-GB",
    { weekday: "long", timeZone: "UTC" });
  $("board-day").textContent = `${weekday} ${day} · site time ${plant.zone}`;
  $("t-yield").textContent = percent(k.total.yield);
  $("t-fpy").textContent = percent(k.total.firstPassYield);
  $("t-ppm").textContent = whole(k.total.ppm);
  $("t-produced").textContent = whole(k.total.produced);
  draw("c-top", {
    type: "bar",
    data: { labels: k.topDefects.map((d) => d.name),
            datasets: [{ label: "defects found", data: k.topDefects.map((d) => d.count),
                         backgroundColor: COLOURS.control }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } },
               scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  // the rate, not the count beside the units made: a few defective units among hundreds
  // made stay readable; the counts are in the labels
  const shifts = k.byShift.filter((s) => s.produced > 0);
  const rates = shifts.map((s) => (100 * s.defective) / s.produced);
  const shiftChart = draw("c-shift", {
    type: "bar",
    data: { labels: shifts.map((s) => [`shift ${s.key}`, `${s.defective} of ${s.produced}`]),
            datasets: [{ label: "% defective", data: rates,
                         backgroundColor: COLOURS.defective }] },
    options: {
      plugins: { legend: { display: false },
                 tooltip: { callbacks: { label: (c) => `${rates[c.dataIndex].toFixed(2)} % defective` } } },
      scales: { y: { beginAtZero: true, title: { display: true, text: "% defective" },
                     suggestedMax: Math.max(1, ...rates) * 1.15 } },
    },
  });
  shown.board = { day, today, isToday, zone: plant.zone, label: $("board-label").textContent,
                  produced: k.total.produced, yield: k.total.yield,
                  firstPassYield: k.total.firstPassYield, ppm: k.total.ppm,
                  topDefects: k.topDefects.map((d) => d.uid),
                  shifts: Object.fromEntries(k.byShift.map((s) => [s.key, s.defective])),
                  shiftRates: Object.fromEntries(shifts.map((s, i) => [s.key, rates[i] / 100])),
                  shiftBarHeights: shiftChart.getDatasetMeta(0).data.map((b) => b.height) };
}

function panel(k) {
  $("k-ppm").textContent = whole(k.total.ppm);
  $("k-field").textContent = whole(k.total.fieldPpm);
  $("k-fpy").textContent = percent(k.total.firstPassYield);
  const c = k.costOfPoorQuality;
  $("k-copq").textContent = `${whole(c.total)} ${c.currency}`;
  shown.panel = { ppm: k.total.ppm, fieldPpm: k.total.fieldPpm,
                  firstPassYield: k.total.firstPassYield, costOfPoorQuality: c.total };
}

// --- the edges --------------------------------------------------------------------------

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

async function edges() {
  const { ingestionStatus: status } = await gql(EDGES, {});
  const cell = (text, cls) => Object.assign(document.createElement("td"),
    { textContent: text, className: cls || "" });
  const rows = status.edges.map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.edge = e.edge;
    const seen = cell(ago(e.lastSeen));
    seen.title = e.lastSeen;
    const models = e.models.map((m) => `${m.kind} ${m.version}`).join(", ") || "none";
    const name = cell(e.edge, "id");
    name.append(Object.assign(document.createElement("small"), { textContent: e.line }));
    tr.append(name, cell(e.online ? "online" : "offline", e.online ? "ok" : "bad"), seen,
      cell(models, "model"), cell(e.queueDepth == null ? "—" : whole(e.queueDepth), "num"));
    return tr;
  });
  $("edge-rows").replaceChildren(...rows);
  $("edge-table").hidden = !rows.length;
  $("edges-none").hidden = rows.length > 0;
  shown.edges = status.edges.map((e) => ({
    edge: e.edge, line: e.line, online: e.online, lastSeen: e.lastSeen,
    models: Object.fromEntries(e.models.map((m) => [m.kind, m.version])),
    queueDepth: e.queueDepth }));
}

// --- the heat map -------------------------------------------------------------------

const DAY_LABEL_PX = 16; // a rotated date label needs about this much width
let heat = null;

// white (no defects) to red (the worst cell); grey where nothing was made. Day labels
// stand rotated; when the days are too many for the width, every n-th is labelled.
function heatmap(h) {
  heat = h;
  const box = $("heatmap");
  const width = box.clientWidth;
  const worst = Math.max(1e-9, ...h.rate.flat().filter((v) => v != null));
  const table = document.createElement("table");
  const columns = document.createElement("colgroup");
  columns.append(Object.assign(document.createElement("col"), { className: "line" }));
  for (let j = 0; j < h.days.length; j += 1) columns.append(document.createElement("col"));
  table.append(columns);
  const head = table.insertRow();
  head.className = "days";
  head.append(document.createElement("th"));
  // the days in groups of `every`, each group's header cell wide enough for its label
  const room = Math.max(1, Math.floor((width - 72) / DAY_LABEL_PX));
  const every = Math.max(1, Math.ceil(h.days.length / room));
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec"];
  let labelled = 0;
  for (let j = 0; j < h.days.length; j += every) {
    const day = h.days[j];
    const th = Object.assign(document.createElement("th"), { colSpan: every, title: day });
    th.append(Object.assign(document.createElement("span"), {
      textContent: `${Number(day.slice(8))} ${months[Number(day.slice(5, 7)) - 1]}` }));
    head.append(th);
    labelled += 1;
  }
  h.lines.forEach((line, i) => {
    const row = table.insertRow();
    const name = plant.lines[line] ? plant.lines[line].name : line;
    row.append(Object.assign(document.createElement("th"), { textContent: line, title: name }));
    h.days.forEach((day, j) => {
      const cell = row.insertCell();
      const v = h.rate[i][j];
      const t = v == null ? null : v / worst;
      const fade = t == null ? 0 : Math.round(255 * (1 - t));
      cell.style.background = t == null ? "#e3e6ea" : `rgb(255, ${fade}, ${fade})`;
      cell.title = `${line} ${day}: ${v == null ? "nothing made" : `${percent(v)} defective`}`;
      cell.dataset.rate = v == null ? "" : String(v);
    });
  });
  const legend = Object.assign(document.createElement("p"), {
    className: "hint",
    textContent: `White: no defective units · red: ${percent(worst)} defective (the worst `
      + `line-day) · grey: nothing made. Days are UTC dates`
      + (every > 1 ? `; one day in ${every} labelled.` : "."),
  });
  box.replaceChildren(table, legend);
  box.dataset.width = String(width);
  shown.heatmap = { lines: h.lines.length, days: h.days.length,
                    cells: table.querySelectorAll("td").length, labelled, every };
}

new ResizeObserver(() => {
  const box = $("heatmap");
  if (heat && box.dataset.width !== String(box.clientWidth)) heatmap(heat);
}).observe($("heatmap"));

// --- the picker -----------------------------------------------------------------------

function wanted() {
  const q = new URLSearchParams(location.search);
  const kind = (q.get("kind") || "INDIVIDUALS").toUpperCase();
  return { parameter: q.get("parameter") || "", machine: q.get("machine") || "",
           kind: KINDS.includes(kind) ? kind : "INDIVIDUALS" };
}

function fillPicker(choice) {
  const params = Object.values(plant.parameters).sort((a, b) => a.uid.localeCompare(b.uid));
  const select = $("pick-parameter");
  select.replaceChildren(...params.map((p) => new Option(
    `${p.name} (${unitText(p.unit)}) · ${p.uid}`, p.uid)));
  if (choice.parameter && !plant.parameters[choice.parameter]) {
    // named in the link but not found on a line: still charted, as asked
    select.append(new Option(choice.parameter, choice.parameter));
  }
  select.value = choice.parameter;
  const p = plant.parameters[choice.parameter];
  const machines = p ? p.machines : Object.keys(plant.machines).sort();
  const pick = $("pick-machine");
  pick.replaceChildren(new Option("all machines", ""), ...machines.map((m) => new Option(
    plant.machines[m] ? `${plant.machines[m].name} · ${m}` : m, m)));
  if (choice.machine && !machines.includes(choice.machine)) {
    pick.append(new Option(choice.machine, choice.machine));
  }
  pick.value = choice.machine;
  $("pick-kind").value = choice.kind;
  shown.picker = { parameters: params.length, machines: machines.length, ...choice };
}

// the first critical parameter (else the first) when the link names none
function defaultParameter() {
  const params = Object.values(plant.parameters).sort((a, b) => a.uid.localeCompare(b.uid));
  const critical = params.find((p) => p.critical);
  return (critical || params[0] || { uid: "" }).uid;
}

function choose() {
  const parameter = $("pick-parameter").value;
  const p = plant.parameters[parameter];
  let machine = $("pick-machine").value;
  if (p && machine && !p.machines.includes(machine)) machine = "";
  const kind = $("pick-kind").value;
  const url = pageLink("/dashboard", { parameter, machine,
                                       kind: kind === "INDIVIDUALS" ? "" : kind });
  history.pushState(null, "", url);
  return showChart().catch(showError);
}

async function showChart() {
  const choice = wanted();
  if (!choice.parameter && (choice.parameter = defaultParameter())) {
    // the link names no parameter: the one charted goes into the URL
    history.replaceState(null, "", pageLink("/dashboard", { parameter: choice.parameter,
      machine: choice.machine, kind: choice.kind === "INDIVIDUALS" ? "" : choice.kind }));
  }
  fillPicker(choice);
  document.body.dataset.chart = "loading";
  await spc(choice);
  document.body.dataset.chart = "ready";
}

// --- the control chart ----------------------------------------------------------------

function lineOf(machines) {
  const lines = new Set(machines.map((m) => plant.machines[m] && plant.machines[m].line));
  return lines.size === 1 ? [...lines][0] || null : null;
}

async function openAlarms(machines) {
  const lines = [...new Set(machines.map((m) => plant.machines[m] && plant.machines[m].line)
    .filter(Boolean))];
  const now = new Date().toISOString();
  const scenes = await Promise.all(lines.map((line) => gql(ALARMS, { line, now })));
  const found = {};
  for (const { lineScene } of scenes) {
    for (const o of lineScene.objects) {
      if (machines.includes(o.uid)) found[o.uid] = o.overlay;
    }
  }
  return found;
}

function specLine(label, value, n) {
  return { label, data: Array(n).fill(value), borderColor: COLOURS.spec, borderWidth: 2,
           borderDash: [10, 4], pointRadius: 0, spec: true };
}

async function spc(choice) {
  if (!choice.parameter) {
    $("spc-verdict").textContent = "The graph holds no parameter to chart.";
    shown.spc = null;
    return;
  }
  const input = { parameter: { uid: choice.parameter, kind: choice.kind,
                               ...(choice.machine ? { machine: choice.machine } : {}) } };
  const { spcChart: c } = await gql(SPC, { input });
  const unit = unitText(c.unit);
  const p = plant.parameters[choice.parameter];
  $("spc-subject").textContent = `${p ? p.name : c.subject} · ${c.subject}`
    + (choice.machine ? "" : " · all machines");
  const signal = new Set(c.violations.flatMap((v) => v.indices));
  const outside = new Set(c.spec ? c.spec.points : []);
  const n = c.points.length;
  // a per-machine chart: each machine's runs and limits as lines of their own colour
  const machines = [...new Set(c.points.map((q) => q.machine).filter(Boolean))].sort();
  const groups = machines.length > 1 ? machines : [null];
  const datasets = [];
  groups.forEach((m, k) => {
    const mine = (q) => m === null || q.machine === m;
    const colour = m === null ? COLOURS.data : MACHINE_COLOURS[k % MACHINE_COLOURS.length];
    const only = (f) => c.points.map((q) => (mine(q) ? f(q) : null));
    const what = c.kind === "INDIVIDUALS" ? "runs" : "points";
    datasets.push(
      { label: m === null ? `${what} (${unit})` : `${m} ${what}`, runs: true, spanGaps: true,
        data: only((q) => q.value), borderColor: colour, borderWidth: 1,
        pointStyle: c.points.map((q) => (outside.has(q.index) ? "triangle" : "circle")),
        pointBackgroundColor: c.points.map((q) => (outside.has(q.index) ? COLOURS.spec
          : signal.has(q.index) ? COLOURS.signal : colour)),
        pointBorderColor: c.points.map((q) => (signal.has(q.index) ? COLOURS.signal
          : outside.has(q.index) ? COLOURS.spec : colour)),
        pointRadius: c.points.map((q) => (outside.has(q.index) ? 7
          : signal.has(q.index) ? 5 : 2.5)) },
      { label: "centre line", data: only((q) => q.center), spanGaps: true, pointRadius: 0,
        borderWidth: 1, borderColor: m === null ? COLOURS.centre : colour,
        hideInLegend: m !== null },
      { label: "control limits", data: only((q) => q.ucl), spanGaps: true, pointRadius: 0,
        borderWidth: 1, borderDash: [4, 3], borderColor: m === null ? COLOURS.control : colour,
        hideInLegend: m !== null },
      { label: "LCL", data: only((q) => q.lcl), spanGaps: true, pointRadius: 0,
        borderWidth: 1, borderDash: [4, 3], borderColor: m === null ? COLOURS.control : colour,
        hideInLegend: true },
    );
  });
  // spec limits judge single runs: drawn on the individuals chart only
  const drawSpec = c.spec && c.kind === "INDIVIDUALS";
  if (drawSpec && c.spec.usl != null) datasets.push(specLine(`USL ${c.spec.usl} ${unit}`, c.spec.usl, n));
  if (drawSpec && c.spec.lsl != null) datasets.push(specLine(`LSL ${c.spec.lsl} ${unit}`, c.spec.lsl, n));
  // runs by their start in site time; the run itself in the tooltip
  const when = new Intl.DateTimeFormat("en-GB", { timeZone: plant.zone, day: "numeric",
    month: "short", hour: "2-digit", minute: "2-digit" });
  const chart = draw("c-spc", {
    type: "line",
    data: { labels: c.points.map((q) => when.format(new Date(q.time))), datasets },
    options: {
      scales: { x: { ticks: { maxTicksLimit: innerWidth < 600 ? 4 : 8, maxRotation: 0 } },
                y: { title: { display: true, text: unit } } },
      plugins: { legend: { labels: { boxWidth: 18, filter: (item, data) =>
        !data.datasets[item.datasetIndex].hideInLegend } },
                 tooltip: { callbacks: {
                   title: (items) => {
                     const q = c.points[items[0].dataIndex];
                     return `${q.key} · ${items[0].label}`;
                   },
                   afterLabel: (ctx) => {
                   if (!ctx.dataset.runs) return "";
                   const q = c.points[ctx.dataIndex];
                   return [q.machine ? `machine ${q.machine}` : "",
                           outside.has(q.index) ? "outside spec" : "",
                           signal.has(q.index) ? "run rule fired" : ""].filter(Boolean);
                 } } } },
    },
  });
  // the verdict: the chart's own spec note first, then the rules that fired
  const notes = [...c.notes];
  let verdict;
  if (c.spec) {
    verdict = notes.shift().replaceAll(` ${c.unit}`, ` ${unit}`);
  } else {
    verdict = c.violations.length ? `${plural(c.violations.length, "run rule")} fire`
      : "No run rule fires; the parameter has no spec limits to judge runs by";
  }
  $("spc-verdict").textContent = `${verdict[0].toUpperCase()}${verdict.slice(1)}.`;
  $("spc-verdict").className = `verdict ${c.spec && c.spec.outOfSpec ? "bad"
    : c.violations.length ? "watch" : "good"}`;
  const items = [
    ...c.violations.map((v) => `${v.title} (${v.rule}): ${plural(v.indices.length, "point")}`),
    ...(c.spec && !drawSpec ? ["Spec limits judge single runs, so they are drawn on the "
      + "individual-runs chart only; ▲ marks a point that holds a run outside spec."] : []),
    ...notes,
  ];
  $("spc-notes").replaceChildren(...items.map((t) => Object.assign(
    document.createElement("li"), { textContent: t })));

  const charted = choice.machine ? [choice.machine] : (p ? p.machines : machines);
  const alarms = await openAlarms(charted);
  const line = lineOf(charted);
  const links = $("spc-links");
  links.replaceChildren();
  const marks = (groups.length > 1 ? "Each machine is judged by its own control limits "
    + "(dashed, in its colour; thin line: its centre). " : "")
    + "▲ outside spec · red dot: a run rule fired";
  const counted = Object.entries(alarms).filter(([, o]) => o.openAlarms > 0);
  const total = counted.reduce((sum, [, o]) => sum + o.openAlarms, 0);
  const text = !Object.keys(alarms).length ? marks
    : total === 0 ? `${marks}. No open alarm on ${choice.machine || "these machines"}`
    : `${marks}. ${plural(total, "open alarm")} on ${counted.map(([m, o]) =>
      `${m} (${o.openAlarms}${o.alarmSeverity ? `, ${o.alarmSeverity.toLowerCase()}` : ""})`)
      .join(", ")}`;
  links.append(text);
  if (line) {
    const a = Object.assign(document.createElement("a"), {
      href: pageLink("/viewer", { line }), textContent: `see line ${line} in the 3D viewer`,
      id: "spc-viewer" });
    links.append(" · ", a);
  }
  const specDrawn = chart.data.datasets.filter((d) => d.spec);
  const area = chart.chartArea;
  shown.spc = {
    parameter: choice.parameter, machine: choice.machine || null, kind: c.kind,
    points: n, signals: signal.size, verdict: $("spc-verdict").textContent,
    spec: c.spec && { lsl: c.spec.lsl, usl: c.spec.usl, outOfSpec: c.spec.outOfSpec,
                      marked: c.points.filter((q) => outside.has(q.index)).length },
    specLines: specDrawn.map((d) => ({ label: d.label, value: d.data[0],
      y: chart.scales.y.getPixelForValue(d.data[0]),
      inside: chart.scales.y.getPixelForValue(d.data[0]) >= area.top
        && chart.scales.y.getPixelForValue(d.data[0]) <= area.bottom })),
    openAlarms: total, viewerLink: line ? pageLink("/viewer", { line }) : null,
  };
}

// --- refresh ---------------------------------------------------------------------------

async function refresh(first) {
  const { kpis: all } = await gql(KPIS, {});
  // the zone the API reads dates in (the setting, else the graph's site, else UTC)
  plant.zone = all.siteZone;
  if (first) await loadPlant(all.heatmap.lines.filter((l) => l !== "unknown"));
  panel(all);
  await edges();
  heatmap(all.heatmap);
  const utcDay = all.heatmap.days[all.heatmap.days.length - 1];
  const latest = utcDay ? await latestDay(utcDay) : null;
  document.querySelector("#board .pair").hidden = !latest;
  if (latest) board(latest.day, latest.kpis);
  else $("board-label").textContent = "No production recorded yet";
  await showChart();
  $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  // ready means drawn
  await new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)));
  shown.state = document.body.dataset.state = "ready";
}

async function main() {
  await apiKey();
  for (const id of ["pick-parameter", "pick-machine", "pick-kind"]) {
    $(id).addEventListener("change", choose);
  }
  window.addEventListener("popstate", () => showChart().catch(showError));
  await refresh(true);
  setInterval(() => refresh(false).catch(showError), REFRESH_MS);
  setInterval(() => edges().catch(showError), EDGES_MS);
}

main().catch(showError);
