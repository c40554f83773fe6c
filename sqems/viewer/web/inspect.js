// SQEMS Inspect, the inspector's phone app (an installable web app at /inspect): scan a
// unit, batch or lot code with the back camera (or type it) and see what it is; report a
// defect with photos, queued on the phone (outbox.js) and sent when the network allows;
// hold a batch (engineer role); sign the CAPA tasks that wait for the user (approve /
// reject as verifier, submit as owner), each signature asking for the signer's
// credential again. The API key is entered once and kept in this device's storage
// (localStorage "sqems.inspect.apiKey", a copy in the outbox's IndexedDB for the service
// worker) until the user forgets it or the API refuses it (then a new one is asked for;
// queued reports stay queued).
//
// /inspect?code=U-000042#key=<API key>   (both optional: ?code= looks the code up at once;
// #key= is kept as the device's key, then removed from the address)
//
// For scripts and browser tests:
//   window.sqemsInspect — what is shown: { state: "loading"|"ready"|"error", view,
//     me, identified (the last identify answer, or { kind: null, uid: code } offline),
//     lookup: "idle"|"loading"|"shown"|"offline"|"not-found", refreshed (how many
//     times the card shown was looked up again: after a report on it was sent, or when
//     the network returned), restored (the code of the card shown from memory when the
//     app opened offline), decoder ("BarcodeDetector"
//     | "zxing-wasm" once the camera scanned; decoderNote: why not the former), camera: "off"|"scan"|"photo", scanned (the
//     last decoded text), photos (in the open report form), queue: [{ reportId, state,
//     error, target }], sent: [{ reportId, defect, created, photos }], tasks: [{ uid,
//     action }], serviceWorker: "unsupported"|"registering"|"registered"|"active"|"failed",
//     sync: "background-sync"|"page-only" (syncRefused: why, when the browser refused it) }
//   body[data-state] as above; body[data-view] the open view; body[data-online].
//   Views: #view-scan, #view-tasks, #view-queue, #view-settings; tabs: nav#tabs
//     button[data-goto=scan|tasks|queue|settings]; #queue-badge (count of waiting reports).
//   Scan: #scan-start, #camera[data-mode=off|scan|photo], #camera-video, #camera-status,
//     #camera-close, #code-form, #code-input, #code-submit, #lookup-message.
//   Unit card: #unit-card[data-kind][data-uid], #unit-kind, #unit-uid, #unit-product,
//     #unit-batch, #unit-status, #unit-defects, #unit-held, #unit-capas (li[data-capa]),
//     #unit-recent (li[data-defect]), #unit-stale (shown when offline from memory),
//     #report-open, #hold-open (only with me.canHold and a batch).
//   Report: #report-form, #report-target, #report-type (select of defect type uids),
//     input[name=severity] (MINOR|MAJOR|CRITICAL), #report-note, #photo-camera (opens
//     the camera for photos), #photo-shutter (grabs one), #photo-file (file input),
//     #photos[data-count] > li.thumb[data-index] > button[data-remove], #report-submit,
//     #report-cancel, #report-message.
//   Hold: #hold-form, #hold-batch, #hold-reason, #hold-submit, #hold-message.
//   Queue: #queue-count[data-count], #queue-list > li[data-report-id][data-state=queued|
//     sending|failed] with .error and button[data-retry] / button[data-discard];
//     #queue-send; #sent-list > li[data-report-id][data-defect][data-created].
//   Tasks: #tasks-list > li[data-capa][data-action=submit|verify|""][data-as] with
//     button[data-sign=approve|reject|submit]; #tasks-status; #tasks-refresh.
//   Signature dialog: #sign-dialog[data-action][data-capa], #sign-meaning, #sign-signer,
//     #sign-note, #sign-credential, #sign-submit, #sign-cancel, #sign-error.
//   Settings: #me-name, #me-role, #key-state, #key-forget, #signing-form,
//     #signing-current, #signing-new, #signing-repeat, #signing-submit, #signing-message.
//   Key dialog: #key-dialog, #key-reason, #key-details > #key-detail (what the server
//     said), #key-input, #key-submit, #key-error.
//   #toast (short notices), #error (a failure of the page itself).

import { Camera, decoder, grabPhoto, photoFromFile } from "/viewer/app/inspect-camera.js";
import {
  addReport, CHANNEL, discardReport, listReports, retryReport, sendQueued, setKey, SYNC_TAG,
} from "/viewer/app/outbox.js";

const KEY_STORE = "sqems.inspect.apiKey";
const ME_STORE = "sqems.inspect.me";
const TYPES_STORE = "sqems.inspect.defectTypes";
const SEEN_STORE = "sqems.inspect.seen";
const SEEN_MAX = 50;
const SCAN_PAUSE_MS = 120;
const MAX_PHOTOS = 12;  // what the server takes with one report

const ME = `query Me { me { name role canReport canHold canApprove hasSigningPassword
  signingLockedUntil } }`;
const DEFECT_TYPES = `query DefectTypes { defectTypes { uid name category } }`;
const IDENTIFY = `query Identify($code: String!) {
  identify(code: $code) {
    code kind uid product productName batch status heldBatches material materialName
    openCapas { uid title status priority dueAt }
    defects
    recentDefects { uid type typeName severity foundAt evidence }
  }
}`;
const HOLD = `mutation HoldBatch($uid: String!, $reason: String!) {
  holdBatch(uid: $uid, reason: $reason) { uid ... on Batch { status } }
}`;
const MY_TASKS = `query MyTasks {
  myTasks { uid title status priority dueAt overdue as action problem rootCause corrective }
}`;
const VERIFY = `mutation VerifyCapa($uid: String!, $effective: Boolean!, $note: String!,
    $credential: String!) {
  verifyCapa(uid: $uid, effective: $effective, note: $note, credential: $credential) {
    uid ... on Capa { status }
  }
}`;
const SUBMIT = `mutation SubmitCapa($uid: String!, $credential: String) {
  submitCapa(uid: $uid, credential: $credential) { uid ... on Capa { status } }
}`;
const SET_SIGNING = `mutation SetSigningPassword($password: String!, $current: String) {
  setSigningPassword(password: $password, current: $current)
}`;

// What each signature means, stated in the dialog before the credential is asked for.
const SIGNATURES = {
  approve: {
    title: "Approve", button: "Sign: effective",
    meaning: (uid) => `I verified the actions of ${uid} and found them effective. Approving `
      + "closes the CAPA.",
  },
  reject: {
    title: "Reject", button: "Sign: not effective",
    meaning: (uid) => `I verified the actions of ${uid} and found them not effective. `
      + "Rejecting sends the CAPA back to action.",
  },
  submit: {
    title: "Submit", button: "Sign: submit",
    meaning: (uid) => `Actions completed, submitted for verification: I hand ${uid} to its `
      + "verifier.",
  },
};
const SIGNATURE_NOTE = " This electronic signature is recorded in the audit trail with your "
  + "name, the time and this meaning; it is the legally binding equivalent of your "
  + "handwritten signature.";

const $ = (id) => document.getElementById(id);
const shown = {
  state: "loading", view: "scan", me: null, identified: null, lookup: "idle",
  decoder: null, camera: "off", scanned: null, photos: 0, queue: [], sent: [], tasks: [],
  serviceWorker: "registering", sync: "page-only",
};
window.sqemsInspect = shown;

class ApiError extends Error {
  constructor(message, extensions) {
    super(message);
    this.code = (extensions && extensions.code) || null;
    this.extensions = extensions || {};
  }
}

class Offline extends Error {}

// An element with attributes (`dataset` and `on…` handled) and children.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

function showError(error) {
  const box = $("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
  if (shown.state === "loading") {
    shown.state = "error";
    document.body.dataset.state = "error";
  }
}

function message(id, text, bad = false) {
  const box = $(id);
  box.textContent = text || "";
  box.hidden = !text;
  box.classList.toggle("bad", bad);
}

const when = (iso) => (iso ? new Date(iso).toLocaleString([], {
  dateStyle: "medium", timeStyle: "short" }) : "—");
const status = (value) => value.toLowerCase().replaceAll("_", " ");
const day = (iso) => (iso ? new Date(iso).toLocaleDateString([], { dateStyle: "medium" }) : "—");

// --- the API key and GraphQL -----------------------------------------------------------

const storedKey = () => localStorage.getItem(KEY_STORE);
let reached = null;  // whether the last request reached the server (null: none made yet)

async function keepKey(key) {
  localStorage.setItem(KEY_STORE, key);
  await setKey(key);
  renderKeyState();
}

async function forgetKey() {
  localStorage.removeItem(KEY_STORE);
  localStorage.removeItem(ME_STORE);
  await setKey(null);
  shown.me = null;
  renderMe();
}

async function request(query, variables, key) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    reached = false;
    throw new Offline(`no network (${error.message})`);
  }
  reached = true;
  let body;
  try {
    body = await response.json();
  } catch (error) {
    throw new ApiError(`the server answered ${response.status} without JSON`, {});
  }
  if (body.errors && body.errors.length) {
    throw new ApiError(body.errors[0].message, body.errors[0].extensions);
  }
  return body.data;
}

// A refused key, as opposed to a refused signature (whose credential was wrong while
// the key itself still works).
const keyRefused = (error) => error instanceof ApiError && error.code === "UNAUTHENTICATED"
  && error.extensions.signature !== "refused";

// A GraphQL call with the device's key. A refused key (revoked, expired) is forgotten and
// a new one asked for; then the call is made again with it.
async function gql(query, variables = {}) {
  for (;;) {
    const key = storedKey() || (await askKey(""));
    try {
      return await request(query, variables, key);
    } catch (error) {
      if (!keyRefused(error)) throw error;
      await keyWasRefused(error.message);
    }
  }
}

let asking = null;

// The server's own words about a refused key (they name the Authorization header, which
// means nothing on a phone), kept under the phone's message for whoever supports the user.
function keyDetail(text) {
  $("key-detail").textContent = text || "";
  $("key-details").hidden = !text;
}

// Ask for a key in the key dialog until one works (or, offline, keep it unchecked).
// `reason` says why (the phone's words), `detail` what the server said.
function askKey(reason, detail = "") {
  asking ??= new Promise((resolve) => {
    const dialog = $("key-dialog");
    const form = $("key-form");
    message("key-reason", reason, true);
    message("key-error", "");
    keyDetail(detail);
    $("key-input").value = "";
    const submit = async (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      $("key-submit").disabled = true;
      try {
        shown.me = (await request(ME, {}, key)).me;
        localStorage.setItem(ME_STORE, JSON.stringify(shown.me));
      } catch (error) {
        if (!(error instanceof Offline)) {
          message("key-error", keyRefused(error)
            ? "This key was refused too (revoked or mistyped): check it and try again."
            : error.message, true);
          keyDetail(keyRefused(error) ? error.message : "");
          return;
        }
        toast("No network: the key is kept, and checked when the network returns.");
      } finally {
        $("key-submit").disabled = false;
      }
      form.removeEventListener("submit", submit);
      await keepKey(key);
      dialog.close();
      asking = null;
      renderMe();
      resolve(key);
    };
    form.addEventListener("submit", submit);
    dialog.showModal();
    $("key-input").focus();
  });
  return asking;
}

// What a refused key means on the phone, and what becomes of the reports on it.
function refusedWords(waiting) {
  const queued = waiting === 1 ? "1 report stays queued" : `${waiting} reports stay queued`;
  return "This device's key was refused (revoked or mistyped). Enter a new key"
    + (waiting ? `; ${queued}.` : ".");
}

async function keyWasRefused(detail) {
  if (!asking) await forgetKey();
  const waiting = (await listReports()).length;
  await askKey(refusedWords(waiting), detail);
  await loadIdentity();
  sendNow();
}

// --- who I am, and the defect types (kept for offline use) -----------------------------

async function cached(query, store, pick) {
  try {
    const value = pick(await gql(query));
    localStorage.setItem(store, JSON.stringify(value));
    return value;
  } catch (error) {
    if (!(error instanceof Offline)) throw error;
    return JSON.parse(localStorage.getItem(store) || "null");
  }
}

async function loadIdentity() {
  shown.me = await cached(ME, ME_STORE, (d) => d.me);
  renderMe();
  const types = await cached(DEFECT_TYPES, TYPES_STORE, (d) => d.defectTypes);
  renderTypes(types || []);
}

function renderMe() {
  const me = shown.me;
  $("me-name").textContent = me ? me.name : "—";
  $("me-role").textContent = me ? me.role : "—";
  const has = Boolean(me && me.hasSigningPassword);
  $("signing-current").hidden = !has;
  $("signing-current-label").hidden = !has;
  $("signing-current").required = has;
  $("signing-submit").textContent = has ? "Change signing password" : "Set signing password";
  $("signing-title").textContent = has ? "Signing password (set)" : "Signing password (not set)";
  renderKeyState();
  renderCard();
}

function renderKeyState() {
  const key = storedKey();
  // a key reads sqems_<id>_<secret>: its id names it without giving any of the secret away
  const id = key && key.split("_").length >= 3 ? key.split("_")[1] : null;
  $("key-state").textContent = key
    ? `This device keeps an API key${id ? ` (id ${id})` : ""}. Forgetting it signs this phone out; `
      + "queued reports stay queued until a key is entered again."
    : "No key on this device.";
  $("key-forget").disabled = !key;
}

function renderTypes(types) {
  const select = $("report-type");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "— choose the defect type —"),
    ...types.map((t) => el("option", { value: t.uid, "data-category": t.category },
                           `${t.name} (${t.category})`)));
  if (types.some((t) => t.uid === chosen)) select.value = chosen;
}

// --- views -----------------------------------------------------------------------------

function go(view) {
  shown.view = view;
  document.body.dataset.view = view;
  for (const panel of document.querySelectorAll("[data-view-panel]")) {
    panel.hidden = panel.dataset.viewPanel !== view;
  }
  for (const tab of document.querySelectorAll("#tabs [data-goto]")) {
    if (tab.dataset.goto === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  if (view !== "scan") closeCamera();
  if (view === "tasks") loadTasks().catch(showError);
  if (view === "queue") renderQueue().catch(showError);
  window.scrollTo(0, 0);
}

function online(isOnline) {
  document.body.dataset.online = String(isOnline);
  $("net").dataset.online = String(isOnline);
  $("net").textContent = isOnline ? "online" : "offline";
}

// --- camera: scanning and photos -------------------------------------------------------

const camera = new Camera($("camera-video"));
let scanning = false;

function cameraStatus(text) {
  $("camera-status").textContent = text;
}

async function openCamera(mode) {
  scanning = false;
  const box = $("camera");
  box.hidden = false;
  box.dataset.mode = mode;
  shown.camera = mode;
  cameraStatus("Starting the camera…");
  try {
    await camera.start();
  } catch (error) {
    closeCamera();
    const denied = error.name === "NotAllowedError";
    throw new Error(denied ? "The camera is not allowed for this site: allow it in the "
                             + "browser's site settings, or type the code."
                           : `The camera could not start: ${error.message}`);
  }
  box.scrollIntoView({ block: "nearest" });
  if (mode === "scan") await scan();
  else cameraStatus("Aim at the defect and take a photo; close the camera when done.");
}

function closeCamera() {
  scanning = false;
  camera.stop();
  $("camera").hidden = true;
  $("camera").dataset.mode = "off";
  shown.camera = "off";
}

async function scan() {
  scanning = true;
  let reader;
  try {
    cameraStatus("Loading the code reader…");
    reader = await decoder();
  } catch (error) {
    closeCamera();
    throw new Error(`The code reader could not load (${error.message}): type the code.`);
  }
  shown.decoder = reader.name;
  shown.decoderNote = reader.note;
  cameraStatus(`Aim at the code: QR, DataMatrix or Code 128 (${reader.name}).`);
  while (scanning) {
    const text = camera.live ? await reader.read(camera.video) : null;
    if (text && scanning) {
      shown.scanned = text;
      closeCamera();
      if (navigator.vibrate) navigator.vibrate(60);
      $("code-input").value = text;
      await lookup(text);
      // a GS1 code's raw data (its ]d2 and GS characters) means nothing to a reader: the
      // field shows what it named instead, which looks the same card up when sent again
      if (/[\x00-\x1f]|^\]/.test(text) && shown.identified && shown.identified.kind) {
        $("code-input").value = shown.identified.uid;
      }
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, SCAN_PAUSE_MS));
  }
}

// --- what a code is --------------------------------------------------------------------

function remember(code, item) {
  const seen = JSON.parse(localStorage.getItem(SEEN_STORE) || "[]")
    .filter((s) => s.code !== code && s.item.uid !== item.uid);
  seen.unshift({ code, at: new Date().toISOString(), item });
  localStorage.setItem(SEEN_STORE, JSON.stringify(seen.slice(0, SEEN_MAX)));
}

function recall(code) {
  const seen = JSON.parse(localStorage.getItem(SEEN_STORE) || "[]");
  return seen.find((s) => s.code === code || s.item.uid === code) || null;
}

// The card shown last (the newest remembered lookup), for an app opened offline.
function lastSeen() {
  const seen = JSON.parse(localStorage.getItem(SEEN_STORE) || "[]");
  return seen.length ? seen[0] : null;
}

// Look the card shown up again, without touching an open form or the scroll position:
// after a report on it was sent (its defect count and recent defects changed), or when
// the network returns under a card shown from memory. Offline it stays as it is.
function refreshCard() {
  const item = shown.identified;
  if (!item) return;
  clearTimeout(refreshCard.timer);  // several reports sent in one round: one look-up
  refreshCard.timer = setTimeout(() => {
    const code = item.code || item.uid;
    const mine = lookups;
    gql(IDENTIFY, { code }).then(({ identify: fresh }) => {
      if (mine !== lookups || !shown.identified || shown.identified.uid !== item.uid) return;
      remember(code, fresh);
      shown.identified = fresh;
      shown.identifiedStale = null;
      shown.lookup = "shown";
      shown.refreshed = (shown.refreshed || 0) + 1;
      renderCard();
    }).catch((error) => {
      if (!(error instanceof Offline)) toast(`${item.uid} could not be looked up again: ${error.message}`);
    });
  }, 250);
}

let lookups = 0;

async function lookup(code) {
  code = code.trim();
  if (!code) return;
  const mine = ++lookups;
  shown.lookup = "loading";
  message("lookup-message", `Looking up ${code}…`);
  closeForms();
  try {
    const item = (await gql(IDENTIFY, { code })).identify;
    if (mine !== lookups) return;
    remember(code, item);
    showIdentified(item, null);
    shown.lookup = "shown";
    message("lookup-message", "");
  } catch (error) {
    if (mine !== lookups) return;
    if (error instanceof Offline) {
      const seen = recall(code);
      showIdentified(seen ? seen.item : { code, kind: null, uid: code }, seen ? seen.at : "");
      shown.lookup = "offline";
      message("lookup-message", "");
    } else if (error instanceof ApiError && error.code === "NOT_FOUND") {
      shown.identified = null;
      shown.lookup = "not-found";
      $("unit-card").hidden = true;
      message("lookup-message", error.message, true);
    } else {
      shown.lookup = "idle";
      message("lookup-message", error.message, true);
    }
  }
}

// `stale`: null (fresh from the server), an ISO time (remembered, offline) or "" (unknown:
// offline and never seen).
function showIdentified(item, stale) {
  shown.identified = item;
  shown.identifiedStale = stale;
  renderCard();
  $("unit-card").scrollIntoView({ block: "nearest" });
}

function renderCard() {
  const item = shown.identified;
  const card = $("unit-card");
  if (!item) {
    card.hidden = true;
    return;
  }
  const stale = shown.identifiedStale;
  card.hidden = false;
  card.dataset.kind = item.kind || "";
  card.dataset.known = String(item.kind != null);
  card.dataset.uid = item.uid;
  const kinds = { Unit: "Unit", Batch: "Batch", MaterialLot: "Material lot" };
  $("unit-kind").textContent = kinds[item.kind] || "Code";
  $("unit-uid").textContent = item.uid;
  message("unit-stale", stale === null ? ""
    : stale ? `No network: as seen on ${when(stale)}.`
    : "No network: not looked up. You can still report a defect on it; the server "
      + "checks the code when the report is sent.");
  const known = item.kind != null;
  const [name, uid] = item.kind === "MaterialLot" ? [item.materialName, item.material]
    : [item.productName, item.product];
  $("unit-product").replaceChildren(...(name || uid ? [name || uid, name && uid
    ? el("small", {}, uid) : null].filter(Boolean) : ["—"]));
  $("unit-product").previousElementSibling.textContent =
    item.kind === "MaterialLot" ? "Material" : "Product";
  $("unit-batch").textContent = item.batch || "—";
  $("unit-status").textContent = item.status ? status(item.status) : "—";
  $("unit-status").dataset.status = item.status || "";
  $("unit-defects").textContent = known ? String(item.defects) : "—";
  const held = item.heldBatches || [];
  $("unit-held").hidden = !held.length;
  $("unit-held").textContent = held.length ? `On hold: ${held.join(", ")}` : "";
  const capas = item.openCapas || [];
  $("unit-capas").replaceChildren(...(capas.length ? capas.map((c) => el("li",
    { dataset: { capa: c.uid } },
    el("b", {}, c.uid), ` ${c.title} `,
    el("small", {}, [status(c.status), c.priority && c.priority.toLowerCase(),
                     c.dueAt && `due ${day(c.dueAt)}`]
      .filter(Boolean).join(" · "))))
    : [el("li", { className: "none" }, known ? "none" : "—")]));
  const recent = item.recentDefects || [];
  $("unit-recent").replaceChildren(...(recent.length ? recent.map((d) => el("li",
    { dataset: { defect: d.uid } },
    el("b", {}, d.typeName || d.type), ` ${d.severity.toLowerCase()} `,
    el("small", {}, `${when(d.foundAt)}${d.evidence ? ` · ${d.evidence} photo(s)` : ""} · ${d.uid}`)))
    : [el("li", { className: "none" }, known ? "none" : "—")]));
  const me = shown.me;
  const reportable = !known || item.kind === "Unit" || item.kind === "Batch";
  $("report-open").hidden = !reportable || (me != null && !me.canReport);
  $("hold-open").hidden = !(me && me.canHold && item.batch && known);
  $("hold-open").textContent = held.includes(item.batch) ? "Batch is on hold" : "Hold batch";
  $("hold-open").disabled = held.includes(item.batch);
}

// --- reporting a defect ----------------------------------------------------------------

let photos = [];

function closeForms() {
  $("report-form").hidden = true;
  $("hold-form").hidden = true;
  if (shown.camera === "photo") closeCamera();
}

function openReport() {
  const item = shown.identified;
  closeForms();
  $("report-form").hidden = false;
  $("report-target").textContent = item.uid;
  $("report-note").value = "";
  setPhotos([]);
  message("report-message", $("report-type").options.length > 1 ? ""
    : "The defect types have not been loaded yet (the phone needs the network once).", true);
  $("report-form").scrollIntoView({ block: "start" });
}

function setPhotos(next) {
  for (const p of photos) if (!next.includes(p)) URL.revokeObjectURL(p.url);
  photos = next;
  shown.photos = photos.length;
  $("photos").dataset.count = String(photos.length);
  $("photo-camera").disabled = photos.length >= MAX_PHOTOS;
  $("photo-shutter").disabled = photos.length >= MAX_PHOTOS;
  $("photos").replaceChildren(...photos.map((p, i) => el("li",
    { className: "thumb", dataset: { index: String(i), width: String(p.width),
                                     height: String(p.height), bytes: String(p.blob.size) } },
    el("img", { src: p.url, alt: `photo ${i + 1}` }),
    el("button", { type: "button", "data-remove": String(i), "aria-label": `remove photo ${i + 1}`,
                   onclick: () => setPhotos(photos.filter((q) => q !== p)) }, "×"))));
}

function addPhoto(photo) {
  if (photos.length >= MAX_PHOTOS) {
    message("report-message", `At most ${MAX_PHOTOS} photos go with one report.`, true);
    return;
  }
  setPhotos([...photos, { ...photo, url: URL.createObjectURL(photo.blob) }]);
}

async function submitReport(event) {
  event.preventDefault();
  const item = shown.identified;
  const type = $("report-type");
  if (!type.value) {
    message("report-message", "Choose the defect type.", true);
    return;
  }
  const report = {
    reportId: crypto.randomUUID(),
    target: item.uid,
    code: item.code || item.uid,
    kind: item.kind,
    defectType: type.value,
    defectTypeName: type.selectedOptions[0].textContent,
    severity: document.querySelector("input[name=severity]:checked").value,
    note: $("report-note").value.trim(),
    foundAt: new Date().toISOString(),
    photos: photos.map((p, i) => ({ blob: p.blob, name: `photo-${i + 1}.jpg` })),
  };
  $("report-submit").disabled = true;
  try {
    await addReport(report);  // on the phone first: from here on it is never lost
  } finally {
    $("report-submit").disabled = false;
  }
  closeForms();
  setPhotos([]);
  toast(`Report on ${report.target} saved on the phone${navigator.onLine ? "; sending…" : "; it is sent when the network returns."}`);
  await renderQueue();
  await askForSync();
  sendNow();
}

// Background Sync, where the browser has it: the worker sends the queue when the network
// returns even if the app was closed.
async function askForSync() {
  if (!("serviceWorker" in navigator)) return;
  const registration = await navigator.serviceWorker.getRegistration("/inspect");
  if (!registration || !("sync" in registration)) return;
  try {
    await registration.sync.register(SYNC_TAG);
    shown.sync = "background-sync";
  } catch (error) {
    // the browser refuses Background Sync to this site (its permission, a private
    // window): the page sends the queue itself, when it is open
    shown.sync = "page-only";
    shown.syncRefused = `${error.name}: ${error.message}`;
  }
}

let sending = null;
let again = false;

// One sending round at a time from this page (the outbox's lock keeps the worker apart);
// a report written during a round is sent by another round right after it.
function sendNow() {
  const key = storedKey();
  if (!key) return Promise.resolve(null);
  if (sending) {
    again = true;
    return sending;
  }
  again = false;
  sending = sendQueued(key)
    .catch((error) => { showError(error); return null; })
    .finally(() => {
      sending = null;
      if (again) sendNow();
    });
  return sending;
}

async function renderQueue() {
  const reports = await listReports();
  shown.queue = reports.map((r) => ({ reportId: r.reportId, state: r.state, error: r.error,
                                      target: r.target }));
  const waiting = reports.length;
  $("queue-count").textContent = `${waiting} on the phone`;
  $("queue-count").dataset.count = String(waiting);
  $("queue-badge").textContent = String(waiting);
  $("queue-badge").hidden = waiting === 0;
  $("queue-tab-count").textContent = String(waiting);
  $("queue-tab-count").hidden = waiting === 0;
  $("queue-empty").hidden = waiting > 0;
  $("queue-send").hidden = !reports.some((r) => r.state !== "failed");
  const states = { queued: "waiting to be sent", sending: "sending…", failed: "refused" };
  $("queue-list").replaceChildren(...reports.map((r) => el("li",
    { dataset: { reportId: r.reportId, state: r.state } },
    el("div", { className: "what" }, el("b", {}, r.defectTypeName), " on ", el("b", {}, r.target)),
    el("small", {}, `${r.severity.toLowerCase()} · ${r.photos.length} photo(s) · written `
                    + `${when(r.foundAt)}${r.attempts ? ` · tried ${r.attempts}×` : ""}`),
    el("span", { className: `state ${r.state}` }, states[r.state] || r.state),
    r.error ? el("p", { className: "error" }, r.error) : null,
    el("div", { className: "actions" },
      r.state === "failed" ? el("button", { type: "button", "data-retry": r.reportId,
        onclick: () => retryReport(r.reportId).then(sendNow).catch(showError) }, "Try again") : null,
      r.state !== "sending" ? el("button", { type: "button", className: "danger",
        "data-discard": r.reportId,
        onclick: () => discardReport(r.reportId).catch(showError) }, "Discard") : null))));
}

function renderSent() {
  $("sent-title").hidden = !shown.sent.length;
  $("sent-list").replaceChildren(...shown.sent.map((s) => el("li",
    { dataset: { reportId: s.reportId, defect: s.defect || "", created: String(s.created) } },
    el("b", {}, s.defect), ` on ${s.target} `,
    el("small", {}, s.created ? `recorded with ${s.photos} photo(s)` : "already recorded"))));
}

function onOutboxMessage(event) {
  const note = event.data;
  if (note.type === "sent") {
    shown.sent = [note, ...shown.sent.filter((s) => s.reportId !== note.reportId)];
    renderSent();
    toast(`Sent: ${note.defect} on ${note.target}`);
    if (shown.identified && shown.identified.uid === note.target) refreshCard();
  } else if (note.type === "unauthenticated" && !asking && storedKey()) {
    keyWasRefused(note.message || "the server refused it").catch(showError);
  }
  renderQueue().catch(showError);
}

// --- holding a batch -------------------------------------------------------------------

function openHold() {
  closeForms();
  $("hold-form").hidden = false;
  $("hold-batch").textContent = shown.identified.batch;
  $("hold-reason").value = "";
  message("hold-message", "");
  $("hold-reason").focus();
}

async function submitHold(event) {
  event.preventDefault();
  const batch = shown.identified.batch;
  $("hold-submit").disabled = true;
  try {
    await gql(HOLD, { uid: batch, reason: $("hold-reason").value.trim() });
    $("hold-form").hidden = true;
    toast(`${batch} is on hold.`);
    await lookup(shown.identified.code || shown.identified.uid);
  } catch (error) {
    message("hold-message", error instanceof Offline
      ? "No network: a hold is not queued (it must reach the server now); try again."
      : error.message, true);
  } finally {
    $("hold-submit").disabled = false;
  }
}

// --- my tasks and signatures -----------------------------------------------------------

let tasks = [];

async function loadTasks() {
  $("tasks-status").textContent = "Loading…";
  try {
    tasks = (await gql(MY_TASKS)).myTasks;
  } catch (error) {
    $("tasks-status").textContent = error instanceof Offline
      ? "No network: your tasks need the server." : error.message;
    return;
  }
  shown.tasks = tasks.map((t) => ({ uid: t.uid, action: t.action }));
  const due = tasks.filter((t) => t.action).length;
  $("tasks-badge").textContent = String(due);
  $("tasks-badge").hidden = due === 0;
  $("tasks-status").textContent = tasks.length
    ? `${tasks.length} open CAPA(s) of yours; ${due} waiting for you.`
    : "No open CAPA has you as owner or verifier.";
  $("tasks-list").replaceChildren(...tasks.map(renderTask));
}

function renderTask(t) {
  const buttons = t.action === "verify"
    ? [el("button", { type: "button", className: "primary", "data-sign": "approve",
                      onclick: () => openSign(t, "approve") }, "Approve"),
       el("button", { type: "button", className: "danger", "data-sign": "reject",
                      onclick: () => openSign(t, "reject") }, "Reject")]
    : t.action === "submit"
      ? [el("button", { type: "button", className: "primary", "data-sign": "submit",
                        onclick: () => openSign(t, "submit") }, "Submit for verification")]
      : [el("small", {}, "Nothing to sign now.")];
  const asked = t.action === "verify" ? "Verify that the actions worked: approve or reject."
    : t.action === "submit" ? "The actions are recorded: submit them for verification."
    : `You are its ${t.as}; it is ${status(t.status)}.`;
  return el("li", { className: "card", dataset: { capa: t.uid, action: t.action || "", as: t.as,
                                                  overdue: String(t.overdue) } },
    el("h2", {}, t.title, el("small", { className: "uid" }, t.uid)),
    el("p", { className: "meta" },
       [status(t.status), t.priority && t.priority.toLowerCase(), `you: ${t.as}`]
         .filter(Boolean).join(" · "),
       t.dueAt ? el("span", { className: t.overdue ? "overdue" : "" },
                    ` · due ${day(t.dueAt)}${t.overdue ? " (overdue)" : ""}`) : null),
    el("p", { className: "asked" }, asked),
    t.problem ? el("p", {}, el("b", {}, "Problem: "), t.problem) : null,
    t.rootCause ? el("p", {}, el("b", {}, "Root cause: "), t.rootCause) : null,
    t.corrective.length ? el("div", {}, el("b", {}, "Corrective actions"),
                             el("ul", {}, ...t.corrective.map((c) => el("li", {}, c)))) : null,
    el("div", { className: "actions" }, ...buttons));
}

let signing = null;

function openSign(task, action) {
  const kind = SIGNATURES[action];
  const me = shown.me;
  signing = { task, action };
  const dialog = $("sign-dialog");
  dialog.dataset.action = action;
  dialog.dataset.capa = task.uid;
  $("sign-title").textContent = `${kind.title} ${task.uid}`;
  $("sign-meaning").textContent = kind.meaning(task.uid) + SIGNATURE_NOTE;
  $("sign-signer").textContent = me ? `${me.name} (${me.role})` : "—";
  const noted = action !== "submit";
  $("sign-note").hidden = !noted;
  $("sign-note-label").hidden = !noted;
  $("sign-note").required = noted;
  $("sign-note").value = "";
  $("sign-credential").value = "";  // never prefilled, never kept
  $("sign-submit").textContent = kind.button;
  const locked = me && me.signingLockedUntil && new Date(me.signingLockedUntil) > new Date();
  message("sign-error", locked ? `Your signing is locked until ${when(me.signingLockedUntil)}.` : "",
          true);
  dialog.showModal();
  (noted ? $("sign-note") : $("sign-credential")).focus();
}

function closeSign() {
  $("sign-credential").value = "";
  $("sign-dialog").close();
  signing = null;
}

async function submitSign(event) {
  event.preventDefault();
  if (!signing) return;
  const { task, action } = signing;
  const credential = $("sign-credential").value;
  const note = $("sign-note").value.trim();
  $("sign-submit").disabled = true;
  try {
    if (action === "submit") await gql(SUBMIT, { uid: task.uid, credential });
    else await gql(VERIFY, { uid: task.uid, effective: action === "approve", note, credential });
  } catch (error) {
    $("sign-credential").value = "";
    message("sign-error", error instanceof Offline
      ? "No network: a signature needs the server; nothing was signed."
      : error.extensions && error.extensions.signature === "refused"
        ? `Refused: ${error.message}` : error.message, true);
    if (error instanceof ApiError && error.code === "SIGNING_LOCKED" && shown.me) {
      shown.me.signingLockedUntil = error.extensions.lockedUntil;
    }
    return;
  } finally {
    $("sign-submit").disabled = false;
  }
  closeSign();
  toast({ approve: `${task.uid} approved and closed.`, reject: `${task.uid} rejected: back to action.`,
          submit: `${task.uid} submitted for verification.` }[action]);
  await loadTasks();
}

// --- settings --------------------------------------------------------------------------

async function forgetDevice() {
  await forgetKey();
  renderKeyState();
  toast("This device's key is forgotten.");
  await askKey("");
  await loadIdentity();
  sendNow();
}

async function submitSigning(event) {
  event.preventDefault();
  const password = $("signing-new").value;
  if (password.length < 8) {
    message("signing-message", "At least 8 characters.", true);
    return;
  }
  if (password !== $("signing-repeat").value) {
    message("signing-message", "The two entries differ.", true);
    return;
  }
  const current = shown.me && shown.me.hasSigningPassword ? $("signing-current").value : null;
  try {
    await gql(SET_SIGNING, { password, current });
  } catch (error) {
    message("signing-message", error instanceof Offline ? "No network: try again online."
                                                          : error.message, true);
    return;
  } finally {
    for (const id of ["signing-current", "signing-new", "signing-repeat"]) $(id).value = "";
  }
  message("signing-message", "Your signing password is set.");
  if (shown.me) shown.me.hasSigningPassword = true;
  renderMe();
}

// --- the service worker ----------------------------------------------------------------

async function registerWorker() {
  if (!("serviceWorker" in navigator)) {
    shown.serviceWorker = "unsupported";
    return;
  }
  try {
    const registration = await navigator.serviceWorker.register("/inspect/sw.js",
      { scope: "/inspect", type: "module" });
    shown.serviceWorker = "registered";
    await navigator.serviceWorker.ready;
    shown.serviceWorker = "active";
  } catch (error) {
    shown.serviceWorker = "failed";
    toast(`Offline use is not available: ${error.message}`);
  }
}

// --- start -----------------------------------------------------------------------------

function wire() {
  for (const tab of document.querySelectorAll("[data-goto]")) {
    tab.addEventListener("click", () => go(tab.dataset.goto));
  }
  $("scan-start").addEventListener("click", () => openCamera("scan").catch(showError));
  $("camera-close").addEventListener("click", closeCamera);
  $("code-form").addEventListener("submit", (event) => {
    event.preventDefault();
    closeCamera();
    lookup($("code-input").value).catch(showError);
  });
  $("report-open").addEventListener("click", openReport);
  $("report-cancel").addEventListener("click", () => { closeForms(); setPhotos([]); });
  $("report-form").addEventListener("submit", (e) => submitReport(e).catch(showError));
  $("photo-camera").addEventListener("click", () => openCamera("photo").catch(showError));
  $("photo-shutter").addEventListener("click", () => grabPhoto(camera).then((photo) => {
    addPhoto(photo);
    cameraStatus(`${photos.length} photo(s) taken; take another or close the camera.`);
  }).catch(showError));
  $("photo-file").addEventListener("change", async (event) => {
    for (const file of event.target.files) addPhoto(await photoFromFile(file));
    event.target.value = "";
  });
  $("hold-open").addEventListener("click", openHold);
  $("hold-cancel").addEventListener("click", () => { $("hold-form").hidden = true; });
  $("hold-form").addEventListener("submit", (e) => submitHold(e).catch(showError));
  $("queue-send").addEventListener("click", () => sendNow());
  $("tasks-refresh").addEventListener("click", () => loadTasks().catch(showError));
  $("sign-form").addEventListener("submit", (e) => submitSign(e).catch(showError));
  $("sign-cancel").addEventListener("click", closeSign);
  $("sign-dialog").addEventListener("close", () => { $("sign-credential").value = ""; });
  $("key-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("error").addEventListener("click", () => { $("error").hidden = true; });
  $("key-forget").addEventListener("click", () => forgetDevice().catch(showError));
  $("signing-form").addEventListener("submit", (e) => submitSigning(e).catch(showError));
  window.addEventListener("online", () => {
    online(true);
    sendNow();
    if (shown.identifiedStale != null) refreshCard();  // a card from memory, now current
  });
  window.addEventListener("offline", () => online(false));
  if (typeof BroadcastChannel !== "undefined") {
    new BroadcastChannel(CHANNEL).addEventListener("message", onOutboxMessage);
  }
}

async function main() {
  wire();
  online(navigator.onLine);
  const registering = registerWorker();
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    await keepKey(fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  } else if (storedKey()) {
    await setKey(storedKey());  // the worker's copy, in case it was cleared
  }
  renderKeyState();
  await renderQueue();
  if (shown.queue.length) askForSync().catch(showError);
  if (!storedKey()) await askKey("");
  await loadIdentity();
  shown.state = "ready";
  document.body.dataset.state = "ready";
  sendNow();
  const code = new URLSearchParams(location.search).get("code");
  if (code) {
    $("code-input").value = code;
    await lookup(code);
  } else if (!navigator.onLine || reached === false) {
    // opened with no network: the card shown last, as it was then
    const seen = lastSeen();
    if (seen) {
      shown.lookup = "offline";
      shown.restored = seen.code;
      $("code-input").value = seen.item.uid;
      showIdentified(seen.item, seen.at);
    }
  }
  await registering;
}

main().catch(showError);
