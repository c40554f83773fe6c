// The phone's outbox: every defect report is written to IndexedDB first (its photos as
// Blobs) and sent to the API from there, so a report made without network is kept on
// the phone and sent when the network returns, by the page (on load, when `online`
// fires, after each new report) or by the service worker (Background Sync's `sync`
// event, where the browser has it). A Web Lock around a sending round means the page
// and the worker never send at once; the report's id (made when it was written) is the
// server's idempotency key, so even a report sent twice becomes one Defect.
//
// A report leaves the outbox only when the server answered it (created or already
// there). No network, or a server that cannot do it now, keeps it queued; a typed
// error from the server (a refused value) marks it failed, with the server's message,
// until the inspector discards or retries it. A refused key (UNAUTHENTICATED) stops the
// round and keeps every report queued for the next key.
//
// Used as an ES module by the page (inspect.js) and by the service worker
// (inspect-sw.js): nothing here touches the DOM or localStorage. The worker cannot read
// localStorage, so the page keeps a copy of the device's API key here (setKey).

const DB_NAME = "sqems-inspect";
const DB_VERSION = 1;
const REPORTS = "reports";
const META = "meta";
export const LOCK = "sqems.inspect.outbox";
export const CHANNEL = "sqems.inspect.outbox";
export const SYNC_TAG = "sqems-outbox";

export const REPORT_DEFECT = `mutation ReportDefect($report: DefectReportInput!, $photos: [Upload!]!) {
  reportDefect(report: $report, photos: $photos) {
    created
    defect { uid }
    evidence { digest mediaType size }
  }
}`;

// Typed errors that say "not now" rather than "not this": the report stays queued.
const TRANSIENT = new Set([
  "GRAPH_UNAVAILABLE", "TIMEOUT", "AUDIT_UNAVAILABLE", "BROKER_UNAVAILABLE",
]);

let opening = null;

function opened() {
  opening ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(REPORTS, { keyPath: "reportId" });
      request.result.createObjectStore(META);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return opening;
}

function settled(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// Run `work(store)` (which issues its requests at once) in one transaction of `name`;
// the answer once the transaction has committed.
async function inStore(name, mode, work) {
  const db = await opened();
  const transaction = db.transaction(name, mode);
  const committed = new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new Error("the outbox write was aborted"));
  });
  const [, answer] = await Promise.all([committed, work(transaction.objectStore(name))]);
  return answer;
}

function announce(message) {
  if (typeof BroadcastChannel === "undefined") return;
  const channel = new BroadcastChannel(CHANNEL);
  channel.postMessage(message);
  channel.close();
}

// A new report: { reportId, target, code, kind, defectType, defectTypeName, severity,
// note, foundAt (ISO time), photos: [{ blob, name }] }, stored queued.
export async function addReport(report) {
  const stored = { ...report, state: "queued", error: null, attempts: 0,
                   writtenAt: new Date().toISOString(), lastTriedAt: null };
  await inStore(REPORTS, "readwrite", (store) => settled(store.add(stored)));
  announce({ type: "changed" });
  return stored;
}

// Every report in the outbox, oldest first.
export async function listReports() {
  const all = await inStore(REPORTS, "readonly", (store) => settled(store.getAll()));
  return all.sort((a, b) => a.writtenAt.localeCompare(b.writtenAt));
}

export async function discardReport(reportId) {
  await inStore(REPORTS, "readwrite", (store) => settled(store.delete(reportId)));
  announce({ type: "changed" });
}

// A failed report queued again (after the inspector fixed what was refused elsewhere,
// e.g. a defect type added to the graph).
export async function retryReport(reportId) {
  await update(reportId, { state: "queued", error: null });
}

async function update(reportId, changes) {
  await inStore(REPORTS, "readwrite", async (store) => {
    const found = await settled(store.get(reportId));
    if (found) await settled(store.put({ ...found, ...changes }));
  });
  announce({ type: "changed" });
}

// The device's API key as the worker reads it (null: none).
export async function getKey() {
  const key = await inStore(META, "readonly", (store) => settled(store.get("apiKey")));
  return key || null;
}

export async function setKey(key) {
  await inStore(META, "readwrite", (store) =>
    settled(key ? store.put(key, "apiKey") : store.delete("apiKey")));
}

// The request of one report: JSON without photos, else the GraphQL multipart request
// (the `operations` part first, then the `map` of files to variables, then the files).
export function reportRequest(report) {
  const variables = {
    report: { reportId: report.reportId, target: report.target, defectType: report.defectType,
              severity: report.severity, note: report.note, foundAt: report.foundAt },
    photos: report.photos.map(() => null),
  };
  const operations = JSON.stringify({ query: REPORT_DEFECT, variables });
  if (!report.photos.length) {
    return { headers: { "content-type": "application/json" }, body: operations };
  }
  const form = new FormData();
  form.append("operations", operations);
  form.append("map", JSON.stringify(
    Object.fromEntries(report.photos.map((_, i) => [String(i), [`variables.photos.${i}`]]))));
  report.photos.forEach((photo, i) => form.append(String(i), photo.blob, photo.name));
  return { headers: {}, body: form };
}

// Send one report: "sent" (with the answer), "failed" (with the server's message),
// or why the round stops: "offline", "later" (the server cannot now), "unauthenticated".
async function sendOne(report, key) {
  const { headers, body } = reportRequest(report);
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST", body, headers: { ...headers, authorization: `Bearer ${key}` },
    });
  } catch (error) {
    return { outcome: "offline", message: String(error.message || error) };
  }
  let answer;
  try {
    answer = await response.json();
  } catch (error) {
    return { outcome: "later", message: `the server answered ${response.status} without JSON` };
  }
  const result = answer.data && answer.data.reportDefect;
  if (result) return { outcome: "sent", result };
  const error = (answer.errors || [])[0];
  const code = error && error.extensions && error.extensions.code;
  if (code === "UNAUTHENTICATED") return { outcome: "unauthenticated", message: error.message };
  if (!error || TRANSIENT.has(code) || (!code && response.status >= 500)) {
    return { outcome: "later", message: error ? error.message : `HTTP ${response.status}` };
  }
  return { outcome: "failed", message: code ? `${error.message} (${code})` : error.message };
}

async function round(key) {
  const summary = { sent: [], failed: [], stopped: null, message: null };
  // holding the lock, nobody else sends: a report left "sending" was cut off mid-way
  const pending = (await listReports()).filter((r) => r.state !== "failed");
  for (const report of pending) {
    await update(report.reportId, { state: "sending", lastTriedAt: new Date().toISOString(),
                                    attempts: report.attempts + 1 });
    const sent = await sendOne(report, key);
    if (sent.outcome === "sent") {
      await inStore(REPORTS, "readwrite", (store) => settled(store.delete(report.reportId)));
      const done = { reportId: report.reportId, target: report.target,
                     defect: sent.result.defect && sent.result.defect.uid,
                     created: sent.result.created, photos: sent.result.evidence.length };
      summary.sent.push(done);
      announce({ type: "sent", ...done });
    } else if (sent.outcome === "failed") {
      await update(report.reportId, { state: "failed", error: sent.message });
      summary.failed.push({ reportId: report.reportId, message: sent.message });
    } else {
      await update(report.reportId, { state: "queued", error: null });
      summary.stopped = sent.outcome;
      summary.message = sent.message;
      if (sent.outcome === "unauthenticated") {
        announce({ type: "unauthenticated", message: sent.message });
      }
      break;
    }
  }
  announce({ type: "changed" });
  return summary;
}

// Send every queued report with `key`, one sender at a time across the page and the
// worker; what was sent and failed, and why the round stopped early (null: it did not).
export async function sendQueued(key) {
  if (!key) return { sent: [], failed: [], stopped: "no-key", message: "no API key on this device" };
  if (typeof navigator !== "undefined" && navigator.locks) {
    return navigator.locks.request(LOCK, () => round(key));
  }
  return round(key);  // no Web Locks here: the report id keeps a second send harmless
}
