// The engineers' live board: the open alarms (newest first), the open CAPAs by state as a
// kanban (workflow order), and what is past due, every card linking to its root cause,
// recall scope and 3D view as the API gives them.
//
// Nothing is polled. The server pushes the whole board over the `boardUpdates`
// subscription — at once, then after every change — on a WebSocket at /graphql speaking
// graphql-transport-ws, written out here: connection_init carrying the key (a browser
// cannot send headers with a WebSocket), subscribe, next, complete, ping/pong. When the
// socket drops the page reconnects with a growing, jittered delay and says so; a socket
// silent for a while is pinged, and one that does not answer is given up and replaced
// (a network that vanishes without closing the connection is found that way).
//
// Each board is painted by difference: cards are keyed by uid and kept, moved or
// removed, never rebuilt, so what the reader looks at stays put; a card that was not on
// the board before is highlighted for a moment.
//
// /board#key=<API key>
// window.sqemsBoard describes what is shown and the socket's state, for scripts and
// browser tests.

import { apiKey, forgetKey, showError } from "/viewer/app/api.js";

export const QUERY = `subscription BoardUpdates {
  boardUpdates {
    generatedAt
    alarmCount
    alarms {
      uid rule severity message raisedAt machine line parameter capa
      links { rootCause recall view3d }
    }
    columns {
      status
      cards {
        uid title status priority owner verifier dueAt overdue addresses
        links { rootCause recall view3d }
      }
    }
    overdue { kind capa title owner dueAt daysOverdue }
  }
}`;

const PROTOCOL = "graphql-transport-ws";
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;
const SILENCE_MS = 25_000; // a socket quiet this long is pinged
const PONG_WAIT_MS = 10_000; // and given up when the pong does not come in this time
const AUTH_CODES = new Set(["UNAUTHENTICATED", "FORBIDDEN"]);
const COLUMN_LABELS = { reported: "Reported", triaged: "Triaged", assigned: "Assigned",
                        in_action: "In action", verifying: "Verifying", reopened: "Reopened" };
const LINKS = [["rootCause", "root cause"], ["recall", "recall"], ["view3d", "3D view"]];

const $ = (id) => document.getElementById(id);
const shown = { state: "loading", live: "connecting", query: QUERY, boards: 0, connections: 0,
                alarms: [], alarmCount: null, columns: {}, overdue: [], fresh: [], highlighted: [],
                moved: [], drops: 0, pinged: 0, ponged: 0,
                generatedAt: null, error: null };
window.sqemsBoard = shown;

// --- text ----------------------------------------------------------------------------

const lower = (v) => (v == null ? "" : String(v).toLowerCase());
const when = (iso) => (iso ? new Date(iso).toLocaleString("en-GB", {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }) : "—");
const day = (iso) => (iso ? new Date(iso).toLocaleDateString("en-GB", {
  day: "numeric", month: "short", year: "numeric" }) : "—");
const plural = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
const columnLabel = (status) => COLUMN_LABELS[status] || status.replace(/_/g, " ");

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function links(cardLinks) {
  const nav = el("p", "links");
  for (const [field, label] of LINKS) {
    const href = cardLinks && cardLinks[field];
    if (!href) continue;
    const a = el("a", null, label);
    a.href = href;
    a.dataset.link = field;
    nav.append(a);
  }
  return nav;
}

// --- cards -----------------------------------------------------------------------------

function alarmCard(a) {
  const li = el("li", `card alarm sev-${lower(a.severity)}`);
  const head = el("p", "head");
  head.append(el("span", "badge", lower(a.severity) || "alarm"), el("b", null, a.rule),
              el("time", "at", when(a.raisedAt)));
  head.lastChild.dateTime = a.raisedAt || "";
  li.append(head);
  const where = [a.machine, a.line, a.parameter].filter(Boolean).join(" · ");
  if (where) li.append(el("p", "where", where));
  if (a.message) li.append(el("p", "message", a.message));
  if (a.capa) {
    const p = el("p", "capa", "CAPA ");
    const to = el("a", null, a.capa);
    to.href = `#capa-${a.capa}`;
    p.append(to);
    li.append(p);
  }
  li.append(links(a.links));
  return li;
}

function capaCard(c) {
  const li = el("li", `card capa prio-${lower(c.priority) || "none"}${c.overdue ? " overdue" : ""}`);
  li.id = `capa-${c.uid}`;
  const head = el("p", "head");
  head.append(el("span", "badge", lower(c.priority) || "no priority"), el("b", "uid", c.uid));
  li.append(head);
  li.append(el("p", "title", c.title || "(untitled)"));
  const people = el("dl", "people");
  for (const [term, value] of [["owner", c.owner], ["verifier", c.verifier]]) {
    people.append(el("dt", null, term), el("dd", value ? null : "none", value || "—"));
  }
  li.append(people);
  const due = el("p", "due", c.dueAt ? `due ${day(c.dueAt)}` : "no due date");
  if (c.overdue) due.append(" ", el("strong", "late", "overdue"));
  li.append(due);
  if (c.addresses && c.addresses.length) {
    // an excursion's CAPA may address many alarms with long uids: the first, and a count
    const [first, ...rest] = c.addresses;
    const p = el("p", "addresses", `addresses ${first}${rest.length ? ` and ${rest.length} more` : ""}`);
    p.title = c.addresses.join("\n");
    li.append(p);
  }
  li.append(links(c.links));
  return li;
}

function overdueRow(o) {
  const li = el("li", `row ${lower(o.kind)}`);
  const days = Math.floor(Number(o.daysOverdue) || 0);
  li.append(el("span", "days", `${days} d`));
  const what = el("span", "what");
  const to = el("a", null, o.capa);
  to.href = `#capa-${o.capa}`;
  what.append(el("span", "kind", lower(o.kind) === "action" ? "action of " : "CAPA "), to,
              " ", el("span", "title", o.title || ""));
  li.append(what);
  li.append(el("span", "who", `${o.owner || "no owner"} · due ${day(o.dueAt)}`));
  return li;
}

// --- painting by difference ------------------------------------------------------------

const painted = { alarms: new Map(), capas: new Map(), overdue: new Map(), columns: new Map(),
                  first: true };

function flash(node) {
  node.classList.remove("fresh");
  void node.offsetWidth; // restart the animation when the card was already highlighted
  node.classList.add("fresh");
  node.addEventListener("animationend", () => node.classList.remove("fresh"), { once: true });
}

// Make `list` hold exactly `items`, in order, each as the node `make(item)` draws, reusing
// the node already drawn for the same key unless its content changed. A node that is
// already in its place is not touched (no reflow, no lost focus or selection).
function reconcile(list, items, keyOf, make, known, { highlight }) {
  const keep = new Set();
  const fresh = [];
  let cursor = list.firstChild;
  for (const item of items) {
    const key = keyOf(item);
    keep.add(key);
    const sign = JSON.stringify(item);
    let node = known.get(key);
    const isNew = !node;
    if (!node || node.dataset.sign !== sign) {
      const drawn = make(item);
      drawn.dataset.key = key;
      drawn.dataset.sign = sign;
      if (node) {
        if (node.classList.contains("fresh")) drawn.classList.add("fresh");
        if (node.parentNode) node.replaceWith(drawn);
        if (cursor === node) cursor = drawn;
      }
      node = drawn;
      known.set(key, node);
    }
    if (node !== cursor) list.insertBefore(node, cursor);
    else cursor = cursor.nextSibling;
    if (isNew && highlight) {
      flash(node);
      fresh.push(key);
    }
  }
  for (const [key, node] of known) {
    if (!keep.has(key) && node.parentNode === list) {
      node.remove();
      known.delete(key);
    }
  }
  return fresh;
}

function count(badge, n) {
  badge.textContent = n.toLocaleString("en");
  badge.classList.toggle("zero", n === 0);
}

function column(status) {
  let col = painted.columns.get(status);
  if (!col) {
    col = el("section", "column");
    col.dataset.status = status;
    const title = el("h3");
    title.append(el("span", "label", columnLabel(status)), " ", el("span", "count", "0"));
    const list = el("ol", "cards");
    col.append(title, list);
    painted.columns.set(status, col);
  }
  return col;
}

function paint(board) {
  const highlight = !painted.first;
  const fresh = reconcile($("alarm-list"), board.alarms, (a) => a.uid, alarmCard,
                          painted.alarms, { highlight });
  count($("alarm-count"), board.alarmCount);
  $("alarm-shown").textContent = board.alarmCount > board.alarms.length
    ? `newest ${board.alarms.length} shown` : "newest first";
  $("alarms-none").hidden = board.alarms.length > 0;

  // the columns in the order the API gives (workflow order), each kept across boards
  const kanban = $("kanban");
  const statuses = board.columns.map((c) => lower(c.status));
  let cursor = kanban.firstChild;
  for (const status of statuses) {
    const col = column(status);
    if (col !== cursor) kanban.insertBefore(col, cursor);
    else cursor = cursor.nextSibling;
  }
  for (const [status, col] of painted.columns) {
    if (!statuses.includes(status)) {
      col.remove();
      painted.columns.delete(status);
    }
  }
  // a card moving between columns leaves its old list first, so the reconcile of its new
  // column finds it detached and puts it in place
  const byStatus = new Map(board.columns.map((c) => [lower(c.status), c.cards]));
  const stays = new Map();
  for (const [status, cards] of byStatus) for (const c of cards) stays.set(c.uid, status);
  for (const [uid, node] of painted.capas) {
    const now = stays.get(uid);
    if (!now) {
      node.remove();
      painted.capas.delete(uid);
    } else if (node.closest(".column")?.dataset.status !== now) {
      node.remove();
      if (!painted.first) node.dataset.moved = "1";
    }
  }
  let total = 0;
  const movedNow = [];
  for (const [status, cards] of byStatus) {
    const col = painted.columns.get(status);
    const moved = cards.filter((c) => painted.capas.get(c.uid)?.dataset.moved);
    fresh.push(...reconcile(col.querySelector("ol"), cards, (c) => c.uid, capaCard,
                            painted.capas, { highlight }));
    for (const c of moved) {
      const node = painted.capas.get(c.uid);
      delete node.dataset.moved;
      flash(node);
      movedNow.push(c.uid);
    }
    count(col.querySelector("h3 .count"), cards.length);
    col.classList.toggle("empty", cards.length === 0);
    total += cards.length;
  }
  count($("capa-count"), total);

  reconcile($("overdue-list"), board.overdue, (o) => `${lower(o.kind)}:${o.capa}:${o.dueAt}:${o.title}`,
            overdueRow, painted.overdue, { highlight: false });
  count($("overdue-count"), board.overdue.length);
  $("overdue-none").hidden = board.overdue.length > 0;
  $("updated").textContent = `as of ${when(board.generatedAt)}`;
  painted.first = false;

  Object.assign(shown, {
    state: "ready", boards: shown.boards + 1, generatedAt: board.generatedAt,
    alarmCount: board.alarmCount, alarms: board.alarms.map((a) => a.uid), fresh,
    highlighted: [...shown.highlighted, ...fresh], moved: [...shown.moved, ...movedNow],
    columns: Object.fromEntries([...byStatus].map(([s, cards]) => [s, cards.map((c) => c.uid)])),
    overdue: board.overdue.map((o) => `${lower(o.kind)}:${o.capa}`),
  });
  document.body.dataset.state = "ready";
}

// --- the socket --------------------------------------------------------------------------

const link = { key: null, ws: null, acked: false, subscription: null, next: 0, attempt: 0,
               retry: null, heardAt: 0, pingAt: 0, watch: null, asking: false };

function setLive(live, text) {
  const badge = $("live");
  badge.dataset.live = live;
  badge.textContent = text;
  badge.title = "";
  document.body.dataset.live = live;
  shown.live = live;
}

function send(ws, message) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function connect() {
  clearTimeout(link.retry);
  link.retry = null;
  if (link.ws) { // never two sockets: the one replaced would stay subscribed unseen
    const old = link.ws;
    link.ws = null;
    old.close(1000, "replaced");
  }
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
                           PROTOCOL);
  Object.assign(link, { ws, acked: false, subscription: null, heardAt: Date.now(), pingAt: 0 });
  shown.connections += 1;
  ws.addEventListener("open", () => {
    send(ws, { type: "connection_init", payload: { authorization: `Bearer ${link.key}` } });
  });
  ws.addEventListener("message", (event) => {
    if (ws === link.ws) receive(ws, JSON.parse(event.data));
  });
  ws.addEventListener("close", (event) => {
    if (ws !== link.ws) return;
    link.ws = null;
    if (event.code === 4401 || event.code === 4403) refused("the server refused the key");
    else later(event.code === 1000 ? "the server closed the connection"
                                   : `the connection dropped (${event.code})`);
  });
}

function receive(ws, message) {
  link.heardAt = Date.now();
  switch (message.type) {
    case "connection_ack":
      link.acked = true;
      link.subscription = String(++link.next);
      send(ws, { id: link.subscription, type: "subscribe", payload: { query: QUERY } });
      break;
    case "next": {
      if (message.id !== link.subscription) break;
      const { data, errors } = message.payload;
      if (errors && errors.length) {
        failed(errors);
        break;
      }
      link.attempt = 0;
      setLive("live", "live");
      $("error").hidden = true;
      shown.error = null;
      paint(data.boardUpdates);
      break;
    }
    case "error": // the subscription was refused before it ran (a query the server cannot run)
      if (message.id === link.subscription) failed(message.payload);
      break;
    case "complete": // the server ended the subscription: ask for it again on a fresh socket
      if (message.id === link.subscription) drop("the server ended the subscription");
      break;
    case "ping":
      send(ws, { type: "pong" });
      break;
    case "pong":
      link.pingAt = 0;
      shown.ponged += 1;
      break;
    default:
      break;
  }
}

// The socket is given up: the next one is opened after a delay that doubles with every
// attempt in a row (with jitter, so that a room of screens does not return at once).
function drop(reason) {
  const ws = link.ws;
  link.ws = null;
  if (ws) ws.close(1000, "reconnecting");
  later(reason);
}

function later(reason) {
  clearTimeout(link.retry);
  const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** link.attempt)
    * (0.8 + 0.4 * Math.random());
  link.attempt += 1;
  shown.drops += 1;
  shown.lastDrop = reason;
  if (!navigator.onLine) setLive("offline", "offline — reconnecting when the network returns");
  else setLive("reconnecting", "reconnecting…");
  $("live").title = `${reason}; next attempt in ${Math.round(delay / 1000)} s`;
  link.retry = setTimeout(connect, delay);
}

function failed(errors) {
  const error = errors[0] || {};
  const code = error.extensions && error.extensions.code;
  const message = code ? `${error.message} (${code})` : String(error.message);
  shown.error = message;
  if (AUTH_CODES.has(code)) {
    refused(message);
    return;
  }
  showError(new Error(`The board's updates stopped: ${message}`));
  drop(message);
}

// The key does not work (revoked, unknown, or too weak a role): it is forgotten and
// another is asked for; the board stays as it was until one works.
async function refused(message) {
  const ws = link.ws;
  link.ws = null;
  if (ws) ws.close(1000, "key refused");
  clearTimeout(link.retry);
  link.retry = null;
  if (link.asking) return; // the dialog is open already
  link.asking = true;
  forgetKey();
  setLive("refused", "key refused");
  showError(new Error(`${message} — enter another API key`));
  link.key = await apiKey();
  link.asking = false;
  $("error").hidden = true;
  link.attempt = 0;
  connect();
}

// A socket that has been silent for a while is pinged; one that does not answer is dead
// without having said so (a network gone, a proxy that dropped it) and is replaced.
function watch() {
  const ws = link.ws;
  if (!ws || !link.acked || ws.readyState !== WebSocket.OPEN) return;
  const now = Date.now();
  if (link.pingAt && now - link.pingAt > PONG_WAIT_MS) {
    drop("the server stopped answering");
  } else if (!link.pingAt && now - link.heardAt > SILENCE_MS) {
    link.pingAt = now;
    shown.pinged += 1;
    send(ws, { type: "ping" });
  }
}

function reconnectNow() {
  if (!link.key || link.ws || !link.retry || link.asking) return;
  link.attempt = 0;
  connect();
}

async function main() {
  link.key = await apiKey();
  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!link.ws) setLive("offline", "offline — reconnecting when the network returns");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });
  link.watch = setInterval(watch, 5_000);
  setLive("connecting", "connecting…");
  connect();
}

main().catch((error) => {
  shown.state = "error";
  shown.error = String(error.message || error);
  showError(error);
});
