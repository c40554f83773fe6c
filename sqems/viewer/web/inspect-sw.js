// The phone app's service worker (an ES module, served at /inspect/sw.js and allowed to
// control /inspect): it keeps the app shell — the page, its scripts and styles, the
// barcode decoder's module and WebAssembly, the manifest and the icon — in a cache so
// the app opens with no network, and sends the outbox's queued defect reports when
// Background Sync says the network is back. GraphQL requests are never cached: they
// go to the network, and the page and the outbox judge what failed.
//
// The shell is answered from the cache at once and refreshed from the network behind
// it (stale-while-revalidate): a new version of the app shows on the next visit.

import { getKey, sendQueued, SYNC_TAG } from "/viewer/app/outbox.js";

const VERSION = "inspect-v1";
const SHELL = [
  "/inspect",
  "/inspect/manifest.webmanifest",
  "/inspect/icon.svg",
  "/viewer/app/inspect.js",
  "/viewer/app/inspect-camera.js",
  "/viewer/app/outbox.js",
  "/viewer/app/inspect.css",
  "/viewer/vendor/zxing-wasm/dist/es/reader/index.js",
  "/viewer/vendor/zxing-wasm/dist/es/share.js",
  "/viewer/vendor/zxing-wasm/dist/reader/zxing_reader.wasm",
];

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(VERSION);
    await cache.addAll(SHELL);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name !== VERSION) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function shellPath(request) {
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return null;
  // the page may carry a query (?code=…): one cached page answers them all
  const path = url.pathname;
  return SHELL.includes(path) ? path : null;
}

self.addEventListener("fetch", (event) => {
  const path = shellPath(event.request);
  if (!path) return;  // the API and everything else: the network, untouched
  event.respondWith((async () => {
    const cache = await caches.open(VERSION);
    const cached = await cache.match(path);
    const fresh = fetch(path).then(async (response) => {
      if (response.ok) await cache.put(path, response.clone());
      return response;
    });
    if (cached) {
      event.waitUntil(fresh.catch(() => null));  // offline: the cached copy stands
      return cached;
    }
    return fresh;
  })());
});

// Background Sync: the browser fires this when it believes the network is back, even
// with the app closed. A round stopped by the network is thrown so the browser tries
// again later; a refused key waits for the page (the inspector enters a new one).
self.addEventListener("sync", (event) => {
  if (event.tag !== SYNC_TAG) return;
  event.waitUntil((async () => {
    const summary = await sendQueued(await getKey());
    if (summary.stopped === "offline" || summary.stopped === "later") {
      throw new Error(`reports stay queued: ${summary.message}`);
    }
  })());
});
