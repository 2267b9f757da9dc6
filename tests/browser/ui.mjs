// Drives the agent's web terminal in headless Chromium (Debian's package,
// through playwright-core) as a person would, asserting what they would see
// and keeping a screenshot of each step.
//   node tests/browser/ui.mjs URL NAMESPACE SCREENSHOT_DIR
// The namespace holds: shellpod (busybox, container "shell"), hello
// (distroless, container "hello"), stopped (container "gone", exited).
import assert from "node:assert/strict";
import { goto, launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";

const [url, ns, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

const browser = await launch();
const errors = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
page.on("pageerror", (err) => errors.push(String(err)));
let step = 0;
const shot = async (name) => page.screenshot({ path: `${shots}/${String(++step).padStart(2, "0")}-${name}.png` });
const visiblePane = () => page.locator(".pane:not([hidden])");
const screenText = () => visiblePane().locator(".xterm-rows").innerText();
async function waitForScreen(pattern, what) {
  await page.waitForFunction(
    ([source, flags]) => {
      const pane = document.querySelector(".pane:not([hidden]) .xterm-rows");
      return pane && new RegExp(source, flags).test(pane.innerText);
    },
    [pattern.source, pattern.flags],
    { timeout: 15000 },
  ).catch(async (err) => {
    await shot(`failed-${what}`);
    throw new Error(`${what}: ${pattern} not on screen:\n${await screenText()}\n${err.message}`);
  });
}
async function typeLine(text) {
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}

// 1. The picker lists the pods with their states and shells.
const started = Date.now();
await goto(page, url);
await page.locator(`[data-target="${ns}/shellpod/shell"]`).waitFor();
const metrics = await page.evaluate(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  return {
    transferBytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
    decodedBytes: nav.decodedBodySize + resources.reduce((sum, r) => sum + r.decodedBodySize, 0),
    loadMs: nav.loadEventEnd - nav.startTime,
  };
});
await page.locator(`[data-target="${ns}/hello/hello"]`).waitFor();
assert.match(await page.locator(`[data-target="${ns}/hello/hello"]`).innerText(), /no shell/);
assert.ok(await page.locator(`[data-target="${ns}/stopped/gone"]`).isDisabled(), "a stopped container is not clickable");
assert.match(await page.locator(`[data-target="${ns}/stopped/gone"]`).innerText(), /exited/);
assert.ok(await page.locator("#auth").isVisible(), "the unauthenticated mode is announced");
await shot("picker");

// 2. A terminal in the busybox pod: hostname, ps, stty size, exit code.
await page.locator(`[data-target="${ns}/shellpod/shell"]`).click();
await waitForScreen(/\/ #/, "prompt");
await typeLine("hostname");
await waitForScreen(/hostname\s*\n\s*shellpod/, "hostname");
await typeLine("ps -o pid,comm");
await waitForScreen(/\d+ ps\b/, "ps");
const ps = await screenText();
const processes = ps.slice(ps.lastIndexOf("PID")).split("\n").filter((l) => /^\s*\d+ /.test(l));
assert.ok(processes.length >= 3 && processes.length <= 5, `only the container's processes: ${processes}`);
assert.match(processes[0], /^\s*1 /, "PID 1 is the container's init");
assert.match(await visiblePane().locator(".status").innerText(), new RegExp(`${ns}/shellpod/shell · \\w{12} · pid \\d+ · all namespaces · container profile`));
await shot("terminal");
await typeLine("clear; stty size");
await waitForScreen(/^\d+ \d+$/m, "stty size");
const before = (await screenText()).match(/^(\d+) (\d+)$/m)[0];
await page.setViewportSize({ width: 900, height: 560 });
await typeLine("clear; stty size");
await page.waitForFunction((old) => {
  const m = document.querySelector(".pane:not([hidden]) .xterm-rows").innerText.match(/^(\d+) (\d+)$/m);
  return m && m[0] !== old;
}, before, { timeout: 15000 });
const after = (await screenText()).match(/^(\d+) (\d+)$/m)[0];
assert.notEqual(after, before, "stty size follows the window");
await shot("resized");
// A larger font: fewer columns and rows, and the shell is told.
await visiblePane().locator("button.larger").click();
await visiblePane().locator("button.larger").click();
await typeLine("clear; stty size");
await page.waitForFunction((old) => {
  const m = document.querySelector(".pane:not([hidden]) .xterm-rows").innerText.match(/^(\d+) (\d+)$/m);
  return m && m[0] !== old;
}, after, { timeout: 15000 });
const larger = (await screenText()).match(/^(\d+) (\d+)$/m);
assert.ok(Number(larger[2]) < Number(after.split(" ")[1]), `fewer columns with a larger font: ${larger[0]} vs ${after}`);
await visiblePane().locator("button.smaller").click();
await visiblePane().locator("button.smaller").click();
// A packet capture of the pod while it pings the test bed's bridge, stopped
// by hand, saved as a download and read back by tshark.
const capture = visiblePane().locator(".capture-status");
await visiblePane().locator(".capture-filter").fill("icmp");
await visiblePane().locator(".capture-start").click();
await capture.getByText(/^capturing: 0 packets/).waitFor();
await visiblePane().locator(".xterm-helper-textarea").focus();
await typeLine("clear; ping -c 3 10.99.0.1");
await waitForScreen(/3 packets received/, "ping");
await capture.getByText(/^capturing: 6 packets/).waitFor();
await shot("capturing");
const downloading = page.waitForEvent("download");
await visiblePane().locator(".capture-start").click();
const download = await downloading;
assert.match(download.suggestedFilename(), new RegExp(`^${ns}-shellpod-\\d{8}T\\d{6}Z\\.pcap$`));
const pcap = `${shots}/capture.pcap`;
await download.saveAs(pcap);
const icmp = execFileSync("tshark", ["-r", pcap, "-T", "fields", "-e", "icmp.type"]).toString().trim().split("\n");
assert.deepEqual(icmp, ["8", "0", "8", "0", "8", "0"], "the pings, requests and replies");
await capture.getByText(/^saved: 6 packets/).waitFor();
assert.equal(await capture.getAttribute("title"), download.suggestedFilename());
assert.equal(await visiblePane().locator(".capture-start").innerText(), "Capture");
await shot("capture-saved");
await visiblePane().locator(".xterm-helper-textarea").focus();
await typeLine("exit 3");
await page.getByText("The process exited with code 3.").waitFor();
await shot("exit-code");
await page.setViewportSize({ width: 1280, height: 800 });

// 3. The distroless pod: the toolbox, said so, with the container's processes
// and files at hand and nothing else's.
await page.locator(`[data-target="${ns}/hello/hello"]`).click();
await page.getByText(/toolbox: this container has no shell/).waitFor();
await waitForScreen(/[#$] *$/m, "toolbox prompt");
await typeLine("ls /target; ps -e -o pid,comm");
await waitForScreen(/\d+ ps\b/, "the container's files and processes");
const toolbox = await screenText();
assert.match(toolbox, /\bhello\b/, "the distroless binary under /target");
const toolboxPs = toolbox.slice(toolbox.lastIndexOf("PID")).split("\n").filter((l) => /^\s*\d+ /.test(l));
assert.match(toolboxPs[0], /^\s*1 hello/, `the pod's own init is PID 1: ${toolbox}`);
assert.ok(toolboxPs.length <= 4, `only the pod's processes: ${toolboxPs}`);
assert.match(await visiblePane().locator(".status").innerText(), /· toolbox ·/);
await shot("distroless-toolbox");

// 3b. Its listening ports, each one click from a port-forward command.
await visiblePane().locator(".ports-toggle").click();
const port = visiblePane().locator('.ports-list li[data-port="8080"]');
await port.waitFor();
assert.match(await port.innerText(), /8080\/tcp[\s\S]*hello \(1\)/, "the port and who listens on it");
await port.locator(".forward").click();
const commands = await port.locator(".forward-how code").allInnerTexts();
assert.deepEqual(commands, [
  `kubectl nsdebug port-forward -n ${ns} hello 8080:8080`,
  `kubectl --server ${new URL(url).origin} port-forward -n ${ns} hello 8080:8080`,
]);
await shot("ports");
await visiblePane().locator(".ports-toggle").click();
assert.equal(await visiblePane().locator(".ports-panel").isHidden(), true);

// 4. Two tabs at once; switching keeps each session.
assert.equal(await page.locator(".tab").count(), 2);

// 5. Readable errors: an unknown pod in the URL, a stopped container.
const errorsPage = await browser.newPage({ viewport: { width: 1280, height: 800 } });
errorsPage.on("pageerror", (err) => errors.push(String(err)));
await goto(errorsPage, `${url}#/${ns}/no-such-pod/x`);
await errorsPage.getByText(`NotFound: pod "no-such-pod" not found in namespace "${ns}" on this node`).waitFor();
await errorsPage.screenshot({ path: `${shots}/${String(++step).padStart(2, "0")}-unknown-pod.png` });
await goto(errorsPage, `${url}#/${ns}/stopped/gone`);
await errorsPage.reload();
await errorsPage.getByText(`Conflict: container "gone" of pod ${ns}/stopped is not running (state: exited)`).waitFor();
await errorsPage.screenshot({ path: `${shots}/${String(++step).padStart(2, "0")}-stopped-container.png` });

assert.deepEqual(errors, [], "no console errors");
console.log(JSON.stringify({ ...metrics, firstPaintToPickerMs: Date.now() - started }));
await browser.close();
