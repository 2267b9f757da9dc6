#!/usr/bin/env bash
# A local node and the agent on it, from a fresh Debian 12 machine, as root:
#   a private containerd with demo pods (busybox with a shell, a distroless
#   server, a two-container pod; namespaces default and shop), then
#   `nsdebug serve` against it in the foreground. Ctrl-C stops the agent; the
#   node keeps running (`hack/testbed.sh down` removes it).
#
#   NSDEBUG_DEMO_PORT=7443 (default) picks the agent's loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${NSDEBUG_DEMO_PORT:-7443}

[[ $(id -u) == 0 ]] || { echo "hack/demo.sh: run as root (it starts containerd)" >&2; exit 2; }

echo "==> node: private containerd with CNI and local images"
socket=$(bash hack/testbed.sh up)
# The agent links libseccomp (the container profile's seccomp filters) and
# libpcap (packet capture).
missing=()
for package in libseccomp-dev libpcap-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]} (libraries the agent links)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
echo "==> building nsdebug"
# One build for both: the agent and the test bed binary that makes the pods.
cargo build --release --locked -p nsdebug --bin nsdebug -p nsdebug-testbed --bin nsdebug-testbed
echo "==> demo pods"
NSDEBUG_CRI_SOCKET=$socket target/release/nsdebug-testbed up

url="http://127.0.0.1:${port}"
cat <<MSG

==> nsdebug agent on ${url}  (Ctrl-C to stop)

  Browser:   ${url}/            (web terminal: pick a container, get a shell)
  curl:      curl -s ${url}/v1/targets | python3 -m json.tool
             curl -s ${url}/v1/targets/shop/web            # the pod's default container
             curl -s ${url}/api/v1/namespaces/shop/pods/hello
  kubectl:   kubectl --server ${url} get pods -A -o wide
             kubectl --server ${url} get pod web -n shop -o yaml
             kubectl --server ${url} exec -it busybox -- sh
             kubectl --server ${url} exec -n shop web -c logger -- ps
  run API:   curl -s -XPOST ${url}/v1/targets/default/busybox/run --json '{"command":["ps"]}'
             curl -s -XPOST ${url}/v1/targets/shop/hello/run --json '{"command":["ss","-tlnp"],"toolbox":true}'

  health:    curl -s ${url}/readyz

MSG
# The local demo has no Kubernetes API server to check tokens with: plain HTTP
# and no authentication, which the agent allows on loopback only.
# The toolbox runs the test bed's tool tree (hack/image/toolbox.sh), the
# layout the image ships at /toolbox.
toolbox_root=$(bash hack/testbed.sh env | sed -n 's/^NSDEBUG_TOOLBOX_ROOT=//p')
exec target/release/nsdebug serve --cri-socket "$socket" --listen "127.0.0.1:${port}" \
    --insecure-http --auth none --node-name "$(hostname)" --toolbox-root "$toolbox_root"
