// The SQEMS quality dashboard: the latest production day's board (yield, first-pass
// yield, PPM, top 3 defect types, defective units by shift), the KPI panel, a
// defect-rate heat map (line x day) and an SPC chart, all from the GraphQL API, the
// charts drawn with Chart.js. Refreshed every minute.
//
// /dashboard?parameter=P-REFLOW-PEAK&machine=M-REFLOW-2#key=<API key>
// window.sqemsDashboard describes what is shown, for scripts and browser tests.

import { apiKey, gql, showError } from "/viewer/app/api.js";

const REFRESH_MS = 60_000;
const $ = (id) => document.getElementById(id);
const charts = {};
const shown = { state: "loading" };
window.sqemsDashboard = shown;

const KPIS = `query Kpis($window: WindowInput) {
  kpis(window: $window, top: 3) {
    total { produced defective yield firstPassYield ppm fieldPpm }
    byShift { key produced defective ppm }
    topDefects { uid name count share }
    costOfPoorQuality { total currency }
    heatmap { lines days rate }
  }
}`;

const SPC = `query Spc($input: SpcChartInput!) {
  spcChart(input: $input) {
    kind subject unit
    points { index key value center lcl ucl }
    violations { rule title indices }
    notes
  }
}`;

const percent = (v) => (v == null ? "—" : `${(v * 100).toFixed(2)} %`);
const whole = (v) => (v == null ? "—" : Math.round(v).toLocaleString("en"));

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  config.options = { animation: false, responsive: true, maintainAspectRatio: true,
                     ...config.options };
  charts[id] = new Chart($(id), config);
}

function board(day, k) {
  $("board-day").textContent = day;
  $("t-yield").textContent = percent(k.total.yield);
  $("t-fpy").textContent = percent(k.total.firstPassYield);
  $("t-ppm").textContent = whole(k.total.ppm);
  $("t-produced").textContent = whole(k.total.produced);
  draw("c-top", {
    type: "bar",
    data: { labels: k.topDefects.map((d) => d.name),
            datasets: [{ label: "defects", data: k.topDefects.map((d) => d.count),
                         backgroundColor: "#d62728" }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } } },
  });
  draw("c-shift", {
    type: "bar",
    data: { labels: k.byShift.map((s) => s.key),
            datasets: [{ label: "defective", data: k.byShift.map((s) => s.defective),
                         backgroundColor: "#ff9f1a" },
                       { label: "made", data: k.byShift.map((s) => s.produced),
                         backgroundColor: "#9aa0a6" }] },
  });
  shown.board = { day, produced: k.total.produced, yield: k.total.yield,
                  firstPassYield: k.total.firstPassYield, ppm: k.total.ppm,
                  topDefects: k.topDefects.map((d) => d.uid),
                  shifts: Object.fromEntries(k.byShift.map((s) => [s.key, s.defective])) };
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

// white (no defects) to red (the worst cell); grey where nothing was made
function heatmap(h) {
  const worst = Math.max(1e-9, ...h.rate.flat().filter((v) => v != null));
  const table = document.createElement("table");
  const head = table.insertRow();
  head.className = "days";
  head.append(document.createElement("th"));
  for (const day of h.days) {
    head.append(Object.assign(document.createElement("th"), { textContent: day.slice(5) }));
  }
  h.lines.forEach((line, i) => {
    const row = table.insertRow();
    row.append(Object.assign(document.createElement("th"), { textContent: line }));
    h.days.forEach((day, j) => {
      const cell = row.insertCell();
      const v = h.rate[i][j];
      const t = v == null ? null : v / worst;
      const fade = t == null ? 0 : Math.round(255 * (1 - t));
      cell.style.background = t == null ? "#e3e6ea" : `rgb(255, ${fade}, ${fade})`;
      cell.title = `${line} ${day}: ${v == null ? "nothing made" : percent(v)}`;
      cell.dataset.rate = v == null ? "" : String(v);
    });
  });
  const legend = Object.assign(document.createElement("p"), {
    className: "hint",
    textContent: `white: no defects · red: ${percent(worst)} (the worst cell) · grey: nothing made`,
  });
  $("heatmap").replaceChildren(table, legend);
  shown.heatmap = { lines: h.lines.length, days: h.days.length,
                    cells: table.querySelectorAll("td").length };
}

async function spc(parameter, machine) {
  if (!parameter) {
    $("spc-notes").textContent = "Name a parameter to chart: /dashboard?parameter=P-…&machine=M-…";
    shown.spc = null;
    return;
  }
  const input = { parameter: { uid: parameter, ...(machine ? { machine } : {}) } };
  const { spcChart: c } = await gql(SPC, { input });
  $("spc-subject").textContent = `${c.kind} · ${c.subject} (${c.unit})`;
  const signal = new Set(c.violations.flatMap((v) => v.indices));
  draw("c-spc", {
    type: "line",
    data: {
      labels: c.points.map((p) => p.key || String(p.index)),
      datasets: [
        { label: c.subject, data: c.points.map((p) => p.value), borderColor: "#1f77b4",
          pointBackgroundColor: c.points.map((p) => (signal.has(p.index) ? "#d62728" : "#1f77b4")),
          pointRadius: c.points.map((p) => (signal.has(p.index) ? 4 : 2)), borderWidth: 1 },
        { label: "centre", data: c.points.map((p) => p.center), borderColor: "#2ca02c",
          pointRadius: 0, borderWidth: 1 },
        { label: "UCL", data: c.points.map((p) => p.ucl), borderColor: "#d62728",
          borderDash: [4, 3], pointRadius: 0, borderWidth: 1 },
        { label: "LCL", data: c.points.map((p) => p.lcl), borderColor: "#d62728",
          borderDash: [4, 3], pointRadius: 0, borderWidth: 1 },
      ],
    },
    options: { scales: { x: { ticks: { maxTicksLimit: 12 } } } },
  });
  $("spc-notes").textContent = c.violations.length
    ? c.violations.map((v) => `${v.rule} (${v.title}): ${v.indices.length} point(s)`).join(" · ")
    : "No run rule fires.";
  shown.spc = { points: c.points.length, signals: signal.size };
}

async function refresh() {
  const params = new URLSearchParams(location.search);
  const { kpis: all } = await gql(KPIS, {});
  panel(all);
  heatmap(all.heatmap);
  const day = all.heatmap.days[all.heatmap.days.length - 1];
  if (day) {
    const start = `${day}T00:00:00+00:00`;
    const end = `${day}T23:59:59.999999+00:00`;
    const { kpis: today } = await gql(KPIS, { window: { start, end } });
    board(day, today);
  }
  await spc(params.get("parameter"), params.get("machine"));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  // ready means drawn
  await new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)));
  shown.state = document.body.dataset.state = "ready";
}

async function main() {
  await apiKey();
  await refresh();
  setInterval(() => refresh().catch(showError), REFRESH_MS);
}

main().catch(showError);
