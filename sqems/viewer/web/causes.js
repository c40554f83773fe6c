// The ranked factors of a root-cause analysis as a table, shared by the pages: only a
// factor the analysis marks significant is called a cause; every factor shows its
// defective / exposed units, its risk ratio and adjusted odds ratio with their 95 %
// intervals and its false-discovery adjusted q; the batches, lots, machines and
// parameters it names link to the page that traces or charts them.

import { pageLink } from "/viewer/app/api.js";

// the fields renderCauses reads from each Cause of the GraphQL API
export const CAUSE_FIELDS = `rank key kind uid step zone description significant explainedBy aliases
  evidence { defectiveExposed exposed riskRatio riskRatioLow riskRatioHigh qValue
             adjustedOddsRatio adjustedOddsRatioLow adjustedOddsRatioHigh }`;

export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c != null));
  return node;
}

export const num = (v) => (v == null ? "—" : Number(v).toPrecision(3).replace(/\.?0+e/, "e"));
export const interval = (v, lo, hi, fmt = num) =>
  (v == null ? "—" : `${fmt(v)} [${fmt(lo)}, ${fmt(hi)}]`);

// A row of a table whose cells carry their column's name (phones show it beside them).
export function row(table, cells, className = "") {
  const heads = [...table.tHead.rows[0].cells].map((c) => c.textContent);
  const tr = el("tr", { className });
  cells.forEach((cell, i) => {
    const td = el("td");
    td.dataset.label = heads[i];
    td.append(cell);
    tr.append(td);
  });
  table.tBodies[0].append(tr);
  return tr;
}

// Where a factor can be looked at further: a lot's recall, a machine's or a parameter's
// SPC chart (an excursion also to its recall).
export function factorLinks(cause) {
  switch (cause.kind) {
    case "MATERIAL_LOT":
      return [["trace this lot", pageLink("/trace", { lot: cause.uid })]];
    case "MACHINE":
      return [["SPC charts", pageLink("/dashboard", { machine: cause.uid })]];
    case "EXCURSION":
      return [["SPC chart", pageLink("/dashboard", { parameter: cause.uid })],
              ["trace its excursions", pageLink("/trace", { parameter: cause.uid })]];
    default:
      return [];
  }
}

// Fill `table` (thead: #, factor, verdict, defective / exposed, risk ratio, adjusted odds
// ratio, q) with the causes of `report`; `marks` maps a cause's key to a note shown beside
// it (say, that it reached the complaint's unit).
export function renderCauses(table, causes, marks = {}) {
  table.tBodies[0].replaceChildren();
  for (const c of causes) {
    const e = c.evidence;
    const verdict = c.significant
      ? el("span", { className: "mark cause", textContent: "significant cause" })
      : el("span", { className: "mark plain", textContent:
          c.explainedBy ? `not significant: explained by ${c.explainedBy}` : "not significant" });
    const links = factorLinks(c).map(([text, href]) =>
      el("a", { className: "factor-link", href, textContent: text }));
    const what = el("span", {}, c.description,
      marks[c.key] ? el("b", { textContent: ` — ${marks[c.key]}` }) : null,
      c.aliases.length ? el("span", { className: "hint",
        textContent: ` (cannot be told from ${c.aliases.join(", ")})` }) : null,
      links.length ? el("span", { className: "factor-links" }, ...links) : null);
    const tr = row(table, [
      String(c.rank), what, verdict, `${e.defectiveExposed} / ${e.exposed}`,
      interval(e.riskRatio, e.riskRatioLow, e.riskRatioHigh),
      interval(e.adjustedOddsRatio, e.adjustedOddsRatioLow, e.adjustedOddsRatioHigh),
      num(e.qValue),
    ], c.significant ? "significant" : "");
    tr.dataset.key = c.key;
  }
}
