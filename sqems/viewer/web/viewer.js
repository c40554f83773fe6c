// The SQEMS web viewer: a line's machines or a BIM model in 3D, machines coloured by
// status and named, details of a clicked object in plain words with links to the SPC
// chart, the root-cause trace and the recall scope, live alarms over the `alarms`
// subscription.
//
// Open /viewer?line=LINE-PCB or /viewer?bim=BIM-…; the API key comes from the page's
// fragment (#key=…, never sent to the server), this tab's storage, or a prompt.
// window.sqemsViewer describes the scene for scripts and browser tests.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { CSS2DObject, CSS2DRenderer } from "three/addons/renderers/CSS2DRenderer.js";
import { apiKey, gql, pageLink, showError } from "/viewer/app/api.js";

const ALARM_COLOUR = "#d62728";
const DEVIATION_COLOUR = "#b5179e"; // no status uses it: a deviating element is not a machine
const SELECTED_COLOUR = "#0a5cff"; // saturated blue: no status uses it, it shows on white
const SELECTED_TINT = 0.7; // how far a selected building element's colour turns blue
const XRAY_OPACITY = 0.14;
const FRAME_MARGIN = 1.08; // the bounding sphere and a little air around it
const VIEW = { elevation: 34, azimuth: 38 }; // an elevated 3/4 view from the south-east
const DAY_MS = 24 * 3600 * 1000;

const $ = (id) => document.getElementById(id);
const state = {
  key: null,
  // uid -> { root, meshes, materials: [[material, base]], info, colour, machine, storey,
  //          count, label }
  objects: new Map(),
  machines: new Map(), // machine uid -> its scene object (overlay, alarms, parameters, …)
  rules: new Map(), // rule code -> { title, description }
  selected: null,
  outline: [],
  mode: null,
  socket: null,
  box: null,
  sphere: null,
  moved: false, // the user turned or zoomed the view: a resize keeps their view
  xray: false,
  storey: "",
};

// --- the 3D stage -----------------------------------------------------------------------

// Draw only when something changed (the view, a colour, a selection, a filter): a
// still scene costs a phone's battery and a software renderer's CPU nothing.
let stale = true;
function redraw() { stale = true; }


const stage = $("stage");
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
// compress highlights instead of clipping them: white walls keep their shading
renderer.toneMapping = THREE.NeutralToneMapping;
renderer.toneMappingExposure = 0.95;
stage.prepend(renderer.domElement);
const labels = new CSS2DRenderer(); // machine names, drawn as HTML over the canvas
labels.domElement.className = "labels";
stage.insertBefore(labels.domElement, renderer.domElement.nextSibling);
const scene = new THREE.Scene();
scene.background = new THREE.Color("#e4e9ef");
const camera = new THREE.PerspectiveCamera(40, 1, 0.1, 5000);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = true;
controls.addEventListener("start", () => { state.moved = true; });
controls.addEventListener("change", redraw);
scene.add(new THREE.HemisphereLight(0xffffff, 0x6f7782, 1.5));
const sun = new THREE.DirectionalLight(0xffffff, 1.5);
const fill = new THREE.DirectionalLight(0xffffff, 0.45);
scene.add(sun, sun.target, fill, fill.target);

function resize() {
  const { clientWidth: w, clientHeight: h } = stage;
  renderer.setSize(w, h, false);
  labels.setSize(w, h);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
  if (state.box && !state.moved) frame(state.box);
  redraw();
}
new ResizeObserver(resize).observe(stage);
resize();

renderer.setAnimationLoop(() => {
  const moving = controls.update();
  if (!stale && !moving) return;
  stale = false;
  renderer.render(scene, camera);
  labels.render(scene, camera);
  declutter();
});

// Names that would overlap give way to more urgent ones: the selected machine first,
// then alarm, watch, ok, idle. A hidden name is back when the view makes room for it.
const URGENCY = { alarm: 3, watch: 2, ok: 1, idle: 0 };
function declutter() {
  const urgency = (o) => (o.uid === state.selected ? 9 : URGENCY[state.machines.get(o.machine)?.overlay.status] ?? 0);
  const named = [...state.objects.entries()]
    .map(([uid, o]) => ({ uid, ...o }))
    .filter((o) => o.label && o.label.element.style.display !== "none")
    .sort((a, b) => urgency(b) - urgency(a));
  const placed = [];
  for (const o of named) {
    const tag = o.label.element;
    const r = tag.getBoundingClientRect();
    const clash = placed.some((p) => r.left < p.right && r.right > p.left && r.top < p.bottom && r.bottom > p.top);
    tag.classList.toggle("crowded", clash);
    if (!clash) placed.push(r);
  }
}

// Frame the box's bounding sphere: far enough that the sphere fits both the vertical
// and the horizontal field of view (a tall phone is narrower than it is high), seen
// from the south-east and above, so walls do not hide what stands inside.
function frame(box) {
  state.box = box;
  $("reset-view").hidden = false;
  const sphere = box.getBoundingSphere(new THREE.Sphere());
  sphere.radius = Math.max(sphere.radius, 0.5);
  state.sphere = sphere;
  const vertical = THREE.MathUtils.degToRad(camera.fov / 2);
  const horizontal = Math.atan(Math.tan(vertical) * camera.aspect);
  const distance = (sphere.radius / Math.sin(Math.min(vertical, horizontal))) * FRAME_MARGIN;
  const up = THREE.MathUtils.degToRad(VIEW.elevation);
  const around = THREE.MathUtils.degToRad(VIEW.azimuth);
  const direction = new THREE.Vector3(
    Math.cos(up) * Math.sin(around), Math.sin(up), Math.cos(up) * Math.cos(around),
  );
  camera.position.copy(sphere.center).addScaledVector(direction, distance);
  camera.near = Math.max(distance - sphere.radius * 1.5, distance / 200);
  camera.far = distance + sphere.radius * 4;
  camera.updateProjectionMatrix();
  controls.target.copy(sphere.center);
  controls.maxDistance = distance * 4;
  controls.update();
  const r = sphere.radius;
  sun.position.copy(sphere.center).add(new THREE.Vector3(r * 0.6, r * 1.6, r * 0.9));
  sun.target.position.copy(sphere.center);
  fill.position.copy(sphere.center).add(new THREE.Vector3(-r, r * 0.4, -r * 0.7));
  fill.target.position.copy(sphere.center);
  redraw();
}

function materialsOf(mesh) {
  return Array.isArray(mesh.material) ? mesh.material : [mesh.material];
}

function paint(uid, colour) {
  const object = state.objects.get(uid);
  if (!object) return;
  object.colour = colour;
  for (const [material] of object.materials) material.color.set(colour);
  redraw();
}

function label(text) {
  const tag = Object.assign(document.createElement("div"), { className: "label", textContent: text });
  return new CSS2DObject(tag);
}

// Graph coordinates are metres with z up; three.js has y up: (x, y, z) -> (x, z, -y).
function addMachine(o) {
  const geometry = new THREE.BoxGeometry(o.size.x, o.size.z, o.size.y);
  const material = new THREE.MeshStandardMaterial({ color: o.overlay.colour, roughness: 0.7 });
  const mesh = new THREE.Mesh(geometry, material);
  mesh.position.set(o.position.x, o.position.z + o.size.z / 2, -o.position.y);
  mesh.rotation.y = THREE.MathUtils.degToRad(o.rotationDeg);
  mesh.userData.uid = o.uid;
  const edges = new THREE.LineSegments(
    new THREE.EdgesGeometry(geometry),
    new THREE.LineBasicMaterial({ color: 0x1d2430, transparent: true, opacity: 0.35 }),
  );
  mesh.add(edges);
  const name = label(o.name);
  name.position.set(0, o.size.z / 2 + 0.5, 0);
  mesh.add(name);
  scene.add(mesh);
  state.machines.set(o.uid, o);
  state.objects.set(o.uid, {
    root: mesh, meshes: [mesh], materials: [[material, null]], info: o, colour: o.overlay.colour,
    machine: o.uid, storey: null, count: 1, label: name,
  });
}

const OBJECT_FIELDS = `
  uid label name kind step rotationDeg bimElement batches
  position { x y z }
  size { x y z }
  overlay { status colour produced defective defectRate openAlarms alarmSeverity utilisation reasons }
  parameters { uid name unit }
  alarms { uid rule ruleTitle severity raisedAt parameter batch message }`;

const SCENE_QUERY = `query LineScene($line: String!) {
  lineScene(line: $line) {
    uid name site
    floor { xMin yMin xMax yMax }
    legend
    objects { ${OBJECT_FIELDS} }
  }
  spcRules { name title description }
}`;

async function showLine(line) {
  state.mode = "line";
  const { lineScene: s, spcRules } = await gql(SCENE_QUERY, { line });
  rules(spcRules);
  $("title").textContent = `${s.name} (${s.uid})${s.site ? ` · ${s.site}` : ""}`;
  const { xMin, yMin, xMax, yMax } = s.floor;
  const floor = new THREE.Mesh(
    new THREE.PlaneGeometry(xMax - xMin, yMax - yMin),
    new THREE.MeshStandardMaterial({ color: 0xcfd6df, roughness: 1 }),
  );
  floor.rotation.x = -Math.PI / 2;
  floor.position.set((xMin + xMax) / 2, 0, -(yMin + yMax) / 2);
  scene.add(floor);
  for (const o of s.objects) addMachine(o);
  legend({ ...s.legend, selected: SELECTED_COLOUR });
  const box = new THREE.Box3().setFromObject(floor);
  for (const o of state.objects.values()) box.expandByObject(o.root);
  frame(box);
  $("count").textContent = `${s.objects.length} machines`;
}

const BIM_QUERY = `query BimModel($uid: String!) {
  bimModel(uid: $uid) {
    uid name ifcSchema elementCount triangles glbUrl
    links { machine element }
    deviating
    machines { ${OBJECT_FIELDS} }
  }
  spcRules { name title description }
}`;

async function showBim(uid) {
  state.mode = "bim";
  const { bimModel: m, spcRules } = await gql(BIM_QUERY, { uid });
  rules(spcRules);
  $("title").textContent = `${m.name} (${m.ifcSchema}, ${m.elementCount} elements, ` +
    `${m.triangles.toLocaleString()} triangles)`;
  for (const o of m.machines) state.machines.set(o.uid, o);
  const machineOf = new Map(m.links.map((l) => [l.element, l.machine]));
  const deviating = new Set(m.deviating);
  const loader = new GLTFLoader();
  loader.setRequestHeader({ authorization: `Bearer ${state.key}` });
  const gltf = await loader.loadAsync(m.glbUrl);
  scene.add(gltf.scene);
  gltf.scene.updateMatrixWorld(true);
  // A product is the node whose extras name its GlobalId: a Mesh for one primitive, a
  // Group of Meshes (one per material) for several.
  gltf.scene.traverse((node) => {
    const id = node.userData && node.userData.globalId;
    if (!id) return;
    const meshes = [];
    const materials = [];
    node.traverse((child) => {
      if (!child.isMesh) return;
      child.material = Array.isArray(child.material)
        ? child.material.map((x) => x.clone()) : child.material.clone(); // coloured on its own
      for (const material of materialsOf(child)) {
        materials.push([material, {
          opacity: material.opacity, transparent: material.transparent,
          depthWrite: material.depthWrite,
        }]);
      }
      child.userData.uid = id;
      meshes.push(child);
    });
    if (!meshes.length) return;
    const distinct = new Set(materials.map(([x]) => `${x.color.getHexString()}/${x.opacity}`));
    const machine = machineOf.get(id) || null;
    const object = {
      root: node, meshes, materials, info: { ...node.userData, uid: id }, machine,
      colour: `#${materials[0][0].color.getHexString()}`, storey: node.userData.storey || null,
      count: node.userData.materials ?? distinct.size, label: null,
    };
    state.objects.set(id, object);
    const scened = machine && state.machines.get(machine);
    if (scened) {
      paint(id, scened.overlay.colour);
      const box = new THREE.Box3().setFromObject(node);
      const top = new THREE.Vector3((box.min.x + box.max.x) / 2, box.max.y, (box.min.z + box.max.z) / 2);
      const name = label(scened.name);
      name.position.copy(node.worldToLocal(top));
      node.add(name);
      object.label = name;
    } else if (deviating.has(id)) {
      paint(id, DEVIATION_COLOUR);
    }
  });
  const statuses = m.machines.length ? { ...STATUS_COLOURS } : {};
  legend({ ...statuses, "deviates from design": DEVIATION_COLOUR, selected: SELECTED_COLOUR });
  storeys();
  $("xray-label").hidden = false;
  // machines stand inside the building: see them through it when the model has any
  setXray(m.machines.length > 0);
  frame(new THREE.Box3().setFromObject(gltf.scene));
  const count = `${state.objects.size} elements`;
  $("count").textContent = m.machines.length ? `${count} · ${m.machines.length} machines` : count;
}

const STATUS_COLOURS = {
  alarm: "#d62728", watch: "#ff9f1a", ok: "#2ca02c", idle: "#9aa0a6",
};

function legend(entries) {
  const box = $("legend");
  box.replaceChildren();
  for (const [name, colour] of Object.entries(entries)) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    if (name === "selected") swatch.className = "outline";
    item.append(swatch, name);
    box.append(item);
  }
}

// --- storeys and x-ray -----------------------------------------------------------------------

// The model's storeys, lowest first (by the lowest element each holds).
function storeys() {
  const lowest = new Map();
  for (const o of state.objects.values()) {
    if (!o.storey) continue;
    const y = new THREE.Box3().setFromObject(o.root).min.y;
    lowest.set(o.storey, Math.min(lowest.get(o.storey) ?? Infinity, y));
  }
  const select = $("storey");
  const counts = new Map();
  for (const o of state.objects.values()) if (o.storey) counts.set(o.storey, (counts.get(o.storey) || 0) + 1);
  const names = [...lowest.keys()].sort((a, b) => lowest.get(a) - lowest.get(b) || a.localeCompare(b));
  for (const name of names) {
    select.append(new Option(`${name} (${counts.get(name)})`, name));
  }
  $("storey-label").hidden = names.length < 2;
  return names;
}

function showStorey(name) {
  state.storey = name;
  for (const o of state.objects.values()) o.root.visible = !name || o.storey === name;
  if (state.selected && !state.objects.get(state.selected).root.visible) deselect();
  $("storey").value = name;
  redraw();
}

// A translucent building; machines stay solid. Materials keep their own opacity.
function setXray(on) {
  state.xray = on;
  $("xray").checked = on;
  for (const o of state.objects.values()) {
    if (o.machine || state.mode !== "bim") continue;
    for (const [material, base] of o.materials) {
      material.transparent = on || base.transparent;
      material.opacity = on ? base.opacity * XRAY_OPACITY : base.opacity;
      material.depthWrite = on ? false : base.depthWrite;
      material.needsUpdate = true;
    }
  }
  redraw();
}

$("xray").addEventListener("change", (e) => setXray(e.target.checked));
$("storey").addEventListener("change", (e) => showStorey(e.target.value));
$("reset-view").addEventListener("click", () => {
  state.moved = false;
  if (state.box) frame(state.box);
});

// --- picking ------------------------------------------------------------------------------------

function shown(object) {
  for (let o = object; o; o = o.parent) if (!o.visible) return false;
  return true;
}

// The product a mesh belongs to: the nearest node up the tree that names a uid.
function uidOf(object) {
  for (let o = object; o; o = o.parent) {
    if (o.userData.uid) return o.userData.uid;
    if (o.userData.globalId) return o.userData.globalId;
  }
  return null;
}

const raycaster = new THREE.Raycaster();

// What is under a point of the page: machines first (a machine under a roof beam is
// what a quality engineer means), else the nearest element. `nearest` is the element
// plain ray casting would take.
function pickAt(clientX, clientY) {
  const rect = renderer.domElement.getBoundingClientRect();
  const pointer = new THREE.Vector2(
    ((clientX - rect.left) / rect.width) * 2 - 1,
    -((clientY - rect.top) / rect.height) * 2 + 1,
  );
  camera.updateMatrixWorld();
  raycaster.setFromCamera(pointer, camera);
  const visible = [...state.objects.values()].filter((o) => shown(o.root));
  const hit = (objects) => {
    const first = raycaster.intersectObjects(objects.flatMap((o) => o.meshes), false)[0];
    return first ? uidOf(first.object) : null;
  };
  const machine = hit(visible.filter((o) => o.machine));
  const nearest = hit(visible);
  return { picked: machine || nearest, nearest, machine };
}

let pressed = null;
renderer.domElement.addEventListener("pointerdown", (e) => { pressed = [e.clientX, e.clientY]; });
renderer.domElement.addEventListener("pointerup", (e) => {
  if (!pressed || Math.hypot(e.clientX - pressed[0], e.clientY - pressed[1]) > 4) return;
  const { picked } = pickAt(e.clientX, e.clientY);
  if (picked) select(picked).catch(showError);
});

// --- selection ------------------------------------------------------------------------------------

// An outline in a saturated blue drawn over everything, and a building element turned
// blue (a machine keeps its status colour; its name is marked): both show on white
// walls, where a glow or a lighter shade would not.
function highlight(uid, on) {
  const object = state.objects.get(uid);
  if (!object) return;
  for (const line of state.outline) {
    line.parent.remove(line);
    line.geometry.dispose();
    line.material.dispose();
  }
  state.outline = [];
  redraw();
  if (object.label) object.label.element.classList.toggle("selected", on);
  if (!object.machine) {
    for (const [material] of object.materials) {
      if (on) {
        material.userData.unselected = material.color.clone();
        material.color.lerp(new THREE.Color(SELECTED_COLOUR), SELECTED_TINT);
      } else if (material.userData.unselected) {
        material.color.copy(material.userData.unselected);
        delete material.userData.unselected;
      }
    }
  }
  if (!on) return;
  for (const mesh of object.meshes) {
    const line = new THREE.LineSegments(
      new THREE.EdgesGeometry(mesh.geometry, 25),
      new THREE.LineBasicMaterial({ color: SELECTED_COLOUR, depthTest: false, transparent: true }),
    );
    line.renderOrder = 10;
    line.raycast = () => {}; // an outline is never what was clicked
    mesh.add(line);
    state.outline.push(line);
  }
}

function deselect() {
  if (state.selected) highlight(state.selected, false);
  state.selected = null;
  $("picked").hidden = true;
  const box = $("details");
  box.dataset.uid = "";
  box.replaceChildren(hint());
}

function hint() {
  return element("p", state.mode === "bim"
    ? "Click a machine or a building element to see its details."
    : "Click a machine to see its details.", "hint");
}

const ELEMENT_QUERY = `query Element($uid: String!) {
  entity(uid: $uid) {
    uid label
    ... on BimElement { ifcClass name storey xM yM zM lengthM widthM heightM triangles deviationM }
  }
}`;

async function select(uid) {
  if (state.selected) highlight(state.selected, false);
  state.selected = uid;
  const object = state.objects.get(uid);
  highlight(uid, true);
  const box = $("details");
  box.dataset.uid = "";
  const parts = [];
  const machine = object.machine && state.machines.get(object.machine);
  if (machine) parts.push(...machineDetails(machine));
  // on a phone the details are below the 3D view: say what was picked and lead there
  const picked = $("picked");
  picked.textContent = machine
    ? `${machine.name} · ${machine.overlay.status} — details ↓`
    : `${object.info.name || object.info.ifcClass || uid} — details ↓`;
  picked.hidden = false;
  if (state.mode === "bim") {
    box.replaceChildren(...parts, element("p", `${uid} …`, "hint"));
    const { entity } = await gql(ELEMENT_QUERY, { uid });
    if (state.selected !== uid) return;
    parts.push(...elementDetails(entity, object, Boolean(machine)));
  }
  box.replaceChildren(...parts);
  box.dataset.uid = uid;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function link(text, href, title) {
  const a = element("a", text);
  a.href = href;
  if (title) a.title = title;
  return a;
}

function number(v, digits = 2) {
  if (v == null) return null;
  return String(Math.round(v * 10 ** digits) / 10 ** digits);
}

function percent(v, digits) {
  return v == null ? "—" : `${(v * 100).toFixed(digits)} %`;
}

function table(rows) {
  const t = document.createElement("table");
  for (const [k, v] of rows) {
    if (v === null || v === undefined) continue;
    const tr = t.insertRow();
    tr.append(element("th", k));
    const td = element("td");
    if (v instanceof Node) td.append(v); else td.textContent = String(v);
    tr.append(td);
  }
  return t;
}

function ruleName(code) {
  let m = /^nelson_(\d+)$/.exec(code);
  if (m) return `Nelson rule ${m[1]}`;
  m = /^we_(\d+)$/.exec(code);
  if (m) return `Western Electric rule ${m[1]}`;
  return code.replaceAll("_", " ");
}

// An alarm's rule in words: "One point beyond 3 sigma (Nelson rule 1)".
function ruleText(code, title) {
  const rule = state.rules.get(code);
  return `${rule ? rule.title : title || ruleName(code)} (${ruleName(code)})`;
}

// A reason that names rules by code ("1 open alarm(s): nelson_1"), with each said in words.
function explainRules(text) {
  return text.replace(/\b[a-z]+_\d+\b/g, (code) => (state.rules.has(code) ? ruleText(code) : code));
}

function rules(list) {
  for (const r of list) state.rules.set(r.name, r);
}

function iso(ms) {
  return new Date(ms).toISOString();
}

// The root cause and trace of an alarm: the day before it up to a minute after.
function traceLink(machine, parameter, raisedAt) {
  const at = Date.parse(raisedAt);
  return pageLink("/trace", {
    parameter, machine, from: iso(at - DAY_MS), to: iso(at + 60 * 1000),
  });
}

function statusBadge(overlay) {
  const badge = element("span", overlay.status, "status");
  const swatch = element("i");
  swatch.style.background = overlay.colour;
  badge.prepend(swatch);
  return badge;
}

function machineDetails(o) {
  const ov = o.overlay;
  const parameterName = new Map(o.parameters.map((p) => [p.uid, p.name]));
  const out = [
    element("h2", `Machine ${o.uid}`),
    table([
      ["name", o.name],
      ["kind", o.kind],
      ["process step", o.step || "—"],
      ["status", statusBadge(ov)],
      ["why", ov.reasons.map(explainRules).join("; ") || "—"],
      ["units made", ov.produced],
      ["defective units", ov.defective],
      ["defect rate", percent(ov.defectRate, 2)],
      ["open alarms", ov.openAlarms],
      ["worst alarm severity", ov.alarmSeverity],
      ["utilisation (what-if)", ov.utilisation == null ? null : percent(ov.utilisation, 1)],
      ["position x (m)", number(o.position.x)],
      ["position y (m)", number(o.position.y)],
      ["rotation (°)", number(o.rotationDeg, 1)],
      ["length × width × height (m)", `${number(o.size.x)} × ${number(o.size.y)} × ${number(o.size.z)}`],
      ["BIM element", o.bimElement || "—"],
    ]),
  ];
  const charts = element("ul", null, "links charts");
  for (const p of o.parameters) {
    const item = element("li");
    item.append(link(`${p.name} (${p.unit})`,
      pageLink("/dashboard", { machine: o.uid, parameter: p.uid }),
      `control chart of ${p.uid} on ${o.uid}`));
    charts.append(item);
  }
  out.push(element("h3", "Control charts"),
    o.parameters.length ? charts : element("p", "No parameter is controlled on this machine.", "hint"));
  out.push(element("h3", "Open alarms"));
  if (o.alarms.length) {
    const list = element("ul", null, "links alarms");
    for (const a of o.alarms) {
      const item = element("li");
      const rule = state.rules.get(a.rule);
      const head = element("div");
      head.append(
        element("strong", ruleText(a.rule, a.ruleTitle)),
        ` on ${a.parameter ? parameterName.get(a.parameter) || a.parameter : "the machine"}, ` +
        `${new Date(a.raisedAt).toLocaleString()} (${a.severity})`,
      );
      item.append(head);
      if (rule) item.append(element("div", rule.description, "rule"));
      const actions = element("div");
      actions.append(link("root cause and trace", traceLink(o.uid, a.parameter, a.raisedAt)));
      if (a.batch) actions.append(" · ", link(`recall of ${a.batch}`, pageLink("/trace", { batch: a.batch })));
      item.append(actions);
      list.append(item);
    }
    out.push(list);
  } else {
    out.push(element("p", "None.", "hint"));
  }
  if (o.batches.length) {
    const batches = element("ul", null, "links batches");
    for (const b of o.batches) {
      const item = element("li");
      item.append(link(b, pageLink("/trace", { batch: b }), `what batch ${b} reached (recall scope)`));
      batches.append(item);
    }
    out.push(element("h3", "Last batches (recall scope)"), batches);
  }
  return out;
}

function elementDetails(e, object, underMachine) {
  return [
    element(underMachine ? "h3" : "h2", `${underMachine ? "BIM element" : "Element"} ${e.uid}`),
    table([
      ["IFC class", e.ifcClass],
      ["name", e.name || "—"],
      ["storey", e.storey || "—"],
      ["centre x (m)", number(e.xM)],
      ["centre y (m)", number(e.yM)],
      ["centre z (m)", number(e.zM)],
      ["length (m)", number(e.lengthM)],
      ["width (m)", number(e.widthM)],
      ["height (m)", number(e.heightM)],
      ["triangles", e.triangles],
      ["materials", object.count],
      ["deviation from design (m)", e.deviationM == null ? "not surveyed" : number(e.deviationM, 3)],
      ["machine", object.machine || "—"],
    ]),
  ];
}

// --- live alarms (graphql-transport-ws) ------------------------------------------------------

const ALARMS = `subscription { alarms { uid machine parameter rule severity message stopLine raisedAt run } }`;

function liveAlarms() {
  const live = $("live");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const socket = new WebSocket(url, "graphql-transport-ws");
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({
    type: "connection_init", payload: { authorization: `Bearer ${state.key}` },
  }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      socket.send(JSON.stringify({ id: "alarms", type: "subscribe", payload: { query: ALARMS } }));
      live.textContent = "live alarms: on";
      live.classList.add("on");
    } else if (message.type === "next" && message.payload.data) {
      alarm(message.payload.data.alarms);
    } else if (message.type === "next" || message.type === "error") {
      const errors = message.payload.errors || message.payload;
      live.textContent = `live alarms: off (${errors[0].message})`;
      live.classList.remove("on");
      live.title = errors[0].message;
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
  };
  socket.onclose = () => {
    live.classList.remove("on");
    if (!live.textContent.includes("(")) live.textContent = "live alarms: off (disconnected)";
  };
}

function alarm(a) {
  const item = element("li");
  item.append(`${a.raisedAt.slice(11, 19)} ${a.machine || "ingestion"}` +
    `${a.parameter ? ` ${a.parameter}` : ""}: `, element("strong", ruleText(a.rule)),
  ` — ${a.message}` + (a.stopLine ? " — STOP LINE" : ""));
  if (a.machine && a.parameter) {
    item.append(" ", link("trace", traceLink(a.machine, a.parameter, a.raisedAt)));
  }
  item.dataset.machine = a.machine || "";
  $("alarm-log").prepend(item);
  const machine = a.machine && state.machines.get(a.machine);
  if (machine) {
    const ov = machine.overlay;
    ov.openAlarms += 1;
    ov.status = "alarm";
    ov.colour = ALARM_COLOUR;
    ov.reasons = [`live alarm: ${ruleText(a.rule)}`, ...ov.reasons];
    machine.alarms = [{
      uid: a.uid, rule: a.rule, ruleTitle: null, severity: a.severity, raisedAt: a.raisedAt,
      parameter: a.parameter, batch: null, message: a.message,
    }, ...machine.alarms];
  }
  for (const [uid, o] of state.objects) {
    if (a.machine && o.machine === a.machine) paint(uid, ALARM_COLOUR);
  }
  const selected = state.selected && state.objects.get(state.selected);
  if (selected && a.machine && selected.machine === a.machine) select(state.selected).catch(showError);
}

// --- for scripts and tests ------------------------------------------------------------------

const corners = (box) => [0, 1, 2, 3, 4, 5, 6, 7].map((i) => new THREE.Vector3(
  i & 1 ? box.max.x : box.min.x, i & 2 ? box.max.y : box.min.y, i & 4 ? box.max.z : box.min.z,
));

window.sqemsViewer = {
  get state() { return document.body.dataset.state; },
  get mode() { return state.mode; },
  objects: () => [...state.objects.entries()].map(([uid, o]) => ({
    uid, colour: o.colour, storey: o.storey, materials: o.count, machine: o.machine,
    label: o.label ? o.label.element.textContent : null, visible: shown(o.root),
  })),
  colourOf: (uid) => state.objects.get(uid)?.colour ?? null,
  select,
  pickAt,
  setXray,
  showStorey,
  get xray() { return state.xray; },
  /** Whether the whole model is in view: its bounding sphere inside the four side
   * planes of the camera's frustum (`margin` is the least clearance, in radii), the
   * corners of its box on the canvas, and how high the camera looks down from. */
  framing() {
    camera.updateMatrixWorld();
    const frustum = new THREE.Frustum().setFromProjectionMatrix(
      new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse),
    );
    const { center, radius } = state.sphere;
    const clearance = Math.min(...frustum.planes.slice(0, 4).map((p) => p.distanceToPoint(center)));
    const inside = corners(state.box).every((c) => {
      const p = c.clone().project(camera);
      return Math.abs(p.x) <= 1 && Math.abs(p.y) <= 1;
    });
    const view = camera.position.clone().sub(controls.target);
    return {
      sphereFits: clearance >= radius,
      margin: clearance / radius - 1,
      boxInView: inside,
      elevationDeg: THREE.MathUtils.radToDeg(Math.asin(view.y / view.length())),
      radius,
      aspect: camera.aspect,
    };
  },
  /** Where an object's centre is on the page, in CSS pixels. */
  screenPosition(uid) {
    const object = state.objects.get(uid);
    const centre = new THREE.Box3().setFromObject(object.root).getCenter(new THREE.Vector3());
    camera.updateMatrixWorld(); // the renderer may not have drawn since the camera moved
    centre.project(camera);
    const rect = renderer.domElement.getBoundingClientRect();
    return {
      x: rect.left + ((centre.x + 1) / 2) * rect.width,
      y: rect.top + ((1 - centre.y) / 2) * rect.height,
    };
  },
  /** The page rectangle an object covers (its box's corners projected). */
  screenBox(uid) {
    const object = state.objects.get(uid);
    camera.updateMatrixWorld();
    const rect = renderer.domElement.getBoundingClientRect();
    const points = corners(new THREE.Box3().setFromObject(object.root)).map((c) => c.project(camera));
    const xs = points.map((p) => rect.left + ((p.x + 1) / 2) * rect.width);
    const ys = points.map((p) => rect.top + ((1 - p.y) / 2) * rect.height);
    return { left: Math.min(...xs), right: Math.max(...xs), top: Math.min(...ys), bottom: Math.max(...ys) };
  },
};

// --- start ------------------------------------------------------------------------------------

async function main() {
  const params = new URLSearchParams(location.search);
  const line = params.get("line");
  const bim = params.get("bim");
  $("line-input").value = line || "";
  $("bim-input").value = bim || "";
  if (!line && !bim) {
    $("details").replaceChildren(element("p", "Name a line or a BIM model above to open it.", "hint"));
    document.body.dataset.state = "idle";
    return;
  }
  state.key = await apiKey();
  await (line ? showLine(line) : showBim(bim));
  $("details").replaceChildren(hint());
  // ready means drawn: let the render loop draw the scene once before saying so
  await new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)));
  document.body.dataset.state = "ready";
  liveAlarms();
}

$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const line = $("line-input").value.trim();
  const bim = $("bim-input").value.trim();
  location.search = line ? pageLink("", { line }) : pageLink("", { bim });
});

main().catch(showError);
