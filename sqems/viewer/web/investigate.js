// A complaint investigated end to end, from the GraphQL API: the complaint and its
// unit's genealogy, the analysis scope, the ranked factors (only a significant one is
// called a cause), the suggested recall and the proposed fix, whose what-if runs through
// the what-if mutations (a session of the fix's line, the fix as a scenario), polled
// until done, with each KPI's baseline, scenario and paired difference with intervals.
//
// /investigate?complaint=CMP-000001#key=<API key>
// window.sqemsInvestigation describes what is shown, for scripts and browser tests.

import { apiKey, gql, pageLink, showError } from "/viewer/app/api.js";
import { CAUSE_FIELDS, el, interval, num, renderCauses, row } from "/viewer/app/causes.js";

const POLL_MS = 1000;
const SHOWN_BATCHES = 40;
const $ = (id) => document.getElementById(id);
const shown = { state: "idle", whatif: { state: "idle" } };
window.sqemsInvestigation = shown;

const INVESTIGATION = `query Investigation($complaint: ID!, $lookbackDays: Float!) {
  investigation(complaint: $complaint, lookbackDays: $lookbackDays) {
    complaint {
      uid receivedAt severity description customer customerName unit unitStatus producedAt
      batch product productName defectType { uid name category } originSteps
      subassemblies { uid batch product parent depth }
      genealogy { counts { label count } }
    }
    analysis { widened note defectives population defectiveInPopulation factorsTested alpha }
    causes { ${CAUSE_FIELDS} }
    conclusion leadingCause why { uid label edge why }
    recall {
      source batches counts { batches units unitsShipped shipments customers }
      customers { uid ... on Customer { name } }
      units(first: 10) { totalCount edges { node { uid shipment path { uid label edge } } } }
    }
    recallBasis { basis explanation sources drifts { machine parameter start end peakShift } }
    fix { line description changes }
    notes
  }
}`;

const CREATE = `mutation CreateWhatIfSession($line: String!, $name: String!,
    $horizonHours: Float!, $replications: Int!) {
  createWhatIfSession(line: $line, name: $name, horizonHours: $horizonHours,
                      replications: $replications) { uid }
}`;

const RUN = `mutation RunScenario($session: String!, $name: String!, $changes: ScenarioInput) {
  runScenario(session: $session, name: $name, changes: $changes) { uid status }
}`;

const SESSION = `query WhatIfSession($uid: String!) {
  whatIfSession(uid: $uid) {
    horizonHours replications
    scenarios {
      uid baseline status progress message
      kpis { kpi mean low high } difference { kpi mean low high }
      verdicts { kpi verdict } warnings
    }
  }
}`;

// the what-if's KPIs where more is better (sqems.simulation.whatif.BETTER_HIGH)
const BETTER_HIGH = new Set(["throughput_per_h", "units_per_day", "yield", "fpy"]);

const signed = (v) => (v > 0 ? `+${num(v)}` : num(v));
const day = (t) => (t ? t.slice(0, 16).replace("T", " ") : "—");
const link = (text, href) => el("a", { href, textContent: text });
const batchLink = (uid) => (uid ? link(uid, pageLink("/trace", { batch: uid })) : "—");

// A node on a path or in a list, linked to where it is traced or charted.
function nodeLink(uid, label) {
  if (label === "Batch") return batchLink(uid);
  if (label === "MaterialLot") return link(uid, pageLink("/trace", { lot: uid }));
  if (label === "Machine") return link(uid, pageLink("/dashboard", { machine: uid }));
  return uid;
}

// A recall source as the API describes it ("batch WO-…", "machine M-… from … to …") on
// the trace page; a description of several merged sources stays text.
function sourceLink(text) {
  const m = /^(lot|batch|machine|parameter) (\S+)(?: from (\S+) to (\S+))?$/.exec(text);
  if (!m) return text;
  const [, kind, uid, from, to] = m;
  const known = (t) => (t && t !== "…" ? t : null);
  return link(text, pageLink("/trace", { [kind]: uid, from: known(from), to: known(to) }));
}

function facts(list, pairs) {
  list.replaceChildren(
    ...pairs.flatMap(([k, ...v]) => [el("dt", { textContent: k }), el("dd", {}, ...v)]),
  );
}

function complaint(c) {
  $("complaint-uid").textContent = c.uid;
  const kind = c.defectType
    ? `${c.defectType.name} (${c.defectType.uid}, ${c.defectType.category.toLowerCase()})`
    : "not classified";
  facts($("complaint-facts"), [
    ["defect type", kind],
    ["severity", c.severity.toLowerCase()],
    ["says", c.description || "—"],
    ["received", day(c.receivedAt)],
    ["customer", c.customerName ? `${c.customerName} (${c.customer})` : c.customer || "—"],
    ["unit", `${c.unit} (${c.productName || c.product || "—"}), ${c.unitStatus.toLowerCase()}`],
    ["made", `${day(c.producedAt)} in batch `, batchLink(c.batch)],
    ["originates at", c.originSteps.join(", ") || "—"],
  ]);
  $("genealogy-counts").textContent = "upstream: " + c.genealogy.counts
    .map((n) => `${n.count} ${n.label}`).join(" · ");
  const top = el("li", {}, el("b", { textContent: c.unit }), " batch ", batchLink(c.batch));
  const subs = c.subassemblies.map((s) => {
    const li = el("li", {}, el("span", { className: "depth", textContent: `level ${s.depth} ` }),
                  `${s.uid} (${s.product || "—"}) built into ${s.parent}, batch `,
                  batchLink(s.batch));
    li.style.paddingLeft = `${s.depth * 1}rem`;
    return li;
  });
  $("genealogy-tree").replaceChildren(top, ...subs);
  if (!subs.length) $("genealogy-tree").append(el("li", { className: "hint",
    textContent: "no sub-assembly is built into this unit" }));
}

function causes(found) {
  const table = $("causes-table");
  const none = !found.causes.some((c) => c.significant);
  $("conclusion").textContent = found.conclusion;
  $("conclusion").classList.toggle("none", none);
  const marks = found.leadingCause ? { [found.leadingCause]: "reached this unit" } : {};
  renderCauses(table, found.causes, marks);
  $("notes").replaceChildren(...found.notes.map((n) => el("li", { textContent: n })));
  $("why").replaceChildren(...found.why.map((w) => el("li", { textContent: w.why })));
  $("why-box").hidden = !found.why.length;
}

function recall(found) {
  const r = found.recall;
  const basis = found.recallBasis;
  $("recall-basis").textContent = basis
    ? basis.explanation
    : "No recall is suggested: no significant cause reached this unit.";
  $("recall-sources").replaceChildren(...(basis ? basis.sources : []).map((t) =>
    el("li", {}, sourceLink(t))));
  $("recall-drifts").replaceChildren(...(basis ? basis.drifts : []).map((d) => el("li", {},
    link(`${d.machine} ${d.parameter}`, pageLink("/dashboard",
      { machine: d.machine, parameter: d.parameter })),
    ` drifted ${signed(d.peakShift)} from ${day(d.start)} to ${day(d.end)}`)));
  const tiles = r ? [["batches", r.counts.batches], ["units", r.counts.units],
                     ["shipped", r.counts.unitsShipped], ["shipments", r.counts.shipments],
                     ["customers", r.counts.customers]] : [];
  $("recall-tiles").replaceChildren(...tiles.map(([k, v]) => el("div", { className: "tile" },
    el("span", { textContent: k }), el("b", { id: `count-${k}`, textContent: v.toLocaleString("en") }))));
  const batches = r ? r.batches : [];
  $("recall-batches").replaceChildren(...batches.slice(0, SHOWN_BATCHES).map((b) =>
    el("li", {}, batchLink(b))));
  if (batches.length > SHOWN_BATCHES) {
    $("recall-batches").append(el("li", { className: "hint",
      textContent: `and ${batches.length - SHOWN_BATCHES} more` }));
  }
  $("recall-customers").replaceChildren(...(r ? r.customers : []).map((c) =>
    el("li", { textContent: c.name ? `${c.name} (${c.uid})` : c.uid })));
  const table = $("recall-units");
  table.tBodies[0].replaceChildren();
  for (const { node: u } of r ? r.units.edges : []) {
    const path = el("span", {}, ...u.path.flatMap((s) =>
      (s.edge ? [` -${s.edge}-> `, nodeLink(s.uid, s.label)] : [nodeLink(s.uid, s.label)])));
    row(table, [u.uid, u.shipment || "not shipped", path]);
  }
  $("recall").querySelectorAll("h3, .scroll").forEach((n) => { n.hidden = !r; });
}

function fix(found) {
  const f = found.fix;
  $("fix-description").textContent = f
    ? f.description
    : "No fix is proposed: no significant cause reached this unit.";
  $("fix-line").textContent = f ? f.line : "—";
  $("fix-changes").textContent = f ? JSON.stringify(f.changes, null, 1) : "";
  $("fix-run").hidden = !f;
  $("whatif-result").hidden = true;
  $("whatif-message").textContent = "";
  $("whatif-bar").hidden = true;
}

let current = null;

async function investigate(uid, lookbackDays) {
  document.body.dataset.state = shown.state = "loading";
  $("status").textContent = `investigating ${uid}…`;
  $("error").hidden = true;
  const { investigation: found } = await gql(INVESTIGATION, { complaint: uid, lookbackDays });
  current = found;
  complaint(found.complaint);
  $("scope-note").textContent = found.analysis.note;
  const a = found.analysis;
  $("scope-stats").textContent = `${a.defectiveInPopulation} defective of ${a.population} `
    + `comparable units; ${a.factorsTested} factors tested at a false-discovery rate of ${a.alpha}`;
  causes(found);
  recall(found);
  fix(found);
  $("report").hidden = false;
  $("status").textContent = "";
  Object.assign(shown, {
    complaint: found.complaint.uid,
    defectType: found.complaint.defectType && found.complaint.defectType.uid,
    leadingCause: found.leadingCause,
    significant: found.causes.filter((c) => c.significant).map((c) => c.key),
    recall: found.recall && found.recall.counts,
    fix: found.fix,
    whatif: { state: "idle" },
  });
  document.body.dataset.state = shown.state = "ready";
}

function kpiTable(base, scenario) {
  const table = $("whatif-table");
  table.tBodies[0].replaceChildren();
  const baseline = Object.fromEntries(base.kpis.map((k) => [k.kpi, k]));
  const difference = Object.fromEntries(scenario.difference.map((k) => [k.kpi, k]));
  const verdicts = Object.fromEntries(scenario.verdicts.map((v) => [v.kpi, v.verdict]));
  const better = [];
  const worse = [];
  for (const k of scenario.kpis) {
    const b = baseline[k.kpi];
    const d = difference[k.kpi];
    const verdict = verdicts[k.kpi] || "—";
    if (verdict === "credible" && d) {
      (d.mean > 0 === BETTER_HIGH.has(k.kpi) ? better : worse).push(k.kpi);
    }
    row(table, [
      k.kpi,
      b ? interval(b.mean, b.low, b.high) : "—",
      interval(k.mean, k.low, k.high),
      d ? interval(d.mean, d.low, d.high, signed) : "—",
      el("span", { className: `mark ${verdict === "credible" ? "credible" : "plain"}`,
                   textContent: verdict }),
    ]);
    table.tBodies[0].lastChild.dataset.kpi = k.kpi;
  }
  const parts = [];
  if (better.length) parts.push(`credibly better ${better.join(", ")}`);
  if (worse.length) parts.push(`credibly worse ${worse.join(", ")}`);
  const verdict = parts.length
    ? parts.join("; ")
    : "no credible change in any KPI: the twin cannot show that this fix helps";
  $("whatif-verdict").textContent = `Verdict: ${verdict}`;
  $("whatif-warnings").replaceChildren(...scenario.warnings.map((w) =>
    el("li", { textContent: w })));
  return { verdict, better, worse, kpis: scenario.kpis.map((k) => k.kpi),
           warnings: scenario.warnings };
}

async function runWhatIf() {
  const f = current.fix;
  const section = $("fix");
  const button = $("run-whatif");
  button.disabled = true;
  $("whatif-result").hidden = true;
  section.dataset.state = shown.whatif.state = "running";
  try {
    const { createWhatIfSession: session } = await gql(CREATE, {
      line: f.line, name: `investigation of ${current.complaint.uid}`,
      horizonHours: Number($("hours-input").value), replications: Number($("replications-input").value),
    });
    const { runScenario: started } = await gql(RUN,
      { session: session.uid, name: f.description, changes: f.changes });
    shown.whatif.session = session.uid;
    $("whatif-bar").hidden = false;
    for (;;) {
      const { whatIfSession: s } = await gql(SESSION, { uid: session.uid });
      const base = s.scenarios.find((x) => x.baseline);
      const mine = s.scenarios.find((x) => x.uid === started.uid);
      const running = base.status === "DONE" ? mine : base;
      $("whatif-bar").value = (base.progress + mine.progress) / 2;
      $("whatif-message").textContent = `${running === base ? "baseline" : "the fix"}: `
        + `${running.status.toLowerCase()} ${running.message || ""}`;
      if (mine.status === "FAILED" || base.status === "FAILED") {
        throw new Error(`the what-if failed: ${(mine.status === "FAILED" ? mine : base).message}`);
      }
      if (mine.status === "DONE" && base.status === "DONE") {
        $("whatif-message").textContent = `${s.replications} replications of `
          + `${s.horizonHours} h simulated`;
        Object.assign(shown.whatif, kpiTable(base, mine));
        $("whatif-result").hidden = false;
        section.dataset.state = shown.whatif.state = "done";
        return;
      }
      await new Promise((wait) => setTimeout(wait, POLL_MS));
    }
  } catch (error) {
    section.dataset.state = shown.whatif.state = "failed";
    $("whatif-message").textContent = String(error.message || error);
    shown.whatif.error = $("whatif-message").textContent;
  } finally {
    button.disabled = false;
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  const uid = params.get("complaint");
  if (params.get("lookbackDays")) $("lookback-input").value = params.get("lookbackDays");
  $("complaint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = $("complaint-input").value.trim();
    const next = new URL(location.href);
    next.searchParams.set("complaint", chosen);
    history.replaceState(null, "", next);
    investigate(chosen, Number($("lookback-input").value)).catch(showError);
  });
  $("whatif-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runWhatIf();
  });
  await apiKey();
  if (uid) {
    $("complaint-input").value = uid;
    await investigate(uid, Number($("lookback-input").value));
  } else {
    $("status").textContent = "Name a complaint to investigate.";
    document.body.dataset.state = shown.state = "ready";
  }
}

main().catch(showError);
