// The SQEMS web viewer: a line's machines or a BIM model in 3D, coloured by status,
// details of a clicked object over GraphQL, live alarms over the `alarms` subscription.
//
// Open /viewer?line=LINE-PCB or /viewer?bim=BIM-…; the API key comes from the page's
// fragment (#key=…, never sent to the server), this tab's storage, or a prompt.
// window.sqemsViewer describes the scene for scripts and browser tests.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { CSS2DObject, CSS2DRenderer } from "three/addons/renderers/CSS2DRenderer.js";
import { apiKey, gql, showError } from "/viewer/app/api.js";

const ALARM_COLOUR = "#d62728";
const SELECTED_EMISSIVE = 0x333333;

const $ = (id) => document.getElementById(id);
const state = {
  key: null,
  objects: new Map(), // uid -> { root, meshes, info, colour }
  selected: null,
  mode: null,
  socket: null,
};

// --- the 3D stage -----------------------------------------------------------------------

const stage = $("stage");
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
stage.appendChild(renderer.domElement);
const labels = new CSS2DRenderer(); // machine names, drawn as HTML over the canvas
labels.domElement.className = "labels";
stage.appendChild(labels.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color("#e9edf2");
const camera = new THREE.PerspectiveCamera(45, 1, 0.1, 5000);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = true;
scene.add(new THREE.HemisphereLight(0xffffff, 0x8d939b, 2.2));
const sun = new THREE.DirectionalLight(0xffffff, 1.6);
sun.position.set(30, 60, 20);
scene.add(sun);

function resize() {
  const { clientWidth: w, clientHeight: h } = stage;
  renderer.setSize(w, h, false);
  labels.setSize(w, h);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
new ResizeObserver(resize).observe(stage);
resize();

renderer.setAnimationLoop(() => {
  controls.update();
  renderer.render(scene, camera);
  labels.render(scene, camera);
});

// Look at the box from the south-east, `elevation` degrees above the horizon: a
// building is seen from high up, so its walls do not hide what stands inside.
function frame(box, elevation = 32) {
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length() || 10;
  const up = THREE.MathUtils.degToRad(elevation);
  const around = THREE.MathUtils.degToRad(38);
  camera.position.set(
    centre.x + size * Math.cos(up) * Math.sin(around),
    centre.y + size * Math.sin(up),
    centre.z + size * Math.cos(up) * Math.cos(around),
  );
  camera.near = size / 1000;
  camera.far = size * 20;
  camera.updateProjectionMatrix();
  controls.target.copy(centre);
  controls.update();
}

function paint(uid, colour) {
  const object = state.objects.get(uid);
  if (!object) return;
  object.colour = colour;
  for (const mesh of object.meshes) mesh.material.color.set(colour);
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
  const tag = Object.assign(document.createElement("div"), { className: "label", textContent: o.name });
  const label = new CSS2DObject(tag);
  label.position.set(0, o.size.z / 2 + 0.5, 0);
  mesh.add(label);
  scene.add(mesh);
  state.objects.set(o.uid, { root: mesh, meshes: [mesh], info: o, colour: o.overlay.colour });
}

const SCENE_QUERY = `query LineScene($line: String!) {
  lineScene(line: $line) {
    uid name site
    floor { xMin yMin xMax yMax }
    legend
    objects {
      uid label name kind step rotationDeg bimElement
      position { x y z }
      size { x y z }
      overlay { status colour produced defective defectRate openAlarms alarmSeverity utilisation reasons }
    }
  }
}`;

async function showLine(line) {
  state.mode = "line";
  const { lineScene: s } = await gql(SCENE_QUERY, { line });
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
  legend(s.legend);
  frame(new THREE.Box3().setFromObject(floor).expandByPoint(new THREE.Vector3(xMax, 3, -yMax)));
}

const BIM_QUERY = `query BimModel($uid: String!) {
  bimModel(uid: $uid) {
    uid name ifcSchema elementCount triangles glbUrl
    links { machine element }
    deviating
  }
}`;

async function showBim(uid) {
  state.mode = "bim";
  const { bimModel: m } = await gql(BIM_QUERY, { uid });
  $("title").textContent = `${m.name} (${m.ifcSchema}, ${m.elementCount} elements, ` +
    `${m.triangles.toLocaleString()} triangles)`;
  const machineOf = new Map(m.links.map((l) => [l.element, l.machine]));
  const deviating = new Set(m.deviating);
  const loader = new GLTFLoader();
  loader.setRequestHeader({ authorization: `Bearer ${state.key}` });
  const gltf = await loader.loadAsync(m.glbUrl);
  scene.add(gltf.scene);
  gltf.scene.traverse((node) => {
    const id = node.userData && node.userData.globalId;
    if (!id) return;
    const meshes = [];
    node.traverse((child) => {
      if (child.isMesh) {
        child.material = child.material.clone(); // each element is coloured on its own
        child.userData.uid = id;
        meshes.push(child);
      }
    });
    const info = { ...node.userData, uid: id, machine: machineOf.get(id) || null };
    const colour = `#${meshes[0].material.color.getHexString()}`;
    state.objects.set(id, { root: node, meshes, info, colour });
    if (deviating.has(id)) paint(id, ALARM_COLOUR);
  });
  legend({ "deviates from design": ALARM_COLOUR });
  frame(new THREE.Box3().setFromObject(gltf.scene), 62);
}

function legend(entries) {
  const box = $("legend");
  box.replaceChildren();
  for (const [name, colour] of Object.entries(entries)) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    item.append(swatch, name);
    box.append(item);
  }
}

// --- picking and details ----------------------------------------------------------------

const DETAILS_QUERY = {
  line: `query Machine($uid: String!) {
    entity(uid: $uid) {
      uid label
      ... on Machine { name kind xM yM rotationDeg lengthM widthM heightM }
    }
  }`,
  bim: `query Element($uid: String!) {
    entity(uid: $uid) {
      uid label
      ... on BimElement { ifcClass name storey xM yM zM lengthM widthM heightM triangles deviationM }
    }
  }`,
};

const raycaster = new THREE.Raycaster();
let pressed = null;
renderer.domElement.addEventListener("pointerdown", (e) => { pressed = [e.clientX, e.clientY]; });
renderer.domElement.addEventListener("pointerup", (e) => {
  if (!pressed || Math.hypot(e.clientX - pressed[0], e.clientY - pressed[1]) > 4) return;
  const rect = renderer.domElement.getBoundingClientRect();
  const pointer = new THREE.Vector2(
    ((e.clientX - rect.left) / rect.width) * 2 - 1,
    -((e.clientY - rect.top) / rect.height) * 2 + 1,
  );
  raycaster.setFromCamera(pointer, camera);
  const meshes = [...state.objects.values()].flatMap((o) => o.meshes);
  const hit = raycaster.intersectObjects(meshes, false)[0];
  if (hit) select(hit.object.userData.uid).catch(showError);
});

async function select(uid) {
  if (state.selected) {
    for (const mesh of state.objects.get(state.selected).meshes) mesh.material.emissive.setHex(0);
  }
  state.selected = uid;
  const object = state.objects.get(uid);
  for (const mesh of object.meshes) mesh.material.emissive.setHex(SELECTED_EMISSIVE);
  const box = $("details");
  box.dataset.uid = "";
  box.replaceChildren(Object.assign(document.createElement("p"), { textContent: `${uid} …` }));
  const { entity } = await gql(DETAILS_QUERY[state.mode], { uid });
  const rows = { ...entity };
  const info = object.info;
  if (info.overlay) {
    const o = info.overlay;
    Object.assign(rows, {
      status: o.status,
      step: info.step,
      "units made": o.produced,
      defective: o.defective,
      "defect rate": o.defectRate == null ? "—" : `${(o.defectRate * 100).toFixed(2)} %`,
      "open alarms": o.openAlarms,
      utilisation: o.utilisation == null ? "—" : `${(o.utilisation * 100).toFixed(1)} %`,
      why: o.reasons.join("; ") || "—",
      "BIM element": info.bimElement || "—",
    });
  }
  if (state.mode === "bim") rows.machine = info.machine || "—";
  const table = document.createElement("table");
  for (const [k, v] of Object.entries(rows)) {
    if (v === null || v === undefined) continue;
    const tr = table.insertRow();
    tr.append(Object.assign(document.createElement("th"), { textContent: k }));
    tr.append(Object.assign(document.createElement("td"), {
      textContent: typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v),
    }));
  }
  const heading = Object.assign(document.createElement("h2"), {
    textContent: `${entity.label} ${entity.uid}`,
  });
  box.replaceChildren(heading, table);
  box.dataset.uid = uid;
}

// --- live alarms (graphql-transport-ws) ------------------------------------------------------

const ALARMS = `subscription { alarms { uid machine parameter rule severity message stopLine raisedAt } }`;

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
  const item = document.createElement("li");
  item.textContent = `${a.raisedAt.slice(11, 19)} ${a.machine} ${a.parameter}: ${a.message}` +
    (a.stopLine ? " — STOP LINE" : "");
  item.dataset.machine = a.machine;
  $("alarm-log").prepend(item);
  const object = state.objects.get(a.machine);
  if (object && object.info.overlay) {
    object.info.overlay.openAlarms += 1;
    object.info.overlay.status = "alarm";
    object.info.overlay.reasons = [`live alarm: ${a.rule}`, ...object.info.overlay.reasons];
  }
  for (const [uid, o] of state.objects) {
    if (uid === a.machine || o.info.machine === a.machine) paint(uid, ALARM_COLOUR);
  }
}

// --- for scripts and tests ------------------------------------------------------------------

window.sqemsViewer = {
  get state() { return document.body.dataset.state; },
  get mode() { return state.mode; },
  objects: () => [...state.objects.entries()].map(([uid, o]) => ({ uid, colour: o.colour })),
  colourOf: (uid) => state.objects.get(uid)?.colour ?? null,
  select,
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
};

// --- start ------------------------------------------------------------------------------------

async function main() {
  const params = new URLSearchParams(location.search);
  const line = params.get("line");
  const bim = params.get("bim");
  $("line-input").value = line || "";
  $("bim-input").value = bim || "";
  if (!line && !bim) {
    $("details").replaceChildren(Object.assign(document.createElement("p"), {
      className: "hint", textContent: "Name a line or a BIM model above to open it.",
    }));
    document.body.dataset.state = "idle";
    return;
  }
  state.key = await apiKey();
  await (line ? showLine(line) : showBim(bim));
  $("count").textContent = `${state.objects.size} objects`;
  // ready means drawn: let the render loop draw the scene once before saying so
  await new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)));
  document.body.dataset.state = "ready";
  liveAlarms();
}

$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const line = $("line-input").value.trim();
  const bim = $("bim-input").value.trim();
  const query = line ? `?line=${encodeURIComponent(line)}` : `?bim=${encodeURIComponent(bim)}`;
  location.search = query;
});

main().catch(showError);
