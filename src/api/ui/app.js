// nsdebug web terminal: a container picker fed by the agent's own API, and
// xterm.js terminals speaking the Kubernetes exec protocol (v5.channel.k8s.io)
// to the agent. No framework, nothing fetched from the internet.
import { Terminal } from "/ui/vendor/xterm.mjs";
import { FitAddon } from "/ui/vendor/addon-fit.mjs";
import { setupPorts } from "/ui/ports.js";

const STDIN = 0, STDOUT = 1, STDERR = 2, STATUS = 3, RESIZE = 4;
const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let listing = { pods: [] };
const tabs = [];

// ---- login ----------------------------------------------------------------
// The UI session token lives in this tab's sessionStorage and travels as a
// bearer token: an Authorization header for fetch, the Kubernetes bearer
// subprotocol for WebSockets. No cookie, so no other site can use it.

const SESSION_KEY = "nsdebug.session";
const session = () => sessionStorage.getItem(SESSION_KEY);

function authHeaders() {
  const token = session();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// fetch with the session; a 401 means the login is gone: ask for one.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    // Without a session there is nothing to explain: just ask.
    const answer = await response.clone().json().catch(() => ({}));
    showLogin(session() ? answer.message : undefined);
  }
  return response;
}

function bearerProtocol() {
  const token = session();
  if (!token) return [];
  const encoded = btoa(token).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return [`base64url.bearer.authorization.k8s.io.${encoded}`];
}

// Shows the login form; `message` (when given) replaces the one shown.
function showLogin(message) {
  $("login").hidden = false;
  if (message !== undefined) {
    $("login-error").hidden = !message;
    $("login-error").textContent = message;
  }
  $("login-token").focus();
}

// POST /v1/login with this tab's current session (if any), so that the
// agent refuses to switch the tab to another user unless it says "switch".
async function postLogin(body) {
  const response = await fetch("/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
  });
  return [response, await response.json().catch(() => ({}))];
}

// Exchanges a login link's code or a pasted token for a UI session.
async function logIn(body) {
  const [response, answer] = await postLogin(body);
  if (!response.ok) {
    showLogin(answer.message || `login failed (${response.status})`);
    return false;
  }
  sessionStorage.setItem(SESSION_KEY, answer.session);
  $("login").hidden = true;
  $("login-token").value = "";
  return true;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) return showLogin("Paste a token first.");
  if (await logIn({ token })) await start();
});

$("logout").addEventListener("click", async () => {
  await api("/v1/login", { method: "DELETE" });
  sessionStorage.removeItem(SESSION_KEY);
  for (const tab of tabs) {
    discardCapture(tab);
    // Detached first, so its close handler does not report a lost connection.
    const ws = tab.ws;
    tab.ws = null;
    ws?.close();
  }
  showLogin("Logged out.");
});

// ---- the picker ---------------------------------------------------------

async function loadTargets() {
  try {
    const response = await api("/v1/targets");
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || response.statusText);
    listing = body;
    $("list-error").hidden = true;
    const scope = body.restricted ? " in the namespaces you may list" : "";
    $("node").textContent = `node ${body.node} · ${body.runtime.name} ${body.runtime.version} · ${body.pods.length} pods${scope}`;
  } catch (err) {
    $("list-error").textContent = `Cannot list containers: ${err.message}`;
    $("list-error").hidden = false;
  }
  renderNamespaces();
  renderTargets();
}

function renderNamespaces() {
  const select = $("namespace");
  const current = select.value;
  const names = [...new Set(listing.pods.map((p) => p.namespace))].sort();
  select.replaceChildren(new Option("all namespaces", ""), ...names.map((n) => new Option(n, n)));
  select.value = names.includes(current) ? current : "";
}

function latestContainers(pod) {
  // The newest instance of each container name.
  const byName = new Map();
  for (const c of pod.containers) {
    const seen = byName.get(c.name);
    if (!seen || c.attempt >= seen.attempt) byName.set(c.name, c);
  }
  return [...byName.values()];
}

function renderTargets() {
  const ns = $("namespace").value;
  const query = $("search").value.trim().toLowerCase();
  const list = $("targets");
  list.replaceChildren();
  for (const pod of listing.pods) {
    if (ns && pod.namespace !== ns) continue;
    const containers = latestContainers(pod).filter((c) =>
      !query || `${pod.namespace}/${pod.name}/${c.name}`.toLowerCase().includes(query));
    if (!containers.length) continue;
    const item = document.createElement("div");
    item.className = "pod";
    item.setAttribute("role", "listitem");
    const name = document.createElement("div");
    name.className = "pod-name";
    name.textContent = pod.name;
    const meta = document.createElement("div");
    meta.className = "pod-meta";
    meta.textContent = `${pod.namespace} · ${pod.podIP || "no IP"}`;
    item.append(name, meta);
    for (const c of containers) item.append(containerButton(pod, c), logsButton(pod, c));
    list.append(item);
  }
  if (!list.children.length && $("list-error").hidden) {
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.style.padding = "0 12px";
    empty.textContent = "No containers match.";
    list.append(empty);
  }
}

function containerButton(pod, c) {
  const button = document.createElement("button");
  button.className = "container";
  button.type = "button";
  button.disabled = c.state !== "running";
  button.dataset.target = `${pod.namespace}/${pod.name}/${c.name}`;
  const dot = document.createElement("span");
  dot.className = `dot ${c.state}`;
  const label = document.createElement("span");
  label.className = "cname";
  label.textContent = c.name;
  const state = document.createElement("span");
  state.className = "badge";
  state.textContent = c.state + (c.restartCount ? ` · ${c.restartCount} restarts` : "");
  button.append(dot, label, state);
  if (c.state === "running") {
    const shell = document.createElement("span");
    shell.className = c.shell ? "badge" : "badge noshell";
    shell.textContent = c.shell ? c.shell.split("/").pop() : "no shell";
    shell.title = c.shell ? `shell: ${c.shell}` : "distroless: opens the toolbox";
    button.append(shell);
  }
  button.title = `${pod.namespace}/${pod.name}: ${c.name} (${c.id.slice(0, 12)})`;
  button.addEventListener("click", () => openTab(pod.namespace, pod.name, c.name));
  return button;
}

// A container's log opens in a tab of its own, whatever the container's state.
function logsButton(pod, c) {
  const button = document.createElement("button");
  button.className = "logs-button";
  button.type = "button";
  button.dataset.logs = `${pod.namespace}/${pod.name}/${c.name}`;
  button.textContent = "logs";
  button.title = `The log of ${pod.namespace}/${pod.name}: ${c.name}`;
  button.addEventListener("click", () => openLogsTab(pod.namespace, pod.name, c.name));
  return button;
}

// ---- terminals ------------------------------------------------------------

function findContainer(ns, podName, name) {
  const pod = listing.pods.find((p) => p.namespace === ns && p.name === podName && p.state === "ready")
    || listing.pods.find((p) => p.namespace === ns && p.name === podName);
  return pod && latestContainers(pod).find((c) => c.name === name);
}

function selectTab(tab) {
  for (const t of tabs) {
    const selected = t === tab;
    t.tabEl.setAttribute("aria-selected", String(selected));
    t.pane.hidden = !selected;
  }
  $("welcome").hidden = tabs.length > 0;
  if (tab?.term) {
    location.hash = `#/${tab.ns}/${tab.pod}/${tab.container}`;
    requestAnimationFrame(() => { tab.fit.fit(); tab.term.focus(); });
  }
}

function closeTab(tab) {
  discardCapture(tab);
  tab.ws?.close();
  tab.logs?.abort();
  tab.observer?.disconnect();
  tab.term?.dispose();
  tab.tabEl.remove();
  tab.pane.remove();
  tabs.splice(tabs.indexOf(tab), 1);
  selectTab(tabs[tabs.length - 1]);
  if (!tabs.length) history.replaceState(null, "", location.pathname);
}

// The tab strip's entry of `tab`, labelled `text`.
function tabHeader(tab, text) {
  const { ns, pod, container } = tab;
  tab.tabEl = document.createElement("div");
  tab.tabEl.className = "tab";
  tab.tabEl.setAttribute("role", "tab");
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = text;
  label.title = `${ns}/${pod}/${container}`;
  const close = document.createElement("button");
  close.className = "close";
  close.type = "button";
  close.textContent = "×";
  close.title = "Close";
  close.addEventListener("click", (e) => { e.stopPropagation(); closeTab(tab); });
  tab.tabEl.append(label, close);
  tab.tabEl.addEventListener("click", () => selectTab(tab));
  $("tabs").append(tab.tabEl);
}

function openTab(ns, pod, container) {
  const tab = { ns, pod, container };
  tabHeader(tab, `${pod}/${container}`);
  tab.pane = $("pane-template").content.firstElementChild.cloneNode(true);
  $("panes").append(tab.pane);
  tab.term = new Terminal({
    cursorBlink: true,
    fontFamily: '"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
    fontSize: Number(localStorage.getItem("nsdebug.fontSize")) || 14,
    scrollback: 5000,
    theme: { background: "#0b0e12", foreground: "#d8dee9", cursor: "#4fb3ff", selectionBackground: "#2f4a66" },
  });
  tab.fit = new FitAddon();
  tab.term.loadAddon(tab.fit);
  tab.term.open(tab.pane.querySelector(".terminal"));
  tab.term.onData((data) => send(tab, STDIN, encoder.encode(data)));
  tab.term.onResize(({ cols, rows }) => send(tab, RESIZE, encoder.encode(JSON.stringify({ Width: cols, Height: rows }))));
  tab.observer = new ResizeObserver(() => tab.fit.fit());
  tab.observer.observe(tab.pane.querySelector(".terminal"));
  tab.pane.querySelector(".reconnect").addEventListener("click", () => connect(tab));
  const zoom = (delta) => {
    const size = Math.min(32, Math.max(8, tab.term.options.fontSize + delta));
    tab.term.options.fontSize = size;
    localStorage.setItem("nsdebug.fontSize", String(size));
    tab.fit.fit(); // the terminal's new size reaches the shell as a resize
    tab.term.focus();
  };
  tab.pane.querySelector(".smaller").addEventListener("click", () => zoom(-1));
  tab.pane.querySelector(".larger").addEventListener("click", () => zoom(1));
  tab.pane.querySelector(".view").addEventListener("change", () => connect(tab));
  tab.pane.querySelector(".profile").addEventListener("change", () => connect(tab));
  tab.pane.querySelector(".capture-start").addEventListener("click", () => toggleCapture(tab));
  setupPorts(tab, api);
  tabs.push(tab);
  selectTab(tab);
  connect(tab);
  return tab;
}

function send(tab, channel, bytes) {
  if (!tab.ws || tab.ws.readyState !== WebSocket.OPEN) return;
  const frame = new Uint8Array(bytes.length + 1);
  frame[0] = channel;
  frame.set(bytes, 1);
  tab.ws.send(frame);
}

function banner(tab, text, ended) {
  const el = tab.pane.querySelector(".banner");
  el.hidden = !text;
  el.className = ended ? "banner ended" : "banner";
  el.replaceChildren();
  if (!text) return;
  const span = document.createElement("span");
  span.textContent = text;
  const again = document.createElement("button");
  again.type = "button";
  again.textContent = "Reconnect";
  again.addEventListener("click", () => (tab.reload || connect)(tab));
  el.append(span, again);
}

function statusLine(tab, text) {
  tab.pane.querySelector(".status").textContent = text;
}

// The reason a target cannot be entered, from the agent's v1.Status, or null.
async function preflight(tab) {
  try {
    const q = new URLSearchParams({ container: tab.container });
    const response = await api(`/v1/targets/${encodeURIComponent(tab.ns)}/${encodeURIComponent(tab.pod)}?${q}`);
    const body = await response.json();
    if (!response.ok) return { message: `${body.reason || response.status}: ${body.message}` };
    return { target: body };
  } catch (err) {
    return { message: `The agent does not answer: ${err.message}` };
  }
}

async function connect(tab) {
  tab.ws?.close();
  tab.ws = null;
  tab.exited = false;
  banner(tab, "");
  await loadTargets();
  const check = await preflight(tab);
  if (check.message) {
    banner(tab, check.message);
    statusLine(tab, `${tab.ns}/${tab.pod}/${tab.container} · not connected`);
    return;
  }
  const target = check.target;
  const info = findContainer(tab.ns, tab.pod, tab.container);
  const view = tab.pane.querySelector(".view").value;
  const profile = tab.pane.querySelector(".profile").value;
  const note = tab.pane.querySelector(".note");
  let command = ["/bin/sh"], toolbox = false;
  if (profile === "privileged") {
    // The container's own programs never run as node root: the agent's.
    toolbox = true;
    note.textContent = "privileged: root with every capability, the agent's tools among the container's processes and network, its files at /target";
  } else if (!info?.shell && view === "") {
    // Distroless: nothing to run inside, so the toolbox.
    tab.pane.querySelector(".view").value = "toolbox";
    toolbox = true;
    note.textContent = "toolbox: this container has no shell; these are the agent's tools among its processes and network, its files at /target";
  } else if (view === "toolbox") {
    toolbox = true;
    note.textContent = "toolbox: the agent's tools among the container's processes and network, its files at /target";
  } else {
    command = [info.shell];
    note.textContent = "";
  }
  const q = new URLSearchParams({ container: tab.container, stdin: "true", stdout: "true", tty: "true", profile });
  for (const arg of command) q.append("command", arg);
  if (toolbox) q.set("toolbox", "true");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/api/v1/namespaces/${encodeURIComponent(tab.ns)}/pods/${encodeURIComponent(tab.pod)}/exec?${q}`;
  tab.term.reset();
  const ws = new WebSocket(url, ["v5.channel.k8s.io", ...bearerProtocol()]);
  ws.binaryType = "arraybuffer";
  tab.ws = ws;
  const entered = toolbox ? "toolbox" : "all namespaces";
  statusLine(tab, `${tab.ns}/${tab.pod}/${tab.container} · ${target.containerId.slice(0, 12)} · pid ${target.pid} · ${entered} · ${profile} profile · ${command.join(" ")} · connecting…`);
  ws.addEventListener("open", () => {
    statusLine(tab, `${tab.ns}/${tab.pod}/${tab.container} · ${target.containerId.slice(0, 12)} · pid ${target.pid} · ${entered} · ${profile} profile · ${command.join(" ")}`);
    tab.fit.fit();
    send(tab, RESIZE, encoder.encode(JSON.stringify({ Width: tab.term.cols, Height: tab.term.rows })));
    tab.term.focus();
  });
  ws.addEventListener("message", (event) => {
    const data = new Uint8Array(event.data);
    if (!data.length) return;
    if (data[0] === STDOUT || data[0] === STDERR) {
      tab.term.write(data.subarray(1));
    } else if (data[0] === STATUS && data.length > 1) {
      tab.exited = true;
      let status;
      try { status = JSON.parse(decoder.decode(data.subarray(1))); } catch { status = { message: decoder.decode(data.subarray(1)) }; }
      if (status.status === "Success") {
        banner(tab, "The process exited with code 0.", true);
      } else {
        const code = status.details?.causes?.find((c) => c.reason === "ExitCode")?.message;
        banner(tab, code !== undefined ? `The process exited with code ${code}.` : `The session failed: ${status.message}`, true);
      }
    }
  });
  ws.addEventListener("close", async () => {
    if (tab.ws !== ws || tab.exited) return;
    // The browser hides why an upgrade failed: ask the agent.
    const again = await preflight(tab);
    banner(tab, again.message || "The connection to the agent closed (the session limit may be reached, or the agent restarted).");
  });
}

// ---- logs -------------------------------------------------------------------
// GET .../pods/{pod}/log, as kubectl logs reads it: the last lines, then (with
// Follow) what the container writes until it stops. The tab keeps the last
// MAX_LOG_LINES lines and shows those containing the search text.

const MAX_LOG_LINES = 10000;

function openLogsTab(ns, pod, container) {
  const tab = { ns, pod, container, lines: [], reload: loadLogs };
  tabHeader(tab, `${pod}/${container} · logs`);
  tab.pane = $("logs-template").content.firstElementChild.cloneNode(true);
  $("panes").append(tab.pane);
  const pane = tab.pane;
  pane.querySelector(".follow").addEventListener("change", () => loadLogs(tab));
  pane.querySelector(".previous").addEventListener("change", () => loadLogs(tab));
  pane.querySelector(".log-reload").addEventListener("click", () => loadLogs(tab));
  pane.querySelector(".log-search").addEventListener("input", () => renderLog(tab));
  tabs.push(tab);
  selectTab(tab);
  loadLogs(tab);
  return tab;
}

const logMatches = (tab) => {
  const query = tab.pane.querySelector(".log-search").value;
  return (line) => !query || line.includes(query);
};

function logCount(tab) {
  const shown = tab.lines.filter(logMatches(tab)).length;
  tab.pane.querySelector(".log-count").textContent =
    shown === tab.lines.length ? `${tab.lines.length} lines` : `${shown} of ${tab.lines.length} lines`;
}

// Shows every kept line that matches the search.
function renderLog(tab) {
  const matches = logMatches(tab);
  tab.pane.querySelector(".log").textContent = tab.lines.filter(matches).map((l) => `${l}\n`).join("");
  logCount(tab);
}

// Adds complete lines, keeping the view at the bottom if it was there.
function appendLog(tab, lines) {
  const view = tab.pane.querySelector(".log");
  const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
  tab.lines.push(...lines);
  if (tab.lines.length > MAX_LOG_LINES) {
    tab.lines.splice(0, tab.lines.length - MAX_LOG_LINES);
    renderLog(tab);
  } else {
    const shown = lines.filter(logMatches(tab));
    if (shown.length) view.append(shown.map((l) => `${l}\n`).join(""));
    logCount(tab);
  }
  if (atBottom) view.scrollTop = view.scrollHeight;
}

async function loadLogs(tab) {
  tab.logs?.abort();
  const controller = new AbortController();
  tab.logs = controller;
  tab.lines = [];
  banner(tab, "");
  renderLog(tab);
  const pane = tab.pane;
  const follow = pane.querySelector(".follow").checked;
  const previous = pane.querySelector(".previous").checked;
  const q = new URLSearchParams({ container: tab.container, tailLines: "1000" });
  if (follow) q.set("follow", "true");
  if (previous) q.set("previous", "true");
  const where = `${tab.ns}/${tab.pod}/${tab.container}${previous ? " (previous instance)" : ""}`;
  statusLine(tab, `${where} · loading…`);
  let partial = "";
  try {
    const response = await api(`/api/v1/namespaces/${encodeURIComponent(tab.ns)}/pods/${encodeURIComponent(tab.pod)}/log?${q}`, { signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(`${body.reason || response.status}: ${body.message || response.statusText}`);
    }
    statusLine(tab, `${where} · ${follow ? "following" : "read"}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      const parts = (partial + next.value).split("\n");
      partial = parts.pop();
      if (parts.length) appendLog(tab, parts);
    }
    if (partial) appendLog(tab, [partial]);
    statusLine(tab, `${where} · ${follow ? "ended: the container stopped" : "read"}`);
  } catch (err) {
    if (controller.signal.aborted) return;
    banner(tab, err.message);
    statusLine(tab, `${where} · not read`);
  } finally {
    if (tab.logs === controller) tab.logs = null;
  }
}

// ---- packet capture ---------------------------------------------------------
// GET .../capture streams a pcap file of the pod's traffic. The request needs
// the session's bearer header, which a plain <a download> link cannot send,
// so the page reads the stream itself and saves it as a Blob download when it
// ends (at its duration, or at the agent's packet and byte caps, which also
// bound the memory it takes: 64 MiB by default). Stop ends it early and saves
// what came, cut after the last whole packet.

// Counts the whole packet records of a pcap stream as its bytes arrive.
function pcapCounter() {
  const counter = { packets: 0, whole: 0 };
  const head = new Uint8Array(24);
  let seen = 0, need = 24, filled = 0, phase = "file", little = true, data = 0;
  const recordDone = (at) => {
    counter.packets++;
    counter.whole = at;
    phase = "record"; need = 16; filled = 0;
  };
  counter.feed = (chunk) => {
    let i = 0;
    while (i < chunk.length) {
      if (phase === "data") {
        const n = Math.min(data, chunk.length - i);
        i += n; data -= n;
        if (data === 0) recordDone(seen + i);
        continue;
      }
      const n = Math.min(need - filled, chunk.length - i);
      head.set(chunk.subarray(i, i + n), filled);
      filled += n; i += n;
      if (filled < need) break;
      const view = new DataView(head.buffer);
      if (phase === "file") {
        little = view.getUint32(0, true) === 0xa1b2c3d4;
        counter.whole = seen + i;
        phase = "record"; need = 16; filled = 0;
      } else {
        data = view.getUint32(8, little);
        phase = "data";
        if (data === 0) recordDone(seen + i);
      }
    }
    seen += chunk.length;
  };
  return counter;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its own reference by now; the URL is not needed.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Ends a tab's capture without saving it (the tab closes, the user logs out).
function discardCapture(tab) {
  if (!tab.capture) return;
  tab.capture.discard = true;
  tab.capture.abort();
}

async function toggleCapture(tab) {
  if (tab.capture) {
    tab.capture.abort(); // Stop: save what came
    return;
  }
  const pane = tab.pane;
  const button = pane.querySelector(".capture-start");
  const status = pane.querySelector(".capture-status");
  const q = new URLSearchParams({
    container: tab.container,
    duration: pane.querySelector(".capture-duration").value,
    format: "pcap",
  });
  const filter = pane.querySelector(".capture-filter").value.trim();
  if (filter) q.set("filter", filter);
  const controller = new AbortController();
  tab.capture = controller;
  button.textContent = "Stop capture";
  status.textContent = "starting the capture…";
  status.title = "";
  const chunks = [];
  const counter = pcapCounter();
  let bytes = 0;
  try {
    const response = await api(`/v1/targets/${encodeURIComponent(tab.ns)}/${encodeURIComponent(tab.pod)}/capture?${q}`, { signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(`${body.reason || response.status}: ${body.message || response.statusText}`);
    }
    const name = (response.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/)?.[1]
      || `${tab.ns}-${tab.pod}.pcap`;
    const reader = response.body.getReader();
    const progress = () => {
      status.textContent = `capturing: ${counter.packets} packets, ${formatBytes(bytes)}`;
    };
    progress();
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (err) {
        if (controller.signal.aborted) break; // stopped: keep what came
        throw err;
      }
      if (next.done) break;
      chunks.push(next.value);
      bytes += next.value.length;
      counter.feed(next.value);
      progress();
    }
    if (controller.discard) return;
    saveFile(new Blob(chunks).slice(0, counter.whole, "application/vnd.tcpdump.pcap"), name);
    status.textContent = `saved: ${counter.packets} packets, ${formatBytes(counter.whole)}`;
    status.title = name;
  } catch (err) {
    if (controller.discard) return;
    status.textContent = controller.signal.aborted ? "capture cancelled" : `capture failed: ${err.message}`;
  } finally {
    if (tab.capture === controller) tab.capture = null;
    button.textContent = "Capture";
  }
}

// ---- start ------------------------------------------------------------------

// Who the agent takes us for; false when a login is needed first.
async function whoami() {
  try {
    const response = await api("/v1/whoami");
    if (!response.ok) return false;
    const body = await response.json();
    $("auth").hidden = body.authMode !== "none";
    const loggedIn = body.authMode !== "none";
    $("user").hidden = !loggedIn;
    $("user").textContent = loggedIn ? body.user.name : "";
    $("logout").hidden = !(loggedIn && session());
    return true;
  } catch {
    // The listing below reports an agent that does not answer.
    return true;
  }
}

let started = false;
async function start() {
  if (!(await whoami())) return;
  await loadTargets();
  if (started) return;
  started = true;
  const route = location.hash.match(/^#\/([^/]+)\/([^/]+)\/([^/]+)$/);
  if (route) openTab(...route.slice(1).map(decodeURIComponent));
}

$("namespace").addEventListener("change", renderTargets);
$("search").addEventListener("input", renderTargets);
// A one-time login link: /#login=CODE. The code leaves the address bar at
// once. Whose link it is shows first, and nothing happens until the user
// agrees: someone else's link must not log this tab in as them unnoticed.
async function confirmLink(code) {
  const [response, answer] = await postLogin({ code, preview: true });
  if (!response.ok) {
    // A tab that is logged in stays so; the others are told and asked.
    if (session()) return start();
    showLogin(answer.message || `login failed (${response.status})`);
    return;
  }
  const who = answer.user.name;
  const current = answer.current?.name;
  $("confirm-user").textContent = who;
  const groups = (answer.user.groups || []).join(", ");
  $("confirm-detail").textContent =
    (current && current !== who ? `This tab is logged in as ${current}. ` : "") +
    `The link logs in as ${who}` + (groups ? ` (groups: ${groups}).` : ".");
  $("confirm-yes").textContent = `Log in as ${who}`;
  $("confirm-no").textContent = current ? `Stay ${current}` : "Cancel";
  $("confirm").hidden = false;
  // Switching users is never what Enter does.
  (current && current !== who ? $("confirm-no") : $("confirm-yes")).focus();
  const yes = await new Promise((resolve) => {
    $("confirm-yes").onclick = () => resolve(true);
    $("confirm-no").onclick = () => resolve(false);
  });
  $("confirm").hidden = true;
  if (yes && !(await logIn({ code, switch: true }))) return;
  if (session()) await start();
  else showLogin();
}

const LOGIN_LINK = /^#login=([A-Za-z0-9]+)$/;
// A link opened in a tab that shows this page already changes the hash only.
window.addEventListener("hashchange", () => {
  const again = location.hash.match(LOGIN_LINK);
  if (!again) return;
  history.replaceState(null, "", location.pathname);
  confirmLink(again[1]);
});
const link = location.hash.match(LOGIN_LINK);
if (link) {
  history.replaceState(null, "", location.pathname);
  await confirmLink(link[1]);
} else {
  await start();
}
