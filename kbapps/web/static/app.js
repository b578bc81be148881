// KBucket web interface (docs/http.md, web pages): the script that enhances the pages. Plain JavaScript,
// no build step, no framework.
//
// Every page arrives whole from the node (kbapps/web/pages.py draws it on the server), so
// everything essential works without this script: links, downloads, the search box.
// The script adds what needs a browser: a folder's complete listing in one scrollable,
// filterable table (the server draws the first rows of a long folder), .prvdir files
// built from the listings, opening a .prv file picked or dropped on the page, and the
// find page's download URLs ordered by what this browser can reach. It reads what it
// needs from the page's data-* attributes and asks only the node that served the page
// (same origin), through the docs/http.md routes.
//
// Safety: everything a node reports is put in the page with textContent or as attribute
// values we build ourselves; no HTML-parsing DOM API is ever used. The node sends a
// Content-Security-Policy that forbids inline script, and this file needs none.

document.documentElement.classList.add("js");

const NODE_ID_RE = /^[0-9a-f]{12}$/;
const SHA1_RE = /^[0-9a-f]{40}$/;
// An API call that takes longer than this is reported as timed out (the hub's own
// routing timeout, docs/http.md 504, is shorter, so this only catches a stuck connection).
const API_TIMEOUT_MS = 60000;
// Fixed row height of the file table, in CSS pixels (style.css `--row-height`): the
// listing is virtualized, so only the rows near the viewport exist in the DOM.
const ROW_HEIGHT = 36;
// Rows rendered above and below the viewport, so small scrolls need no re-render.
const OVERSCAN = 20;
// Bounds of a client-side .prvdir (docs/formats.md §2 requires 100,000 files to work).
const PRVDIR_MAX_FILES = 200000;
const PRVDIR_MAX_DIRS = 50000;
// readdir requests in flight while building a .prvdir: enough to hide latency through
// hubs, few enough not to crowd out other users of the same share.
const PRVDIR_CONCURRENCY = 4;
// A .prv is a few hundred bytes; refuse to read anything dropped that is far larger.
const PRV_FILE_MAX_BYTES = 1 << 20;

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

function str(value) {
  return typeof value === "string" ? value : "";
}

// Sizes and counts as the server writes them (kbapps/web/_format.py).
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
  readdir: (id, path) => `/${id}/api/readdir/${encodePath(path)}`,
  download: (id, path) => `/${id}/download/${encodePath(path)}`,
  prv: (id, path) => `/${id}/prv/${encodePath(path)}`,
};

// Page URLs, as the server writes them: /?node=ID&path=DIR or /?find=SHA1&name=NAME,
// '/' left readable in the path.
function pageHref(state) {
  const parts = [];
  for (const key of ["node", "path", "find", "name"]) {
    const value = state[key];
    if (value) parts.push(`${key}=${encodeURIComponent(value).replace(/%2F/g, "/")}`);
  }
  return parts.length ? `/?${parts.join("&")}` : "/";
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
// .prv and .prvdir text, byte for byte as docs/formats.md §1/§2.2 and kb-prv-create write it:
// json.dumps(obj, indent=4, ensure_ascii=False) plus a final newline.

const PRV_KEYS = ["original_checksum", "original_size", "original_fcs", "original_path",
  "prv_version"];

function isIndexedPrv(prv) {
  return prv !== null && typeof prv === "object" && !Array.isArray(prv) &&
    typeof prv.original_checksum === "string" &&
    SHA1_RE.test(prv.original_checksum.toLowerCase());
}

// The .prv as an ordered Map: the five original fields in their order , with original_path set
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

function errorBox(title, err) {
  const message = err instanceof Error ? err.message : String(err);
  return h("div", { class: "notice error", role: "alert" },
    h("strong", { text: title }), " ", h("span", { text: message }));
}

// ---------------------------------------------------------------------------------------
// A share's folder: the server drew its first rows; the whole listing goes in a
// virtualized table, with a filter and the .prvdir buttons.

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

async function enhanceBrowser(card) {
  const nodeId = card.dataset.node || "";
  if (!NODE_ID_RE.test(nodeId)) return;
  const path = normPath(card.dataset.path);
  const progress = card.querySelector(".progress");
  const summary = card.querySelector(".summary");
  const filter = card.querySelector("input.filter");
  // Every .prvdir button of the card, drawn by the server or by the table below.
  card.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-prvdir]") : null;
    if (!button || button.disabled) return;
    startPrvdir(nodeId, normPath(button.dataset.prvdir), button.dataset.name || "share", progress, button);
  });
  const drawn = card.querySelector(".scroller");
  if (!drawn && card.dataset.load !== "script") return; // empty, or the server's error stands
  let listing;
  try {
    listing = await getJson(routes.readdir(nodeId, path));
  } catch (err) {
    // The server's rows (if any) stay, with their links and pages.
    progress.replaceChildren(errorBox(`Could not list ${path ? `“${path}”` : "this share"}:`, err));
    return;
  }
  const entries = readEntries(listing);
  summary.textContent = [plural(entries.dirs.length, "folder"), plural(entries.files.length, "file")].join(", ");
  if (!entries.all.length) {
    card.append(h("p", { class: "empty", text: "This folder is empty." }));
    return;
  }
  const table = new FileTable(nodeId, path);
  if (drawn) drawn.replaceWith(table.element);
  else card.append(table.element);
  for (const pager of card.querySelectorAll(".pager")) pager.remove();
  table.setRows(entries.all);
  filter.disabled = false;
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
  constructor(nodeId, path) {
    this.nodeId = nodeId;
    this.path = path;
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

  // The same markup as the server's rows (kbapps/web/views.py, _row).
  renderRow(entry) {
    const full = joinPath(this.path, entry.name);
    if (entry.kind === "dir") {
      return h("tr", { class: "row dir" },
        h("td", { class: "name" }, h("a", { href: pageHref({ node: this.nodeId, path: full }), class: "entry dir", title: entry.name, text: entry.name })),
        h("td", { class: "size" }, muted("—")),
        h("td", { class: "prv" }, h("button", { type: "button", class: "linkish js-only", "data-prvdir": full, "data-name": entry.name, title: `Download ${entry.name}.prvdir (all its files, recursively)`, text: ".prvdir" })),
        h("td", { class: "sha1" }));
    }
    const name = h("a", { href: routes.download(this.nodeId, full), download: entry.name, class: "entry file", title: `Download ${entry.name}`, text: entry.name });
    const size = h("td", { class: "size", text: entry.size === null ? "" : humanSize(entry.size) });
    if (entry.size !== null) size.title = exactBytes(entry.size);
    let prvCell;
    let shaCell;
    let copyButton = null;
    if (entry.prv) {
      prvCell = h("a", { href: routes.prv(this.nodeId, full), download: `${entry.name}.prv`, class: "prv-link", title: `Download ${entry.name}.prv`, text: ".prv" });
      const sha1 = entry.prv.original_checksum.toLowerCase();
      shaCell = h("a", { href: pageHref({ find: sha1, name: entry.name }), class: "mono sha", title: `${sha1} — find every copy`, text: sha1 });
      copyButton = h("button", { type: "button", class: "linkish js-only copy-uri", "data-uri": `sha1://${sha1}/${entry.name}`, title: "Copy its sha1:// URI (kb-prv-download, Python's kbapps.api, fsspec)", text: "copy URI" });
    } else {
      prvCell = muted("—");
      shaCell = h("span", { class: "muted pending", text: "not yet indexed" });
    }
    return h("tr", { class: "row file" },
      h("td", { class: "name" }, name), size, h("td", { class: "prv" }, prvCell), h("td", { class: "sha1" }, shaCell, copyButton));
  }
}

// ---------------------------------------------------------------------------------------
// Find: the download URLs, those this browser can reach first.

const DEFAULT_PORTS = { "http:": "80", "https:": "443" };

function isLoopbackHost(host) {
  const name = host.replace(/^\[|\]$/g, "").toLowerCase();
  return name === "localhost" || name.endsWith(".localhost") || name === "::1" ||
    name === "0.0.0.0" || name === "::" || /^127\.\d+\.\d+\.\d+$/.test(name);
}

// What the browser knows for sure, which a node behind a proxy may not: the page's own
// origin. Same ranks as kbapps/web/reach.py: 0 this node, 1 nothing known against it,
// 2 the viewer's own computer, 3 blocked (http from an https page).
function reachRank(url) {
  let target;
  try {
    target = new URL(url);
  } catch {
    return [1, ""];
  }
  const port = (u) => u.port || DEFAULT_PORTS[u.protocol] || "";
  if (target.protocol === location.protocol && target.hostname === location.hostname &&
      port(target) === port(location)) {
    return [0, "this node"];
  }
  if (location.protocol === "https:" && target.protocol === "http:") {
    return [3, "blocked: an https page cannot download over http"];
  }
  if (isLoopbackHost(target.hostname) && !isLoopbackHost(location.hostname)) {
    return [2, "names the viewer's own computer"];
  }
  return [1, ""];
}

function rankUrls(list) {
  const items = [...list.querySelectorAll(":scope > li[data-url]")];
  const ranked = items.map((li, index) => ({ li, index, rank: reachRank(li.dataset.url) }));
  ranked.sort((a, b) => a.rank[0] - b.rank[0] || a.index - b.index);
  for (const { li, rank } of ranked) {
    li.className = `rank-${rank[0]}`;
    for (const note of li.querySelectorAll(".note")) note.remove();
    if (rank[1]) li.append(h("span", { class: "muted note", text: ` — ${rank[1]}` }));
    list.append(li);
  }
}

// ---------------------------------------------------------------------------------------
// Search by a .prv file: picked with the button, or dropped anywhere on the page.

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
    location.assign(pageHref({ find: sha1, name }));
  } catch (err) {
    document.getElementById("view").replaceChildren(errorBox("Could not read the .prv file:", err));
  }
}

function setupSearch() {
  const picker = document.getElementById("search-file");
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

// "copy URI" buttons (drawn by the server or by FileTable): the file's sha1:// URI to
// the clipboard, for kb-prv-download and Python (docs/python-api.md).
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-uri]") : null;
  if (!button) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(button.dataset.uri || "");
    button.textContent = "copied";
  } catch {
    button.textContent = "copy failed";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
});

setupSearch();
for (const list of document.querySelectorAll("ol.urls")) rankUrls(list);
for (const card of document.querySelectorAll("section.browser[data-node]")) enhanceBrowser(card);
