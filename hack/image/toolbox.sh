#!/usr/bin/env bash
# Lays out the agent image's filesystem in OUT: the nsdebug binary (when given)
# and the toolbox of diagnostic tools that toolbox mode runs inside pods,
# each with exactly the shared libraries it loads, plus the few /etc files
# they read. The Dockerfile runs this in its toolbox stage and copies OUT
# into an empty image; tests/image.rs runs it on this machine and uses the
# result as --toolbox-root, so the layout the image ships is the one tested.
#
#   hack/image/toolbox.sh OUT [NSDEBUG_BINARY]
#
# The tools must be installed where it runs (the Dockerfile's apt-get line;
# hack/test.sh installs the same packages). A missing tool is an error.
set -euo pipefail

if [[ ${1:-} == --tools-only ]]; then
    out=${2:?usage: toolbox.sh --tools-only DIR}
    agent=
else
    out=${1:?usage: toolbox.sh OUT [NSDEBUG_BINARY]}
    agent=${2:-}
fi

# The toolbox: what an SRE reaches for in a pod that has nothing.
tools=(
    busybox            # sh, ls, cat, vi, wget, nc, ping, nslookup, top... (applets below)
    ip ss              # iproute2
    ps pgrep top free  # procps
    tcpdump strace lsof
    curl
)
# Not dig: bind9's libraries bring 30 MB of ICU data; busybox nslookup and the
# agent's own DNS probe (GET .../diag/dns) answer the same questions.

mkdir -p "$out"/{bin,usr/bin,usr/sbin,usr/local/bin,etc,tmp}
chmod 1777 "$out/tmp"

copied=()
# Copies FILE (resolving symlinks) to the same path under OUT, once.
place() {
    local file=$1
    [[ " ${copied[*]-} " == *" $file "* ]] && return 0
    mkdir -p "$out$(dirname "$file")"
    cp -L "$file" "$out$file"
    copied+=("$file")
}

# The libraries the dynamic loader resolves for a binary.
libraries_of() {
    local binary=$1 lib
    # `ldd` lists "name => /path (addr)" and the loader as "/path (addr)";
    # a static binary has none.
    while read -r lib; do
        [[ -n $lib ]] && place "$lib"
    done < <(ldd "$binary" 2>/dev/null | grep -oE '/[^ ]+' || true)
}

for tool in "${tools[@]}"; do
    path=$(command -v "$tool" || true)
    if [[ -z $path ]]; then
        echo "toolbox.sh: $tool is not installed here" >&2
        exit 1
    fi
    place "$(readlink -f "$path")"
    libraries_of "$(readlink -f "$path")"
    # Keep the name the tool is called by (procps's `pgrep` is `pkill`, ...).
    real=$(readlink -f "$path")
    if [[ $(basename "$real") != "$tool" ]]; then
        ln -sf "$real" "$out$(dirname "$real")/$tool"
    fi
done

# busybox applets for everything else, in /bin (last on PATH, so the real
# tools above win).
busybox=$(readlink -f "$(command -v busybox)")
for applet in $(busybox --list); do
    if ! [[ -e $out/usr/bin/$applet || -e $out/usr/sbin/$applet || -e $out/bin/$applet ]]; then
        ln -s "$busybox" "$out/bin/$applet"
    fi
done

# What the tools read: name lookups (files, then DNS: toolbox mode puts the
# pod's resolv.conf and hosts over these), service and protocol names, CA
# certificates for curl, and users for ps and ls.
printf 'hosts: files dns\npasswd: files\ngroup: files\n' > "$out/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$out/etc/group"
: > "$out/etc/resolv.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$out/etc/hosts"
: > "$out/etc/hostname"
for file in /etc/services /etc/protocols /etc/ssl/certs/ca-certificates.crt; do
    [[ -f $file ]] && place "$file"
done
# The libraries some tools open at run time rather than link: NSS modules.
for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2 \
    /usr/lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_dns.so.2; do
    [[ -f $lib ]] && place "$lib"
done

if [[ -n $agent ]]; then
    libraries_of "$(readlink -f "$agent")"
    install -m 0755 "$agent" "$out/usr/local/bin/nsdebug"
fi
echo "toolbox.sh: $(du -sh "$out" | cut -f1) in $out ($(find "$out" -type f | wc -l) files)"
