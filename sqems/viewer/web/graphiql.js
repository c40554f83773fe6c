// GraphiQL at /graphql: the API's query editor, run from this server's copies of GraphiQL,
// React and the query builder (npm packages, loaded by graphiql.html), never a CDN.
// Queries and mutations go over HTTP, subscriptions over graphql-ws at the same address;
// the API key travels in the headers editor's Authorization header.

const KEY_STORE = "sqems.apiKey"; // where the other pages keep this tab's key (api.js)
const URL_HTTP = location.origin + location.pathname;
const URL_WS = URL_HTTP.replace(/^http/, "ws");
const box = document.getElementById("graphiql");

// The styles GraphiQL's dialogs add take the nonce this page's policy allows, which the
// server put on the page's own <style> (a page without it would block them).
window.__webpack_nonce__ = document.querySelector("style[nonce]")?.nonce;

const INTRO = `# SQEMS GraphQL: ask the quality graph directly.
#
# Your API key goes in Headers, below, as
#   { "Authorization": "Bearer sqems_…" }
# (create one with \`sqems apikey create\`). Come from
# another SQEMS page in this tab and it is already there.
#
# Run: Ctrl-Enter or ▶.  Complete a name: Ctrl-Space.
# On the left: the schema's documentation, the query
# builder (explorer) and the queries run before.
#
# The plant's KPIs over all batches:
{
  kpis {
    total { produced defective yield firstPassYield ppm }
  }
}
`;

function say(text, failed = false) {
  const p = document.createElement("p");
  p.className = failed ? "status failed" : "status";
  p.setAttribute("role", failed ? "alert" : "status");
  p.textContent = text;
  box.replaceChildren(p);
}

// The page's npm files did not all load: the server's answer for the first one
// missing names what to run (the vendor route's message), instead of a blank page.
async function explainMissing() {
  const assets = document.querySelectorAll(
    "script[src^='/viewer/vendor/'], link[href^='/viewer/vendor/']",
  );
  for (const asset of assets) {
    const url = asset.getAttribute("src") || asset.getAttribute("href");
    let response;
    try {
      response = await fetch(url, { cache: "no-store" });
    } catch (error) {
      say(`GraphiQL cannot start: ${url} did not load (${error.message}).`, true);
      return;
    }
    if (!response.ok) {
      let reason = `${url} answered ${response.status}`;
      try {
        const body = await response.json();
        reason = body.errors[0].message;
      } catch {
        // not the API's JSON error: the status says enough
      }
      say(`GraphiQL cannot start: ${reason}.`, true);
      return;
    }
  }
  say(
    "GraphiQL did not start although its files loaded: the browser's console says why. " +
      "Any GraphQL client can still send queries to this address.",
    true,
  );
}

// The key from a #key=… link or the other pages, kept for this tab only (like them).
function knownKey() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    sessionStorage.setItem(KEY_STORE, fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY_STORE) || "";
}

function headersWith(key) {
  return JSON.stringify({ Authorization: `Bearer ${key}` }, null, 2);
}

// A key typed into the headers editor is kept in this tab, so that a reload or another
// SQEMS page finds it; the headers themselves are not stored (no key in localStorage).
function rememberKey(text) {
  let sent;
  try {
    sent = JSON.parse(text || "{}");
  } catch {
    return; // half-typed JSON
  }
  for (const [name, value] of Object.entries(sent || {})) {
    const match = /^bearer\s+(sqems_\S+)$/i.exec(String(value).trim());
    if (name.toLowerCase() === "authorization" && match) {
      sessionStorage.setItem(KEY_STORE, match[1]);
    }
  }
}

// Header names in lower case: HTTP does not mind, and over a WebSocket the headers become
// the connection_init payload, where the server reads "authorization".
function lowerCased(headers) {
  return Object.fromEntries(Object.entries(headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
}

// A query (and its variables) from the address, so that a query can be linked to; the
// address follows the editor. Not ?query=: that one the server runs (GraphQL over GET).
const shared = new URLSearchParams(location.search);

function share(name, value) {
  const params = new URLSearchParams(location.search);
  if (value) params.set(name, value);
  else params.delete(name);
  const search = params.toString();
  history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
}

function start() {
  const http = GraphiQL.createFetcher({ url: URL_HTTP, subscriptionUrl: URL_WS });
  const fetcher = (params, options = {}) =>
    http(params, { ...options, headers: lowerCased(options.headers) });
  const headers = headersWith(knownKey());
  const app = React.createElement(
    GraphiQL,
    {
      fetcher,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultQuery: INTRO,
      query: shared.get("q") || undefined,
      variables: shared.get("variables") || undefined,
      headers,
      defaultHeaders: headers,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      showPersistHeadersSettings: false,
      inputValueDeprecation: true,
      onEditQuery: (query) => share("q", query === INTRO ? "" : query),
      onEditVariables: (variables) => share("variables", variables),
      onEditHeaders: rememberKey,
    },
    React.createElement(GraphiQL.Logo, null, "SQEMS GraphQL"),
  );
  ReactDOM.createRoot(box).render(app);
}

if (window.React && window.ReactDOM && window.GraphiQL && window.GraphiQLPluginExplorer) {
  start();
} else {
  explainMissing();
}
