// The web UI's logins in headless Chromium, against an agent with TLS and
// Kubernetes authentication (its users come from the test's fake API server):
// a one-time login link, a pasted token, the terminal under that identity,
// and logging out.
//   node tests/browser/login.mjs URL LOGIN_LINK NAMESPACE SCREENSHOT_DIR BOBS_LINK
// The namespace holds desk (busybox, container "shell"); the user "alice"
// (token "alice-token") may exec there. BOBS_LINK was minted by "bob".
import assert from "node:assert/strict";
import { goto, launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, link, ns, shots, bobsLink] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

const browser = await launch();
const errors = [];
// The agent's certificate is self-signed: accepted, as after a port-forward.
const open = async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(String(err)));
  return page;
};
let step = 0;
const shot = (page, name) => page.screenshot({ path: `${shots}/login-${String(++step).padStart(2, "0")}-${name}.png` });

// 1. Without a login the page asks for one, and a wrong token is refused.
const first = await open();
await goto(first, url);
await first.locator("#login").waitFor();
assert.ok(!(await first.locator("#auth").isVisible()), "no demo-mode banner with real authentication");
await first.locator("#login-token").fill("stolen");
await first.locator("#login-submit").click();
await first.getByText("Unauthorized: invalid bearer token").waitFor();
await shot(first, "refused-token");

// 2. The one-time link says whose it is, and logs in as alice once she
// agrees; the terminal runs as her.
const page = await open();
await goto(page, link);
await page.locator("#confirm-user").getByText("alice").waitFor();
assert.ok(!page.url().includes("login="), `the code leaves the address bar: ${page.url()}`);
await shot(page, "confirm-link");
await page.locator("#confirm-yes").click();
await page.locator("#user").getByText("alice").waitFor();
assert.ok(!(await page.locator("#login").isVisible()), "logged in");
assert.ok(!page.url().includes("login="), `the code leaves the address bar: ${page.url()}`);
await page.locator(`[data-target="${ns}/desk/shell"]`).click();
await page.waitForFunction(() => /\/ #/.test(document.querySelector(".pane:not([hidden]) .xterm-rows")?.innerText ?? ""), null, { timeout: 15000 });
await page.keyboard.type("hostname");
await page.keyboard.press("Enter");
await page.waitForFunction(() => /hostname\s*\n\s*desk/.test(document.querySelector(".pane:not([hidden]) .xterm-rows")?.innerText ?? ""), null, { timeout: 15000 });
await shot(page, "terminal-as-alice");

// 3. The same link again, in a fresh browser: spent.
const again = await open();
await goto(again, link);
await again.getByText(/this login link is not valid: it was used already/).waitFor();
await shot(again, "link-used");
// ...but pasting a token still works there.
await again.locator("#login-token").fill("alice-token");
await again.locator("#login-submit").click();
await again.locator("#user").getByText("alice").waitFor();
await again.locator(`[data-target="${ns}/desk/shell"]`).waitFor();

// 4. Bob's link opened in alice's tab says so, and she stays alice.
await goto(page, bobsLink);
await page.getByText("This tab is logged in as alice. The link logs in as bob").waitFor();
await shot(page, "someone-elses-link");
await page.locator("#confirm-no").getByText("Stay alice").click();
await page.locator("#user").getByText("alice").waitFor();
assert.ok(!(await page.locator("#confirm").isVisible()), "the question is gone");
const me = await page.evaluate(async () => {
  const token = sessionStorage.getItem("nsdebug.session");
  return (await (await fetch("/v1/whoami", { headers: { Authorization: `Bearer ${token}` } })).json()).user.name;
});
assert.equal(me, "alice", "the tab's session is still alice's");

// 5. Logging out ends the session and asks again.
await page.locator("#logout").click();
await page.getByText("Logged out.").waitFor();
await page.reload();
await page.locator("#login").waitFor();
await shot(page, "logged-out");

assert.deepEqual(errors, [], "no page errors");
await browser.close();
