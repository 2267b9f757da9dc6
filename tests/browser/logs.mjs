// The web UI's logs tab in headless Chromium: a container's log next to the
// terminal tabs, followed as it grows, the previous instance, and the search
// box that filters the lines shown.
//   node tests/browser/logs.mjs URL NAMESPACE POD SCREENSHOT_DIR
// The pod has one container "app" whose instances each write "alpha-1",
// "beta-2", "alpha-3", then "tick N" every 0.2 s; attempt 0 was stopped and
// attempt 1 runs.
import assert from "node:assert/strict";
import { goto, launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, ns, pod, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

const browser = await launch();
const errors = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
page.on("pageerror", (err) => errors.push(String(err)));
const shot = async (name) => page.screenshot({ path: `${shots}/logs-${name}.png` });
const pane = () => page.locator(".pane:not([hidden])");
const logText = () => pane().locator(".log").innerText();
async function waitForLog(test, what) {
  await page.waitForFunction(
    ([source]) => new RegExp(source).test(document.querySelector(".pane:not([hidden]) .log")?.innerText || ""),
    [test.source],
    { timeout: 15000 },
  ).catch(async (err) => {
    await shot(`failed-${what}`);
    throw new Error(`${what}: ${test} not shown:\n${await logText()}\n${err.message}`);
  });
}

await goto(page, url);
const button = page.locator(`[data-logs="${ns}/${pod}/app"]`);
await button.waitFor();
await button.click();
assert.match(await page.locator(".tab[aria-selected=true]").innerText(), /logs/);

// Followed: new ticks keep arriving.
await waitForLog(/tick \d+/, "a tick");
const first = Number((await logText()).match(/tick (\d+)/g).pop().split(" ")[1]);
await waitForLog(new RegExp(`tick ${first + 2}\\b`), "a later tick while following");
assert.match(await pane().locator(".status").innerText(), /following/);
await shot("following");

// The search box filters the shown lines.
await pane().locator(".log-search").fill(`tick ${first}`);
const filtered = (await logText()).trim().split("\n");
assert.ok(filtered.every((l) => l.includes(`tick ${first}`)), `only matching lines: ${filtered}`);
assert.match(await pane().locator(".log-count").innerText(), /of \d+ lines/);
await pane().locator(".log-search").fill("");

// The previous instance: its own lines, and the search on them.
await pane().locator(".previous").check();
await waitForLog(/alpha-3/, "the previous instance");
assert.match(await logText(), /^alpha-1\nbeta-2\nalpha-3\n/);
assert.match(await pane().locator(".status").innerText(), /previous instance/);
await pane().locator(".log-search").fill("alpha");
assert.equal((await logText()).trim(), "alpha-1\nalpha-3");
await shot("previous-search");

assert.deepEqual(errors, [], "no console errors");
await browser.close();
