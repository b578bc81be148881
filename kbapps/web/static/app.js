// KBucket web interface (SPEC §7). Plain JavaScript, no build step, no framework.
//
// The page talks only to the node that served it (same origin), through the SPEC §4
// routes; that node routes requests for any other node of the network through the tree.
// Which node to show: `?node=ID` in the URL, else the serving node, learned from
// `GET /web/config.json` -> {"node_id", "node_type"}. `&path=DIR` opens a directory of a
// share, `?find=SHA1` shows where some content is. Navigation uses history.pushState, so
// back/forward and reload work and every view has a plain link.
//
// Safety: everything a node reports is put in the page with textContent or as attribute
// values we build ourselves; no HTML-parsing DOM API is ever used. Only http(s) URLs become
// links. The node sends a Content-Security-Policy that forbids inline script, and this
// file needs none.

const NODE_ID_RE = /^[0-9a-f]{12}$/;
const SHA1_RE = /^[0-9a-f]{40}$/;
// An API call that takes longer than this is reported as timed out (the hub's own
// routing timeout, SPEC §4 504, is shorter, so this only catches a stuck connection).
const API_TIMEOUT_MS = 60000;
// Fixed row height of the file table, in CSS pixels (style.css `--row-height`): the
// listing is virtualized, so only the rows near the viewport exist in the DOM.
const ROW_HEIGHT = 36;
// Rows rendered above and below the viewport, so small scrolls need no re-render.
const OVERSCAN = 20;
// Bounds of a client-side .prvdir (SPEC §2.2 requires 100,000 files to work).
const PRVDIR_MAX_FILES = 200000;
const PRVDIR_MAX_DIRS = 50000;
// readdir requests in flight while building a .prvdir: enough to hide latency through
// hubs, few enough not to crowd out other users of the same share.
const PRVDIR_CONCURRENCY = 4;
// A .prv is a few hundred bytes; refuse to read anything dropped that is far larger.
const PRV_FILE_MAX_BYTES = 1 << 20;
// Child nodes whose description and owner are fetched for a hub page.
const CHILD_DETAILS_MAX = 200;
const CHILD_DETAILS_CONCURRENCY = 4;

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const numberFormat = new Intl.NumberFormat("en-US");

// ---------------------------------------------------------------------------------------
// Small DOM helpers. `h` never parses HTML: strings become text nodes.

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "onclick") el.addEventListener("click", value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function muted(text) {
  return h("span", { class: "muted", text });
}

function code(text, cls) {
  return h("code", { class: cls || null, text });
}

// A link to a node-provided URL, only when it is http(s); otherwise plain text.
function externalLink(url) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
    return h("span", { class: "mono", text: url });
  }
  return h("a", { href: parsed.href, class: "mono", rel: "noopener noreferrer", text: url });
}

function humanSize(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "";
  if (bytes < 1000) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB", "PB", "EB"];
  let value = bytes;
  let unit = -1;
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function exactBytes(bytes) {
  return `${numberFormat.format(bytes)} bytes`;
}

function plural(n, word) {
  return `${numberFormat.format(n)} ${word}${n === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------------------------------
// Paths and URLs.

function joinPath(a, b) {
  return a ? `${a}/${b}` : b;
}

function normPath(path) {
  return (path || "").split("/").filter((s) => s && s !== "." && s !== "..").join("/");
}

function baseName(path) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : "";
}

function encodePath(path) {
  return normPath(path).split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

// A readdir entry name we can put in a URL path: one non-empty segment, not a dot-name.
function isSafeName(name) {
  return typeof name === "string" && name !== "" && !name.includes("/") &&
    !name.startsWith(".") && name.length <= 4096;
}

const routes = {
  nodeinfo: (id) => `/${id}/api/nodeinfo`,
  readdir: (id, path) => `/${id}/api/readdir/${encodePath(path)}`,
  download: (id, path) => `/${id}/download/${encodePath(path)}`,
  find: (sha1) => `/find/${sha1}`,
};

// Page URLs: ?node=ID&path=DIR or ?find=SHA1&name=NAME, '/' left readable in the path.
function pageHref(state) {
  const parts = [];
  const put = (key, value) => {
    if (value) parts.push(`${key}=${encodeURIComponent(value).replace(/%2F/g, "/")}`);
  };
  put("node", state.node);
  put("path", state.path);
  put("find", state.find);
  put("name", state.name);
  return location.pathname + (parts.length ? `?${parts.join("&")}` : "");
}

function readLocation() {
  const q = new URLSearchParams(location.search);
  return {
    node: (q.get("node") || "").trim().toLowerCase(),
    path: normPath(q.get("path")),
    find: (q.get("find") || "").trim().toLowerCase(),
    name: q.get("name") || "",
  };
}

function navLink(state, text, cls) {
  return h("a", { href: pageHref(state), "data-nav": "", class: cls || null, text });
}

function navigate(state) {
  history.pushState(null, "", pageHref(state));
  render();
}

// ---------------------------------------------------------------------------------------
// API calls.

class ApiError extends Error {}

async function getJson(url, signal) {
  const signals = [AbortSignal.timeout(API_TIMEOUT_MS)];
  if (signal) signals.push(signal);
  let response;
  try {
    response = await fetch(url, {
      signal: AbortSignal.any(signals),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    if (err && err.name === "TimeoutError") {
      throw new ApiError(`no answer within ${API_TIMEOUT_MS / 1000} s`);
    }
    throw new ApiError("the node could not be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || typeof body !== "object" || body.success === false) {
    const detail = body && typeof body.error === "string" && body.error
      ? body.error
      : response.ok ? "the answer was not the expected JSON" : response.statusText || "error";
    throw new ApiError(`${detail} (HTTP ${response.status})`);
  }
  return body;
}

// ---------------------------------------------------------------------------------------
// .prv and .prvdir text, byte for byte as SPEC §2.1/§2.2 and kb-prv-create write it:
// json.dumps(obj, indent=4, ensure_ascii=False) plus a final newline.

const PRV_KEYS = ["original_checksum", "original_size", "original_fcs", "original_path",
  "prv_version"];

function isIndexedPrv(prv) {
  return prv !== null && typeof prv === "object" && !Array.isArray(prv) &&
    typeof prv.original_checksum === "string" &&
    SHA1_RE.test(prv.original_checksum.toLowerCase());
}

// The .prv as an ordered Map: the five SPEC fields in SPEC order, with original_path set
// to `path` (the file's name, or its path inside a .prvdir), then any extra fields.
function prvMap(prv, path) {
  const out = new Map();
  for (const key of PRV_KEYS) {
    if (key === "original_path") out.set(key, path);
    else if (key in prv) out.set(key, prv[key]);
  }
  for (const [key, value] of Object.entries(prv)) {
    if (!out.has(key)) out.set(key, value);
  }
  return out;
}

// Python sorts str by code point; JavaScript's default sort compares UTF-16 units, which
// differs once characters above U+FFFF meet characters in U+E000..U+FFFF. Remapping the
// units (surrogates to the top) makes unit order equal code point order.
function codePointUnit(u) {
  if (u >= 0xd800 && u <= 0xdfff) return u + 0x2000;
  if (u >= 0xe000) return u - 0x800;
  return u;
}

function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += 1) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointUnit(x) - codePointUnit(y);
  }
  return a.length - b.length;
}

// JSON with 4-space indentation, like Python's json.dumps(indent=4, ensure_ascii=False).
// Maps keep their order (plain objects would move integer-like keys such as "2024" first).
function dumps(value, level) {
  const pad = " ".repeat(4 * (level + 1));
  const end = " ".repeat(4 * level);
  if (value instanceof Map) {
    if (value.size === 0) return "{}";
    const items = [];
    for (const [key, item] of value) items.push(`${pad}${JSON.stringify(String(key))}: ${dumps(item, level + 1)}`);
    return `{\n${items.join(",\n")}\n${end}}`;
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((item) => pad + dumps(item, level + 1)).join(",\n")}\n${end}]`;
  }
  if (value !== null && typeof value === "object") {
    return dumps(new Map(Object.entries(value)), level);
  }
  const text = JSON.stringify(value);
  return text === undefined ? "null" : text;
}

function sortedMap(map, convert) {
  const keys = [...map.keys()].sort(compareCodePoints);
  return new Map(keys.map((key) => [key, convert(map.get(key))]));
}

// tree: {files: Map(name -> prv Map), dirs: Map(name -> tree)}
function prvdirMap(tree) {
  return new Map([
    ["files", sortedMap(tree.files, (prv) => prv)],
    ["dirs", sortedMap(tree.dirs, prvdirMap)],
  ]);
}

function saveText(text, filename) {
  const blob = new Blob([text], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, class: "visually-hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  // Revoking at once can cancel the download in some browsers; a minute is plenty.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function downloadPrv(entry) {
  saveText(`${dumps(prvMap(entry.prv, entry.name), 0)}\n`, `${entry.name}.prv`);
}

async function mapLimit(items, limit, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next;
      next += 1;
      await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// Builds the .prvdir of directory `root` of share `nodeId` from readdir calls, level by
// level. Fails (with the path) on the first file that has no .prv yet.
async function buildPrvdir(nodeId, root, onProgress, signal) {
  const tree = { files: new Map(), dirs: new Map() };
  let level = [{ path: root, rel: "", tree }];
  let dirs = 0;
  let files = 0;
  while (level.length) {
    const nextLevel = [];
    await mapLimit(level, PRVDIR_CONCURRENCY, async (item) => {
      const listing = await getJson(routes.readdir(nodeId, item.path), signal);
      dirs += 1;
      if (dirs > PRVDIR_MAX_DIRS) {
        throw new ApiError(`more than ${plural(PRVDIR_MAX_DIRS, "folder")}; use kb-prv-create on the share`);
      }
      for (const dir of Array.isArray(listing.dirs) ? listing.dirs : []) {
        if (!dir || !isSafeName(dir.name)) continue;
        const sub = { files: new Map(), dirs: new Map() };
        item.tree.dirs.set(dir.name, sub);
        nextLevel.push({ path: joinPath(item.path, dir.name), rel: joinPath(item.rel, dir.name), tree: sub });
      }
      for (const file of Array.isArray(listing.files) ? listing.files : []) {
        if (!file || !isSafeName(file.name)) continue;
        const rel = joinPath(item.rel, file.name);
        if (!isIndexedPrv(file.prv)) {
          throw new ApiError(`${joinPath(item.path, file.name)} is not yet indexed; try again when the share has indexed it`);
        }
        files += 1;
        if (files > PRVDIR_MAX_FILES) {
          throw new ApiError(`more than ${plural(PRVDIR_MAX_FILES, "file")}; use kb-prv-create on the share`);
        }
        item.tree.files.set(file.name, prvMap(file.prv, rel));
      }
      onProgress(dirs, files);
    });
    level = nextLevel;
  }
  return { text: `${dumps(prvdirMap(tree), 0)}\n`, files, dirs };
}

// ---------------------------------------------------------------------------------------
// Page chrome: status line, errors, footer.

const view = () => document.getElementById("view");
const statusBox = () => document.getElementById("status");

function showStatus(text, kind) {
  const box = statusBox();
  box.replaceChildren();
  if (text) box.append(h("div", { class: `notice ${kind || "info"}`, text }));
}

function errorBox(title, err) {
  const message = err instanceof Error ? err.message : String(err);
  return h("div", { class: "notice error", role: "alert" },
    h("strong", { text: title }), " ", h("span", { text: message }));
}

let selfConfig = null;

async function loadSelf() {
  try {
    const config = await getJson("/web/config.json");
    if (!NODE_ID_RE.test(config.node_id)) throw new ApiError("it sent no valid node id");
    selfConfig = { node_id: config.node_id, node_type: config.node_type === "hub" ? "hub" : "leaf" };
    const footer = document.getElementById("footer");
    footer.replaceChildren(
      "Served by ", selfConfig.node_type === "hub" ? "hub " : "share ",
      navLink({ node: selfConfig.node_id }, selfConfig.node_id, "mono"),
      " · requests for other nodes are routed through the KBucket network.");
  } catch (err) {
    selfConfig = null;
    return err;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Views.

let current = null; // AbortController of the view being loaded

async function render() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  const state = readLocation();
  showStatus("");
  view().replaceChildren();
  const input = document.getElementById("search-input");
  if (state.find && input.value !== state.find) input.value = state.find;
  try {
    if (state.find) {
      await renderFind(state, controller.signal);
    } else {
      let nodeId = state.node;
      if (!nodeId) {
        if (!selfConfig) {
          const err = await loadSelf();
          if (err) throw new ApiError(`this node did not say which node it is (/web/config.json): ${err.message}`);
        }
        nodeId = selfConfig.node_id;
      }
      if (!NODE_ID_RE.test(nodeId)) throw new ApiError(`"${nodeId}" is not a node id (12 hex digits)`);
      await renderNode(nodeId, state.path, controller.signal);
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    document.title = "Error · KBucket";
    view().replaceChildren(errorBox("Could not load this page:", err));
  }
}

function infoTable(rows) {
  const dl = h("dl", { class: "info" });
  for (const [label, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(h("dt", { text: label }), h("dd", {}, value));
  }
  return dl;
}

function typeBadge(type) {
  return h("span", { class: `badge ${type === "hub" ? "hub" : "share"}`, text: type === "hub" ? "Hub" : "Share" });
}

function str(value) {
  return typeof value === "string" ? value : "";
}

async function renderNode(nodeId, path, signal) {
  showStatus(`Loading node ${nodeId}…`);
  const body = await getJson(routes.nodeinfo(nodeId), signal);
  showStatus("");
  const info = body.info && typeof body.info === "object" ? body.info : {};
  const type = info.node_type === "hub" ? "hub" : "leaf";
  const name = str(info.name) || nodeId;
  document.title = `${name} · KBucket`;

  const parent = body.parent_hub_info && typeof body.parent_hub_info === "object" ? body.parent_hub_info : null;
  let parentCell = muted("none (top of its network)");
  if (parent && NODE_ID_RE.test(str(parent.node_id))) {
    parentCell = h("span", {}, navLink({ node: parent.node_id }, str(parent.name) || parent.node_id),
      " ", code(parent.node_id, "id"));
  }
  const owner = str(info.owner);
  const email = str(info.owner_email);
  const ownerCell = owner || email ? h("span", {}, owner, email ? muted(` ${owner ? "· " : ""}${email}`) : null) : null;
  const listen = str(info.listen_url);

  const header = h("div", { class: "node-header" },
    h("h1", {}, h("span", { class: "node-name", text: name }), typeBadge(type)));
  const card = h("section", { class: "card" },
    infoTable([
      ["Node id", code(nodeId, "id")],
      ["Type", type === "hub" ? "Hub" : "Share"],
      ["Description", str(info.description) ? h("span", { text: info.description }) : muted("no description")],
      ["Owner", ownerCell || muted("unknown")],
      ["Listen URL", listen ? externalLink(listen) : null],
      ["Parent hub", parentCell],
    ]));
  view().append(header, card);

  if (type === "hub") {
    renderChildren(body, signal);
  } else {
    await renderBrowser(nodeId, name, path, signal);
  }
}

function childEntries(map) {
  if (!map || typeof map !== "object") return [];
  return Object.entries(map)
    .filter(([id]) => NODE_ID_RE.test(id))
    .map(([id, child]) => ({ id, name: str(child && child.name) || id, listen: str(child && child.listen_url) }))
    .sort((a, b) => collator.compare(a.name, b.name) || compareCodePoints(a.id, b.id));
}

function renderChildren(body, signal) {
  const pending = [];
  const section = (title, children, emptyText) => {
    const card = h("section", { class: "card" },
      h("h2", {}, title, h("span", { class: "count", text: numberFormat.format(children.length) })));
    if (!children.length) {
      card.append(h("p", { class: "empty", text: emptyText }));
      return card;
    }
    const tbody = h("tbody");
    for (const child of children) {
      const description = h("td", { class: "desc" }, muted("…"));
      const owner = h("td", { class: "owner" }, muted("…"));
      tbody.append(h("tr", {},
        h("td", { class: "name" }, navLink({ node: child.id }, child.name)),
        h("td", {}, code(child.id, "id")),
        description, owner));
      pending.push({ child, description, owner });
    }
    card.append(h("div", { class: "table-wrap" }, h("table", { class: "grid children" },
      h("colgroup", {}, h("col", { class: "c-name" }), h("col", { class: "c-id" }), h("col", { class: "c-desc" }), h("col", { class: "c-owner" })),
      h("thead", {}, h("tr", {}, ["Name", "Node id", "Description", "Owner"].map((t) => h("th", { text: t })))),
      tbody)));
    return card;
  };
  view().append(
    section("Child hubs", childEntries(body.child_hubs), "No child hubs are connected."),
    section("Child shares", childEntries(body.child_leaf_nodes), "No shares are connected."));
  // Description and owner come from each child's own nodeinfo, fetched in the background.
  const todo = pending.slice(0, CHILD_DETAILS_MAX);
  for (const row of pending.slice(CHILD_DETAILS_MAX)) {
    row.description.replaceChildren();
    row.owner.replaceChildren();
  }
  mapLimit(todo, CHILD_DETAILS_CONCURRENCY, async (row) => {
    try {
      const info = (await getJson(routes.nodeinfo(row.child.id), signal)).info || {};
      row.description.replaceChildren(str(info.description) ? h("span", { text: info.description }) : "");
      row.owner.replaceChildren(str(info.owner));
      if (str(info.description)) row.description.title = info.description;
    } catch {
      if (signal.aborted) return;
      row.description.replaceChildren(muted("unreachable"));
      row.owner.replaceChildren();
    }
  }).catch(() => {});
}

// ---------------------------------------------------------------------------------------
// The share's file browser.

function breadcrumb(nodeId, path) {
  const nav = h("nav", { class: "breadcrumb", "aria-label": "Folder" });
  nav.append(navLink({ node: nodeId }, `kbucket://${nodeId}`, "crumb root"));
  let sofar = "";
  const parts = path ? path.split("/") : [];
  parts.forEach((part, i) => {
    sofar = joinPath(sofar, part);
    nav.append(h("span", { class: "sep", "aria-hidden": "true", text: "/" }));
    if (i === parts.length - 1) nav.append(h("span", { class: "crumb current", "aria-current": "page", text: part }));
    else nav.append(navLink({ node: nodeId, path: sofar }, part, "crumb"));
  });
  return nav;
}

function readEntries(listing) {
  const dirs = [];
  const files = [];
  for (const dir of Array.isArray(listing.dirs) ? listing.dirs : []) {
    if (dir && isSafeName(dir.name)) dirs.push({ kind: "dir", name: dir.name });
  }
  for (const file of Array.isArray(listing.files) ? listing.files : []) {
    if (!file || !isSafeName(file.name)) continue;
    const size = typeof file.size === "number" && file.size >= 0 ? file.size : null;
    files.push({ kind: "file", name: file.name, size, prv: isIndexedPrv(file.prv) ? file.prv : null });
  }
  // Sorted once, here: directories first, then natural name order.
  const byName = (a, b) => collator.compare(a.name, b.name) || compareCodePoints(a.name, b.name);
  dirs.sort(byName);
  files.sort(byName);
  return { dirs, files, all: dirs.concat(files) };
}

async function renderBrowser(nodeId, shareName, path, signal) {
  const card = h("section", { class: "card browser" });
  const crumbs = breadcrumb(nodeId, path);
  const summary = h("span", { class: "summary muted", text: "Loading…" });
  const filter = h("input", { type: "search", class: "filter", placeholder: "Filter names", "aria-label": "Filter names", disabled: true });
  const folderName = path ? baseName(path) : shareName;
  const prvdirButton = h("button", { type: "button", class: "button secondary small", disabled: true, title: "Download the .prvdir of this folder (all its files, recursively)", text: "Download .prvdir" });
  const progress = h("div", { class: "progress" });
  card.append(
    h("div", { class: "browser-head" }, crumbs, h("div", { class: "tools" }, summary, filter, prvdirButton)),
    progress);
  view().append(card);

  let listing;
  try {
    listing = await getJson(routes.readdir(nodeId, path), signal);
  } catch (err) {
    if (signal.aborted) throw err;
    summary.textContent = "";
    card.append(errorBox(`Could not list ${path ? `“${path}”` : "this share"}:`, err));
    return;
  }
  const entries = readEntries(listing);
  summary.textContent = [plural(entries.dirs.length, "folder"), plural(entries.files.length, "file")].join(", ");
  filter.disabled = false;
  prvdirButton.disabled = false;
  prvdirButton.addEventListener("click", () => startPrvdir(nodeId, path, folderName, progress, prvdirButton));

  if (!entries.all.length) {
    card.append(h("p", { class: "empty", text: "This folder is empty." }));
    return;
  }
  const table = new FileTable(nodeId, path, progress);
  card.append(table.element);
  table.setRows(entries.all);

  let timer = 0;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const needle = filter.value.trim().toLowerCase();
      table.setRows(needle ? entries.all.filter((e) => e.name.toLowerCase().includes(needle)) : entries.all);
    }, 120);
  });
}

let prvdirJob = null; // AbortController of the .prvdir being prepared

function startPrvdir(nodeId, path, folderName, progress, button) {
  if (prvdirJob) prvdirJob.abort();
  const job = new AbortController();
  prvdirJob = job;
  const filename = `${folderName || "share"}.prvdir`;
  const text = h("span", { text: `Preparing ${filename}…` });
  const cancel = h("button", { type: "button", class: "button secondary small", text: "Cancel" });
  cancel.addEventListener("click", () => job.abort());
  progress.replaceChildren(h("div", { class: "notice info" }, text, " ", cancel));
  if (button) button.disabled = true;
  buildPrvdir(nodeId, path, (dirs, files) => {
    text.textContent = `Preparing ${filename}… ${plural(dirs, "folder")}, ${plural(files, "file")} listed`;
  }, job.signal).then((result) => {
    saveText(result.text, filename);
    progress.replaceChildren(h("div", { class: "notice ok", text: `Downloaded ${filename} (${plural(result.files, "file")} in ${plural(result.dirs, "folder")}).` }));
  }, (err) => {
    if (job.signal.aborted) {
      progress.replaceChildren(h("div", { class: "notice info", text: `Cancelled ${filename}.` }));
    } else {
      progress.replaceChildren(errorBox(`Could not prepare ${filename}:`, err));
    }
  }).finally(() => {
    if (button) button.disabled = false;
    if (prvdirJob === job) prvdirJob = null;
  });
}

// A virtualized table: a scroll box holding a fixed-layout table whose rows are all
// ROW_HEIGHT tall; spacer rows stand in for the rows outside the rendered window.
class FileTable {
  constructor(nodeId, path, progress) {
    this.nodeId = nodeId;
    this.path = path;
    this.progress = progress;
    this.rows = [];
    this.start = 0;
    this.end = 0;
    this.top = h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", { colspan: "4" }));
    this.bottom = h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", { colspan: "4" }));
    this.tbody = h("tbody");
    this.head = h("thead", {}, h("tr", {},
      h("th", { class: "name", text: "Name" }), h("th", { class: "size", text: "Size" }),
      h("th", { class: "prv", text: "PRV" }), h("th", { class: "sha1", text: "SHA-1" })));
    this.element = h("div", { class: "scroller", tabindex: "0" },
      h("table", { class: "grid files" },
        h("colgroup", {}, h("col", { class: "c-name" }), h("col", { class: "c-size" }), h("col", { class: "c-prv" }), h("col", { class: "c-sha1" })),
        this.head, this.tbody));
    let queued = false;
    const onChange = () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        this.update(false);
      });
    };
    this.element.addEventListener("scroll", onChange, { passive: true });
    // Observing the box itself (not window "resize") leaves nothing behind when the
    // table is replaced by the next view.
    new ResizeObserver(onChange).observe(this.element);
  }

  setRows(rows) {
    this.rows = rows;
    this.element.scrollTop = 0;
    this.update(true);
  }

  update(force) {
    if (!this.rows.length) {
      this.start = 0;
      this.end = 0;
      this.tbody.replaceChildren(h("tr", { class: "no-match" },
        h("td", { colspan: "4", class: "muted", text: "No names match the filter." })));
      return;
    }
    const headHeight = this.head.offsetHeight;
    const viewTop = Math.max(0, this.element.scrollTop - headHeight);
    const viewHeight = this.element.clientHeight || 800;
    const first = Math.floor(viewTop / ROW_HEIGHT);
    const last = Math.min(this.rows.length, Math.ceil((viewTop + viewHeight) / ROW_HEIGHT) + 1);
    if (!force && first >= this.start && last <= this.end) return;
    this.start = Math.max(0, first - OVERSCAN);
    this.end = Math.min(this.rows.length, last + OVERSCAN);
    const fragment = document.createDocumentFragment();
    fragment.append(this.top);
    for (let i = this.start; i < this.end; i += 1) fragment.append(this.renderRow(this.rows[i]));
    fragment.append(this.bottom);
    this.top.style.height = `${this.start * ROW_HEIGHT}px`;
    this.bottom.style.height = `${(this.rows.length - this.end) * ROW_HEIGHT}px`;
    this.top.hidden = this.start === 0;
    this.bottom.hidden = this.end === this.rows.length;
    this.tbody.replaceChildren(fragment);
  }

  renderRow(entry) {
    const full = joinPath(this.path, entry.name);
    if (entry.kind === "dir") {
      const prvdir = h("button", { type: "button", class: "linkish", title: `Download ${entry.name}.prvdir`, text: ".prvdir" });
      prvdir.addEventListener("click", () => startPrvdir(this.nodeId, full, entry.name, this.progress, null));
      return h("tr", { class: "row dir" },
        h("td", { class: "name" }, h("a", { href: pageHref({ node: this.nodeId, path: full }), "data-nav": "", class: "entry dir", title: entry.name, text: entry.name })),
        h("td", { class: "size" }, muted("—")),
        h("td", { class: "prv" }, prvdir),
        h("td", { class: "sha1" }));
    }
    const name = h("a", { href: routes.download(this.nodeId, full), download: entry.name, class: "entry file", title: `Download ${entry.name}`, text: entry.name });
    const size = h("td", { class: "size", text: entry.size === null ? "" : humanSize(entry.size) });
    if (entry.size !== null) size.title = exactBytes(entry.size);
    let prvCell;
    let shaCell;
    if (entry.prv) {
      const button = h("button", { type: "button", class: "linkish", title: `Download ${entry.name}.prv`, text: ".prv" });
      button.addEventListener("click", () => downloadPrv(entry));
      prvCell = button;
      const sha1 = entry.prv.original_checksum.toLowerCase();
      shaCell = h("a", { href: pageHref({ find: sha1, name: entry.name }), "data-nav": "", class: "mono sha", title: `${sha1} — find every copy`, text: sha1 });
    } else {
      prvCell = muted("—");
      shaCell = h("span", { class: "muted pending", text: "not yet indexed" });
    }
    return h("tr", { class: "row file" },
      h("td", { class: "name" }, name), size, h("td", { class: "prv" }, prvCell), h("td", { class: "sha1" }, shaCell));
  }
}

// ---------------------------------------------------------------------------------------
// Find: where is this content?

async function renderFind(state, signal) {
  if (!SHA1_RE.test(state.find)) throw new ApiError(`"${state.find}" is not a SHA-1 (40 hex digits)`);
  document.title = `Find ${state.find.slice(0, 12)}… · KBucket`;
  showStatus("Searching the network…");
  const body = await getJson(routes.find(state.find), signal);
  showStatus("");
  const header = h("div", { class: "node-header" },
    h("h1", {}, h("span", { class: "node-name", text: state.name ? `Find “${state.name}”` : "Find content" })),
    h("div", { class: "node-sub" }, "SHA-1 ", code(state.find, "id")));
  view().append(header);
  if (!body.found) {
    view().append(h("section", { class: "card" }, h("p", { class: "empty", text: "Not found: no node reachable from here has this content." })));
    return;
  }
  const results = (Array.isArray(body.results) ? body.results : [])
    .filter((r) => r && NODE_ID_RE.test(str(r.kbshare_id)) && typeof r.path === "string" && normPath(r.path));
  const size = typeof body.size === "number" ? body.size : results.length ? results[0].size : null;
  const card = h("section", { class: "card" },
    h("h2", {}, "Found", h("span", { class: "count", text: numberFormat.format(results.length) })),
    h("p", { class: "muted", text: `${typeof size === "number" ? `${humanSize(size)} (${exactBytes(size)}) · ` : ""}${plural(results.length, "copy")} in the network` }));
  if (results.length) {
    const tbody = h("tbody");
    const shareLinks = new Map(); // share id -> links whose text becomes the share's name
    for (const result of results) {
      const path = normPath(result.path);
      const filename = state.name ? baseName(state.name) || baseName(path) : baseName(path);
      const folder = path.split("/").slice(0, -1).join("/");
      const shareLink = navLink({ node: result.kbshare_id, path: folder }, result.kbshare_id, "mono");
      if (!shareLinks.has(result.kbshare_id)) shareLinks.set(result.kbshare_id, []);
      shareLinks.get(result.kbshare_id).push(shareLink);
      tbody.append(h("tr", {},
        h("td", {}, shareLink),
        h("td", { class: "path", title: path, text: path }),
        h("td", { class: "size", text: typeof result.size === "number" ? humanSize(result.size) : "" }),
        h("td", {}, h("a", { href: routes.download(result.kbshare_id, path), download: filename, class: "button small", text: "Download" }))));
    }
    card.append(h("div", { class: "table-wrap" }, h("table", { class: "grid results" },
      h("thead", {}, h("tr", {}, ["Share", "Path", "Size", ""].map((t) => h("th", { text: t })))), tbody)));
    // Show share names instead of bare ids once each share's nodeinfo arrives.
    mapLimit([...shareLinks.keys()].slice(0, CHILD_DETAILS_MAX), CHILD_DETAILS_CONCURRENCY, async (id) => {
      try {
        const info = (await getJson(routes.nodeinfo(id), signal)).info || {};
        for (const link of shareLinks.get(id)) {
          if (str(info.name)) {
            link.textContent = info.name;
            link.className = "";
            link.title = id;
          }
        }
      } catch {
        // The id stays; the link still works through the serving node.
      }
    }).catch(() => {});
  }
  const urls = (Array.isArray(body.urls) ? body.urls : []).filter((u) => typeof u === "string");
  if (urls.length) {
    card.append(h("h3", { text: "Direct URLs, best first" }),
      h("ol", { class: "urls" }, urls.map((u) => h("li", {}, externalLink(u)))));
  }
  view().append(card);
}

async function prvFromFile(file) {
  if (file.size > PRV_FILE_MAX_BYTES) throw new ApiError(`${file.name} is too large to be a .prv file`);
  let prv;
  try {
    prv = JSON.parse(await file.text());
  } catch {
    throw new ApiError(`${file.name} is not a .prv file (not JSON)`);
  }
  if (!prv || typeof prv !== "object" || typeof prv.original_checksum !== "string" ||
      !SHA1_RE.test(prv.original_checksum.toLowerCase())) {
    throw new ApiError(`${file.name} has no valid original_checksum`);
  }
  const name = baseName(str(prv.original_path)) || file.name.replace(/\.prv$/i, "");
  return { sha1: prv.original_checksum.toLowerCase(), name };
}

async function searchFile(file) {
  try {
    const { sha1, name } = await prvFromFile(file);
    navigate({ find: sha1, name });
  } catch (err) {
    view().replaceChildren(errorBox("Could not read the .prv file:", err));
  }
}

function setupSearch() {
  const form = document.getElementById("search-form");
  const input = document.getElementById("search-input");
  const picker = document.getElementById("search-file");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim().toLowerCase();
    if (SHA1_RE.test(value)) navigate({ find: value });
    else if (NODE_ID_RE.test(value)) navigate({ node: value });
    else {
      showStatus("");
      view().replaceChildren(errorBox("Nothing to find:", new Error("enter a SHA-1 (40 hex digits) or a node id (12 hex digits), or drop a .prv file")));
    }
  });
  picker.addEventListener("change", () => {
    if (picker.files && picker.files.length) searchFile(picker.files[0]);
    picker.value = "";
  });
  // A .prv dropped anywhere on the page is searched for.
  document.addEventListener("dragover", (event) => {
    if (event.dataTransfer && [...event.dataTransfer.types].includes("Files")) {
      event.preventDefault();
      document.body.classList.add("dragging");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      event.preventDefault();
      searchFile(event.dataTransfer.files[0]);
    }
  });
}

// In-page navigation: plain left clicks on our own links update history and re-render;
// modified clicks (new tab, new window) keep the browser's behaviour.
function setupNavigation() {
  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-nav]") : null;
    if (!link || event.defaultPrevented || event.button !== 0 ||
        event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(link.href);
    if (url.origin !== location.origin) return;
    event.preventDefault();
    history.pushState(null, "", url.pathname + url.search);
    render();
    window.scrollTo(0, 0);
  });
  window.addEventListener("popstate", () => render());
}

async function main() {
  setupNavigation();
  setupSearch();
  await loadSelf();
  await render();
}

main();
