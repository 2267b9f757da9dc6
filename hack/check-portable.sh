#!/usr/bin/env bash
# Checks that the kubectl plugin stays portable: most kubectl users run macOS
# or Windows, so the plugin's dependency tree for those targets may hold
# neither the agent nor any crate that is Linux-only or links a native
# library the user would have to install (the agent's libseccomp, libpcap,
# procfs, the CRI's gRPC stack).
#   hack/check-portable.sh [--build]
# Reads `cargo tree` for aarch64-apple-darwin and x86_64-pc-windows-msvc
# (normal and build dependencies; needs no target toolchain, no root, and
# seconds). With --build it also runs `cargo check` for each target whose
# standard library rustup has installed (`rustup target add TARGET`), which
# type-checks the plugin's Rust, its cfg(not(unix)) paths included, for that
# target (a few minutes). The C code of its dependencies (ring) would need
# that target's C compiler and SDK, which a Linux machine does not have:
# unless CC_<target> is set, a stub compiler and archiver stand in for them,
# which is enough for a check (nothing is linked) and nothing else.
# hack/test.sh runs it without --build.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(aarch64-apple-darwin x86_64-pc-windows-msvc)
# The agent itself, and what only the agent needs: Linux-only crates and
# bindings to native libraries. Exact package names.
FORBIDDEN=(
    nsdebug
    libseccomp libseccomp-sys
    pcap pcap-sys
    procfs procfs-core
    k8s-cri tonic tonic-build prost prost-build
    nix
    oci-spec
    libbpf-sys openssl-sys
)

build=false
case ${1:-} in
    --build) build=true ;;
    "") ;;
    *) echo "usage: hack/check-portable.sh [--build]" >&2; exit 2 ;;
esac

failed=0
for target in "${TARGETS[@]}"; do
    # One package name per line, without versions or duplicates.
    if ! tree=$(cargo tree --locked -p kubectl-nsdebug --target "$target" \
        -e normal,build --prefix none --format '{p}' 2>&1); then
        echo "check-portable: cargo tree failed for $target:" >&2
        echo "$tree" >&2
        exit 1
    fi
    packages=$(awk '{print $1}' <<<"$tree" | sort -u)
    found=()
    for name in "${FORBIDDEN[@]}"; do
        if grep -qx -- "$name" <<<"$packages"; then
            found+=("$name")
        fi
    done
    if ((${#found[@]})); then
        failed=1
        echo "check-portable: kubectl-nsdebug for $target depends on ${found[*]}," >&2
        echo "  which is the agent, Linux-only or a native library; the plugin must build" >&2
        echo "  on macOS and Windows. How each gets in:" >&2
        for name in "${found[@]}"; do
            cargo tree --locked -p kubectl-nsdebug --target "$target" -e normal,build \
                -i "$name" --depth 3 >&2 || true
        done
    else
        echo "check-portable: kubectl-nsdebug for $target: $(wc -l <<<"$packages") crates, none of ${#FORBIDDEN[@]} forbidden"
    fi
done
((failed == 0)) || exit 1

if $build; then
    installed=$(rustup target list --installed 2>/dev/null || true)
    stubs=$(mktemp -d)
    trap 'rm -rf "$stubs"' EXIT
    # The stub C compiler writes an empty object where -o or /Fo says; the
    # stub archiver an empty archive where `ar cq` or `lib /OUT:` says.
    cat >"$stubs/cc" <<'STUB'
#!/bin/sh
out=
while [ $# -gt 0 ]; do
    case $1 in -o) out=$2; shift ;; -Fo*|/Fo*) out=${1#?Fo} ;; esac
    shift
done
[ -n "$out" ] && : >"$out"
exit 0
STUB
    cat >"$stubs/ar" <<'STUB'
#!/bin/sh
for a in "$@"; do
    case $a in -out:*|-OUT:*|/out:*|/OUT:*) printf '!<arch>\n' >"${a#*:}"; exit 0 ;; esac
done
case $1 in *c*) printf '!<arch>\n' >"$2" ;; esac
exit 0
STUB
    chmod +x "$stubs/cc" "$stubs/ar"
    for target in "${TARGETS[@]}"; do
        if grep -qx -- "$target" <<<"$installed"; then
            echo "check-portable: cargo check -p kubectl-nsdebug --target $target"
            var=${target//-/_}
            cc_var=CC_$var ar_var=AR_$var
            env "$cc_var=${!cc_var:-$stubs/cc}" "$ar_var=${!ar_var:-$stubs/ar}" \
                cargo check --locked -p kubectl-nsdebug --target "$target"
        else
            echo "check-portable: $target's standard library is not installed (rustup target add $target); not compiled"
        fi
    done
fi
