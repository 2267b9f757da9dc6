// The "Ports" panel of a tab: the container's listening TCP sockets (the
// agent's `sockets` diagnostic), each one click from a port-forward. The
// browser cannot listen on a local port, so a click shows the command that
// forwards it, through the plugin or kubectl pointed at this agent, ready to
// copy.

// `api(path)` fetches from the agent with the tab's credentials.
export function setupPorts(tab, api) {
  const pane = tab.pane;
  const button = pane.querySelector(".ports-toggle");
  const panel = pane.querySelector(".ports-panel");
  button.addEventListener("click", async () => {
    if (!panel.hidden) {
      panel.hidden = true;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    await showPorts(tab, api, panel);
  });
}

// One row per listening port (IPv4 and IPv6 sockets on the same port are one).
export function listeningPorts(sockets) {
  const ports = new Map();
  for (const s of sockets) {
    if (!s.protocol.startsWith("tcp") || s.state !== "LISTEN") continue;
    const cut = s.local.lastIndexOf(":");
    const port = Number(s.local.slice(cut + 1));
    if (!Number.isInteger(port) || port <= 0) continue;
    const address = s.local.slice(0, cut);
    const row = ports.get(port) || { port, addresses: [], holders: [] };
    if (!row.addresses.includes(address)) row.addresses.push(address);
    for (const h of s.processes || []) {
      const name = `${h.command} (${h.pid})`;
      if (!row.holders.includes(name)) row.holders.push(name);
    }
    ports.set(port, row);
  }
  return [...ports.values()].sort((a, b) => a.port - b.port);
}

// The commands that forward `port` of the tab's pod to the same local port.
export function forwardCommands(tab, port, origin) {
  const pod = `-n ${tab.ns} ${tab.pod}`;
  return [
    { how: "with the kubectl plugin", command: `kubectl nsdebug port-forward ${pod} ${port}:${port}` },
    { how: "with kubectl pointed at this agent", command: `kubectl --server ${origin} port-forward ${pod} ${port}:${port}` },
  ];
}

async function showPorts(tab, api, panel) {
  panel.replaceChildren(text("p", "muted", "Reading the pod's sockets…"));
  const q = new URLSearchParams({ container: tab.container });
  let answer;
  try {
    const response = await api(`/v1/targets/${encodeURIComponent(tab.ns)}/${encodeURIComponent(tab.pod)}/diag/sockets?${q}`);
    answer = await response.json();
    if (!response.ok) {
      panel.replaceChildren(text("p", "error", `${answer.reason || response.status}: ${answer.message}`));
      return;
    }
  } catch (err) {
    panel.replaceChildren(text("p", "error", `The agent does not answer: ${err.message}`));
    return;
  }
  const ports = listeningPorts(answer.items || []);
  if (ports.length === 0) {
    panel.replaceChildren(text("p", "muted", "Nothing in this pod listens on a TCP port."));
    return;
  }
  const list = document.createElement("ul");
  list.className = "ports-list";
  for (const row of ports) {
    const item = document.createElement("li");
    item.dataset.port = String(row.port);
    const label = text("span", "port", `${row.port}/tcp`);
    const detail = text("span", "muted", `${row.addresses.join(", ")}${row.holders.length ? ` · ${row.holders.join(", ")}` : ""}`);
    const forward = document.createElement("button");
    forward.type = "button";
    forward.className = "forward";
    forward.textContent = "Forward";
    forward.title = `Forward port ${row.port} of the pod to this computer`;
    const how = document.createElement("div");
    how.className = "forward-how";
    how.hidden = true;
    forward.addEventListener("click", () => {
      how.hidden = !how.hidden;
      if (!how.hidden) how.replaceChildren(...forwardCommands(tab, row.port, location.origin).map(commandLine));
    });
    item.append(label, detail, forward, how);
    list.append(item);
  }
  panel.replaceChildren(list);
}

function commandLine({ how, command }) {
  const line = document.createElement("div");
  line.className = "command";
  const code = text("code", "", command);
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = "Copied";
    } catch {
      // No clipboard (plain HTTP, or not allowed): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      copy.textContent = "Selected";
    }
  });
  line.append(text("span", "muted", how), code, copy);
  return line;
}

function text(tag, className, content) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = content;
  return el;
}
