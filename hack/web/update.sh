#!/usr/bin/env bash
# Vendors the web terminal's front-end dependencies into src/api/ui/vendor,
# from the exact versions in package-lock.json (npm ci). The agent embeds
# those files at build time; nothing is fetched at run time.
#   To upgrade: edit the versions in hack/web/package.json, run
#   `npm install --prefix hack/web` to refresh the lock file, then this script,
#   and commit package.json, package-lock.json and src/api/ui/vendor together.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund >/dev/null
out=../../src/api/ui/vendor
mkdir -p "$out"
cp node_modules/@xterm/xterm/lib/xterm.mjs "$out/xterm.mjs"
cp node_modules/@xterm/xterm/css/xterm.css "$out/xterm.css"
cp node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$out/addon-fit.mjs"
# The source maps point at files we do not ship.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/xterm.mjs" "$out/addon-fit.mjs"
cp node_modules/@xterm/xterm/LICENSE "$out/LICENSE-xterm.txt"
echo "vendored @xterm/xterm $(node -p "require('./node_modules/@xterm/xterm/package.json').version"), @xterm/addon-fit $(node -p "require('./node_modules/@xterm/addon-fit/package.json').version") into src/api/ui/vendor"
