// The pages' access to the API: the key (from the page's #key=… fragment, this tab's
// storage, or a prompt), GraphQL requests that turn typed errors into exceptions, and
// the links between the pages, added to each page's header.

const KEY_STORE = "sqems.apiKey";
let key = null;

export async function apiKey() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    sessionStorage.setItem(KEY_STORE, fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  key = sessionStorage.getItem(KEY_STORE);
  if (key) return key;
  const dialog = document.getElementById("key-dialog");
  dialog.showModal();
  key = await new Promise((resolve) => {
    document.getElementById("key-form").addEventListener("submit", () => {
      resolve(document.getElementById("key-input").value.trim());
    }, { once: true });
  });
  sessionStorage.setItem(KEY_STORE, key);
  return key;
}

// Forget this tab's key (the server refused it): the next apiKey() asks for another.
export function forgetKey() {
  sessionStorage.removeItem(KEY_STORE);
  key = null;
}

export async function gql(query, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    const code = e.extensions && e.extensions.code;
    if (code === "UNAUTHENTICATED") forgetKey();
    throw new Error(code ? `${e.message} (${code})` : e.message);
  }
  return body.data;
}

export function showError(error) {
  const box = document.getElementById("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
  document.body.dataset.state = "error";
}

export const PAGES = [
  ["/viewer", "3D viewer"],
  ["/dashboard", "Dashboard"],
  ["/investigate", "Complaints"],
  ["/trace", "Trace & recall"],
  ["/board", "Board"],
  ["/inspect", "Inspect (phone)"],
  ["/graphql", "GraphQL"],
];

// A link to another page with its query (the API key stays in this tab's storage).
export function pageLink(path, params = {}) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v != null && v !== ""),
  ).toString();
  return query ? `${path}?${query}` : path;
}

function addNavigation() {
  const header = document.querySelector("body > header");
  if (!header || header.querySelector("nav.pages")) return;
  const style = document.createElement("link");
  style.rel = "stylesheet";
  style.href = "/viewer/app/pages.css";
  document.head.append(style);
  const nav = document.createElement("nav");
  nav.className = "pages";
  nav.setAttribute("aria-label", "SQEMS pages");
  for (const [path, label] of PAGES) {
    const a = document.createElement("a");
    a.href = path;
    a.textContent = label;
    if (location.pathname === path) a.setAttribute("aria-current", "page");
    nav.append(a);
  }
  header.append(nav);
}

addNavigation();
