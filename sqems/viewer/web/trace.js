// What a batch, lot, machine window or parameter excursion reached (the recall scope:
// runs, batches, units, shipments, customers, each unit with its path from the source),
// and the ranked causes of the defect types found in it, from the GraphQL API.
//
// /trace?batch=WO-…                      a batch and everything made from it
// /trace?lot=LOT-…                       a material lot
// /trace?machine=M-…&from=ISO&to=ISO     what a machine ran in a window
// /trace?parameter=P-…&from=ISO&to=ISO[&machine=M-…]
//                                        the runs whose actual left the spec in a window
//                                        (an alarm: from its time − 24 h to + 1 min)
// window.sqemsTrace describes what is shown, for scripts and browser tests.

import { apiKey, gql, pageLink, showError } from "/viewer/app/api.js";
import { CAUSE_FIELDS, el, renderCauses, row } from "/viewer/app/causes.js";

const $ = (id) => document.getElementById(id);
const shown = { state: "loading" };
window.sqemsTrace = shown;

const KINDS = ["batch", "lot", "machine", "parameter"];
const UID_LABEL = { batch: "Batch", lot: "Material lot", machine: "Machine", parameter: "Parameter" };
const UID_HINT = { batch: "WO-ASM-00001", lot: "LOT-RESIN-00001", machine: "M-REFLOW-2",
                   parameter: "P-REFLOW-PEAK" };
// the first units in scope: fewer on a phone, where each is a card
const SHOWN_UNITS = matchMedia("(max-width: 40rem)").matches ? 10 : 20;
const SHOWN_RUNS = 25;
const PAGE = 500;         // units per request when listing the defective ones
const TYPES_RANKED = 3;   // the most frequent defect types of a scope, each one analysis

const SCOPE = `query Scope($input: RecallInput!, $first: Int!) {
  recallScope(input: $input) {
    source triggers batches shipments
    counts { processRuns batches units unitsShipped shipments customers }
    customers { uid ... on Customer { name country } }
    units(first: $first) { totalCount edges { node { uid shipment path { uid label edge } } } }
  }
}`;

// the units of a scope with the defects found on them and the complaints about them,
// each with its defect type: rootCause's own test of a defective unit
const DEFECTIVE = `query Defective($input: RecallInput!, $first: Int!, $after: String) {
  recallScope(input: $input) {
    units(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges { node { uid unit { ... on Unit {
        defects: neighbours(type: "FOUND_ON", direction: IN, first: 20) { edges { node {
          ... on Defect { type: neighbours(type: "OF_TYPE") { edges { node {
            uid ... on DefectType { name } } } } } } } }
        complaints: neighbours(type: "ABOUT", direction: IN, first: 20) { edges { node {
          ... on Complaint { type: neighbours(type: "OF_TYPE") { edges { node {
            uid ... on DefectType { name } } } } } } } }
      } } } }
    }
  }
}`;

const ROOT_CAUSE = `query RootCause($type: String!) {
  rootCause(input: { defectType: { uid: $type } }, top: 6) {
    defectives population defectiveInPopulation factorsTested conclusion
    causes { ${CAUSE_FIELDS} }
  }
}`;

const RUN_FIELDS = `uid ... on ProcessRun { startedAt shift
  batch: neighbours(type: "RAN", direction: IN) { edges { node { uid } } }
  machine: neighbours(type: "ON") { edges { node { uid } } }
  recorded: neighbours(type: "RECORDED") { edges { node { uid } } } }`;

const RUN = `query Run($uid: String!) { entity(uid: $uid) { ${RUN_FIELDS} } }`;

const BATCH_RUNS = `query BatchRuns($uid: String!) {
  entity(uid: $uid) { uid ... on Batch {
    lots: neighbours(type: "CONSUMED_IN", direction: IN) { edges { node { uid } } }
    runs: neighbours(type: "RAN") { edges { node { ${RUN_FIELDS} } } } } }
}`;

const day = (t) => (t ? t.slice(0, 16).replace("T", " ") : "—");
const link = (text, href) => el("a", { href, textContent: text });
const uids = (connection) => connection.edges.map((e) => e.node.uid);
const count = (n, one, many = `${one}s`) => `${n.toLocaleString("en")} ${n === 1 ? one : many}`;

// --- the source: URL, form, API input --------------------------------------------------

function sourceFromUrl() {
  const params = new URLSearchParams(location.search);
  // an excursion may name its machine too: the parameter decides
  const kind = ["parameter", ...KINDS].find((k) => params.get(k));
  if (!kind) return null;
  return {
    kind,
    uid: params.get(kind).trim(),
    machine: kind === "parameter" ? params.get("machine") || null : null,
    from: params.get("from") || null,
    to: params.get("to") || null,
  };
}

function urlOf(source) {
  const params = { [source.kind]: source.uid };
  if (source.kind === "parameter" && source.machine) params.machine = source.machine;
  if (source.kind === "machine" || source.kind === "parameter") {
    Object.assign(params, { from: source.from, to: source.to });
  }
  return pageLink("/trace", params);
}

function recallInput(source) {
  const window = { start: source.from, end: source.to };
  switch (source.kind) {
    case "batch": return { batch: source.uid };
    case "lot": return { lot: source.uid };
    case "machine": return { machine: { uid: source.uid, window } };
    default: return { excursion: { parameter: source.uid, window } };
  }
}

function showKind(kind) {
  $("uid-label").textContent = UID_LABEL[kind];
  $("uid-input").placeholder = UID_HINT[kind];
  $("machine-field").hidden = kind !== "parameter";
  const windowed = kind === "machine" || kind === "parameter";
  document.querySelectorAll(".window-field").forEach((f) => { f.hidden = !windowed; });
  $("form-hint").hidden = !windowed;
}

function fillForm(source) {
  $("kind-input").value = source.kind;
  $("uid-input").value = source.uid;
  $("machine-input").value = source.machine || "";
  $("from-input").value = source.from || "";
  $("to-input").value = source.to || "";
  showKind(source.kind);
}

function formSource() {
  const kind = $("kind-input").value;
  const windowed = kind === "machine" || kind === "parameter";
  const value = (id) => $(id).value.trim() || null;
  return {
    kind,
    uid: $("uid-input").value.trim(),
    machine: kind === "parameter" ? value("machine-input") : null,
    from: windowed ? value("from-input") : null,
    to: windowed ? value("to-input") : null,
  };
}

function describe(source) {
  const span = source.from || source.to
    ? ` from ${source.from || "the start"} to ${source.to || "now"}` : "";
  switch (source.kind) {
    case "batch": return `batch ${source.uid} and everything made from it`;
    case "lot": return `material lot ${source.uid} and everything made from it`;
    case "machine": return `what machine ${source.uid} ran${span || " (whole history)"}`;
    default: return `the runs whose ${source.uid} left its spec${span || " (whole history)"}`;
  }
}

// --- the scope -------------------------------------------------------------------------

function nodeLink(uid, label) {
  if (label === "Batch") return link(uid, pageLink("/trace", { batch: uid }));
  if (label === "MaterialLot") return link(uid, pageLink("/trace", { lot: uid }));
  if (label === "Machine") return link(uid, pageLink("/dashboard", { machine: uid }));
  return uid;
}

const NOUN = { ProcessRun: "run", Batch: "batch", Unit: "unit", MaterialLot: "lot",
               Machine: "machine", Parameter: "parameter", Shipment: "shipment",
               Supplier: "supplier", Customer: "customer" };
const VIA = { ASSEMBLED_INTO: "built into", CONSUMED_IN: "used in", SHIPPED_IN: "shipped in" };

// A path from the source to a unit in plain words: "parameter P → run R → batch B →
// unit U → built into unit V", its batches, lots and machines linked.
function pathView(path) {
  const parts = path.flatMap((s, i) => {
    const noun = NOUN[s.label] || s.label;
    const words = `${VIA[s.edge] ? `${VIA[s.edge]} ` : ""}${noun} `;
    return [i ? " → " : "", words, nodeLink(s.uid, s.label)];
  });
  return el("span", { className: "path" }, ...parts);
}

function scope(source, r) {
  $("scope-title").textContent = `Recall scope of ${source.kind} ${source.uid}`;
  $("scope-source").textContent = `Everything reached by ${describe(source)}.`;
  const tiles = [["runs", "process runs", r.counts.processRuns], ["batches", "batches", r.counts.batches],
                 ["units", "units", r.counts.units], ["shipped", "units shipped", r.counts.unitsShipped],
                 ["shipments", "shipments", r.counts.shipments],
                 ["customers", "customers", r.counts.customers]];
  $("scope-tiles").replaceChildren(...tiles
    .filter(([id]) => id !== "runs" || source.kind === "machine" || source.kind === "parameter")
    .map(([id, label, v]) => el("div", { className: "tile" }, el("span", { textContent: label }),
      el("b", { id: `count-${id}`, textContent: v.toLocaleString("en") }))));
  const note = $("scope-note");
  note.hidden = true;
  if (source.kind === "parameter" && source.machine) {
    note.textContent = `This recall covers the out-of-spec runs of ${source.uid} on every `
      + `machine in the window; the runs on ${source.machine} are marked below.`;
    note.hidden = false;
  }
  if (!r.counts.units) {
    note.textContent = source.kind === "parameter"
      ? `No run recorded ${source.uid} outside its spec limits in this window: nothing to recall.`
      : "Nothing was reached: no unit is in scope.";
    note.hidden = false;
  }

  $("batches-list").replaceChildren(...r.batches.map((b) => el("li", {}, nodeLink(b, "Batch"))));
  if (!r.batches.length) $("batches-list").append(el("li", { className: "hint", textContent: "none" }));
  $("customers-list").replaceChildren(...r.customers.map((c) => el("li", {
    textContent: c.name ? `${c.name} (${c.uid}${c.country ? `, ${c.country}` : ""})` : c.uid })));
  if (!r.customers.length) {
    $("customers-list").append(el("li", { className: "hint", textContent: "none: nothing shipped" }));
  }
  $("shipments").textContent = r.shipments.length
    ? `in ${count(r.shipments.length, "shipment")}: ${r.shipments.slice(0, 12).join(", ")}`
      + (r.shipments.length > 12 ? ` and ${r.shipments.length - 12} more` : "")
    : "";

  const table = $("units-table");
  table.tBodies[0].replaceChildren();
  for (const { node: u } of r.units.edges) {
    row(table, [u.uid, u.shipment || "not shipped", pathView(u.path)]);
  }
  const more = r.units.totalCount - r.units.edges.length;
  $("units-more").textContent = more > 0 ? `and ${count(more, "more unit")}` : "";
  $("units").hidden = !r.units.totalCount;
}

// --- the runs --------------------------------------------------------------------------

async function runsOf(source, r) {
  if (source.kind === "batch") {
    const { entity } = await gql(BATCH_RUNS, { uid: source.uid });
    return { runs: entity.runs.edges.map((e) => e.node), total: entity.runs.edges.length,
             lots: uids(entity.lots) };
  }
  if (source.kind === "lot") return { runs: [], total: 0, lots: [] };
  const wanted = r.triggers.slice(0, SHOWN_RUNS);
  const runs = await Promise.all(wanted.map((uid) => gql(RUN, { uid }).then((d) => d.entity)));
  return { runs, total: r.triggers.length, lots: [] };
}

function runs(source, { runs: found, total, lots }) {
  const section = $("runs");
  section.hidden = !found.length;
  $("lots-list").replaceChildren(...lots.map((l) => el("li", {}, nodeLink(l, "MaterialLot"))));
  $("lots").hidden = !lots.length;
  if (!found.length) return [];
  $("runs-title").textContent = {
    batch: `How batch ${source.uid} was made`,
    machine: `Runs of ${source.uid} in the window`,
    parameter: `Runs that recorded ${source.uid} outside its spec`,
  }[source.kind];
  $("runs-intro").textContent = {
    batch: "Each step's run, its machine and the parameters it recorded, each with its SPC chart "
      + "on that machine.",
    machine: "These runs put their batches in the recall.",
    parameter: "These runs put their batches in the recall; each machine links to the "
      + `SPC chart of ${source.uid} on it.`,
  }[source.kind];
  const table = $("runs-table");
  table.tBodies[0].replaceChildren();
  const shownRuns = [];
  for (const run of found) {
    const machine = run.machine.edges.length ? run.machine.edges[0].node.uid : null;
    const recorded = uids(run.recorded);
    const batch = run.batch.edges.length ? run.batch.edges[0].node.uid : null;
    const parameter = source.kind === "parameter" ? source.uid
      : recorded.length === 1 ? recorded[0] : null;
    const charts = el("span", { className: "chart-links" }, ...recorded.map((p) =>
      link(p, pageLink("/dashboard", { machine, parameter: p }))));
    const tr = row(table, [
      run.uid,
      batch ? nodeLink(batch, "Batch") : "—",
      machine ? link(machine, pageLink("/dashboard", { machine, parameter })) : "—",
      day(run.startedAt), run.shift ? run.shift.toLowerCase() : "—",
      recorded.length ? charts : "none recorded",
    ]);
    tr.dataset.run = run.uid;
    const marked = source.kind === "parameter" && source.machine && machine === source.machine;
    if (marked) tr.classList.add("marked");
    shownRuns.push({ uid: run.uid, batch, machine, parameters: recorded, marked: Boolean(marked) });
  }
  if (source.kind === "parameter" && source.machine && !shownRuns.some((x) => x.marked)) {
    $("scope-note").textContent = `This recall covers the out-of-spec runs of ${source.uid} on `
      + `every machine in the window; none of those shown ran on ${source.machine}.`;
  }
  $("runs-more").textContent = total > found.length
    ? `and ${count(total - found.length, "more run")}` : "";
  return shownRuns;
}

// --- the defective units and the causes of their defect types ---------------------------

async function defectiveUnits(input, total) {
  const byType = new Map();
  const defective = [];
  let after = null;
  let seen = 0;
  for (;;) {
    const { recallScope: r } = await gql(DEFECTIVE, { input, first: PAGE, after });
    for (const { node } of r.units.edges) {
      const unit = node.unit;
      if (!unit) continue;
      const reports = [...unit.defects.edges, ...unit.complaints.edges].map((e) => e.node);
      if (!reports.length) continue;
      defective.push(node.uid);
      const types = new Map();
      for (const report of reports) {
        for (const { node: t } of report.type ? report.type.edges : []) types.set(t.uid, t.name);
      }
      for (const [uid, name] of types) {
        const entry = byType.get(uid) || { uid, name, units: [] };
        entry.units.push(node.uid);
        byType.set(uid, entry);
      }
    }
    seen += r.units.edges.length;
    $("status").textContent = `looking for defective units: ${seen.toLocaleString("en")} of `
      + `${total.toLocaleString("en")} checked…`;
    if (!r.units.pageInfo.hasNextPage) break;
    after = r.units.pageInfo.endCursor;
  }
  const types = [...byType.values()].sort((a, b) => b.units.length - a.units.length
    || a.uid.localeCompare(b.uid));
  return { defective, types };
}

function causeMarks(source, shownRuns, lots, causes) {
  const machines = new Set(shownRuns.map((r) => r.machine).filter(Boolean));
  const used = new Set(lots);
  const marks = {};
  for (const c of causes) {
    if (c.uid === source.uid) marks[c.key] = `this trace's ${source.kind}`;
    else if (c.kind === "MACHINE" && machines.has(c.uid)) marks[c.key] = "a machine of these runs";
    else if (c.kind === "MATERIAL_LOT" && used.has(c.uid)) marks[c.key] = "used by this batch";
  }
  return marks;
}

async function rootCause(source, input, total, shownRuns, lots) {
  const section = $("rootcause");
  section.dataset.state = "running";
  const holder = $("rootcause-types");
  holder.replaceChildren();
  const { defective, types } = await defectiveUnits(input, total);
  const result = { defective: defective.length, types: [] };
  if (!defective.length) {
    $("defectives").textContent = total
      ? `None of the ${count(total, "unit")} in scope has a defect or a complaint recorded: `
        + "there is nothing to explain."
      : "No unit is in scope: there is nothing to explain.";
    $("rootcause-method").hidden = true;
    section.dataset.state = "done";
    return result;
  }
  $("rootcause-method").hidden = false;
  const ranked = types.slice(0, TYPES_RANKED);
  $("defectives").textContent = `${count(defective.length, "unit")} of the `
    + `${total.toLocaleString("en")} in scope ${defective.length === 1 ? "has" : "have"} a `
    + "recorded defect or complaint: "
    + types.map((t) => `${t.units.length} ${t.name || t.uid}`).join(", ") + "."
    + (types.length > ranked.length
      ? ` The ${ranked.length} most frequent defect types are ranked below.` : "");
  const reports = await Promise.all(ranked.map((t) =>
    gql(ROOT_CAUSE, { type: t.uid }).then((d) => d.rootCause)));
  ranked.forEach((t, i) => {
    const report = reports[i];
    const block = $("type-template").content.firstElementChild.cloneNode(true);
    block.dataset.defectType = t.uid;
    block.querySelector(".type-title").textContent = `${t.name || t.uid} (${t.uid}): `
      + `${count(t.units.length, "unit")} in scope, ${report.defectiveInPopulation.toLocaleString("en")} `
      + `of ${report.population.toLocaleString("en")} comparable units in the plant`;
    const significant = report.causes.filter((c) => c.significant);
    const conclusion = block.querySelector(".conclusion");
    conclusion.textContent = significant.length
      ? report.conclusion
      : `No cause can be named for ${t.name || t.uid}: ${report.conclusion}`;
    conclusion.classList.toggle("none", !significant.length);
    renderCauses(block.querySelector("table"), report.causes,
      causeMarks(source, shownRuns, lots, report.causes));
    holder.append(block);
    result.types.push({
      defectType: t.uid, units: t.units.length, conclusion: report.conclusion,
      significant: significant.map((c) => c.key), factors: report.causes.map((c) => c.key),
    });
  });
  section.dataset.state = "done";
  return result;
}

function fail(error) {
  shown.state = "error";
  shown.error = String(error.message || error);
  $("status").textContent = error.headline || "";
  $("status").classList.toggle("problem", Boolean(error.headline));
  if ($("rootcause").dataset.state === "running") $("rootcause").dataset.state = "failed";
  showError(error);
}

// --- the page --------------------------------------------------------------------------

async function trace(source) {
  Object.keys(shown).forEach((k) => delete shown[k]);
  document.body.dataset.state = shown.state = "loading";
  shown.source = source;
  $("error").hidden = true;
  $("report").hidden = true;
  $("status").classList.remove("problem");
  $("status").textContent = `tracing ${describe(source)}…`;
  const input = recallInput(source);
  let r;
  try {
    ({ recallScope: r } = await gql(SCOPE, { input, first: SHOWN_UNITS }));
  } catch (error) {
    if (String(error.message).includes("(NOT_FOUND)")) {
      const what = `${UID_LABEL[source.kind].toLowerCase()} ${source.uid}`;
      error.headline = `Not found: there is no ${what} in the plant's records. Check the name, `
        + "or choose another source above.";
    }
    throw error;
  }
  scope(source, r);
  Object.assign(shown, {
    counts: r.counts, triggers: r.triggers, batches: r.batches, shipments: r.shipments,
    customers: r.customers.map((c) => c.uid),
    units: r.units.edges.map((e) => e.node.uid),
  });
  $("report").hidden = false;
  const made = await runsOf(source, r);
  const shownRuns = runs(source, made);
  Object.assign(shown, { runs: shownRuns, lots: made.lots });
  shown.rootCause = await rootCause(source, input, r.counts.units, shownRuns, made.lots);
  $("status").textContent = "";
  document.body.dataset.state = shown.state = "ready";
}

async function main() {
  $("kind-input").addEventListener("change", () => showKind($("kind-input").value));
  $("trace-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const source = formSource();
    history.pushState(null, "", urlOf(source));
    trace(source).catch(fail);
  });
  window.addEventListener("popstate", () => {
    const source = sourceFromUrl();
    if (source) {
      fillForm(source);
      trace(source).catch(fail);
    }
  });
  const source = sourceFromUrl();
  showKind(source ? source.kind : "batch");
  await apiKey();
  if (source) {
    fillForm(source);
    await trace(source);
  } else {
    $("status").textContent = "Choose what to trace: a batch, a material lot, a machine over a "
      + "time window, or a parameter's excursions out of spec.";
    document.body.dataset.state = shown.state = "ready";
  }
}

main().catch(fail);
