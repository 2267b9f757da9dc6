// What every browser test shares: Debian's Chromium through playwright-core,
// started with the flags this machine needs, and a page load that survives
// Chromium's ERR_NETWORK_CHANGED (a pod created elsewhere adds a veth pair).
import { createRequire } from "node:module";

const require = createRequire(new URL("../../hack/web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// Loads `url`, trying again (up to three times) only for a network change.
export async function goto(page, url) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page.goto(url);
    } catch (err) {
      if (attempt >= 3 || !/ERR_NETWORK_CHANGED/.test(err.message)) throw err;
    }
  }
}
