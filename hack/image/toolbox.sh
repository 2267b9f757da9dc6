#!/usr/bin/env bash
# Lays out the agent image's filesystem in OUT: the nsdebug binary (when
# given) with exactly the shared libraries it loads, and, apart from it, the
# tool tree that toolbox mode runs inside pods (--toolbox-root /toolbox).
# The Dockerfile runs this in its toolbox stage and copies OUT into an empty
# image; tests/integration/image.rs runs it on this machine and uses OUT/toolbox as
# --toolbox-root, so the layout the image ships is the one tested.
#
#   hack/image/toolbox.sh OUT [NSDEBUG_BINARY]
#   hack/image/toolbox.sh --tools-only DIR
#
# OUT (the image's root):
#   usr/local/bin/nsdebug       the agent
#   lib/..., lib64/...          the libraries the agent loads, nothing else
#   etc/                        the agent's: passwd, group, nsswitch.conf, CA bundle
#   tmp/                        a mount point only (the toolbox's scratch root)
#   toolbox/                    the tool tree: bin, usr, lib*, etc, tmp
#
# The tool tree is shown read-only to toolbox sessions, so it holds no
# secret of the agent: its own /etc has only what the tools read (users,
# name lookup, services, protocols, CA certificates), and the pod's TLS key,
# service-account token and anything else mounted into the agent's
# container are outside it. Nothing in it is setuid or setgid.
#
# --tools-only DIR lays out the tool tree alone, directly in DIR (the test
# bed's toolbox root). It does nothing when DIR already holds the tree this
# script, with these tools, makes (a stamp file, DIR/.toolbox-stamp), and
# replaces DIR only when it is empty or one it made before. DIR.lock beside
# it keeps two runs from laying it out at once.
#
# The tools must be installed where it runs (the Dockerfile's apt-get line;
# hack/test.sh installs the same packages). A missing tool is an error.
set -euo pipefail

usage="usage: toolbox.sh OUT [NSDEBUG_BINARY] | toolbox.sh --tools-only DIR"
tools_only=false
if [[ ${1-} == --tools-only ]]; then
    tools_only=true
    shift
    [[ $# -eq 1 ]] || { echo "$usage" >&2; exit 2; }
fi
out=${1:?$usage}
agent=${2:-}

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

# The tool tree's /etc files copied from here, when present.
etc_copied=(/etc/services /etc/protocols /etc/ssl/certs/ca-certificates.crt)
# The libraries some tools open at run time rather than link: NSS modules.
nss_modules=(
    /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2
    /usr/lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_dns.so.2
)

# The real path of every tool, or an error naming the missing one.
tool_paths=()
for tool in "${tools[@]}"; do
    path=$(command -v "$tool" || true)
    if [[ -z $path ]]; then
        echo "toolbox.sh: $tool is not installed here" >&2
        exit 1
    fi
    tool_paths+=("$path")
done

# Copies FILE (resolving symlinks) to the same path under ROOT, once per root.
declare -A copied=()
place() {
    local root=$1 file=$2
    [[ -n ${copied["$root$file"]-} ]] && return 0
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
    copied["$root$file"]=1
}

# Copies the libraries the dynamic loader resolves for BINARY under ROOT.
libraries_of() {
    local root=$1 binary=$2 lib
    # `ldd` lists "name => /path (addr)" and the loader as "/path (addr)";
    # a static binary has none.
    while read -r lib; do
        [[ -n $lib ]] && place "$root" "$lib"
    done < <(ldd "$binary" 2>/dev/null | grep -oE '/[^ ]+' || true)
}

# The tool tree, in ROOT.
tool_tree() {
    local root=$1 path real tool applet file lib
    mkdir -p "$root"/{bin,usr/bin,usr/sbin,etc,tmp}
    # Empty: toolbox mode mounts a scratch tmpfs there.
    chmod 1777 "$root/tmp"
    for path in "${tool_paths[@]}"; do
        tool=$(basename "$path")
        real=$(readlink -f "$path")
        place "$root" "$real"
        libraries_of "$root" "$real"
        # Keep the name the tool is called by (procps's `pgrep` is `pkill`, ...).
        if [[ $(basename "$real") != "$tool" ]]; then
            ln -sf "$real" "$root$(dirname "$real")/$tool"
        fi
    done

    # busybox applets for everything else, in /bin (last on PATH, so the real
    # tools above win).
    local busybox
    busybox=$(readlink -f "$(command -v busybox)")
    for applet in $(busybox --list); do
        if ! [[ -e $root/usr/bin/$applet || -e $root/usr/sbin/$applet || -e $root/bin/$applet ]]; then
            ln -s "$busybox" "$root/bin/$applet"
        fi
    done

    # What the tools read: name lookups (files, then DNS: toolbox mode puts
    # the pod's resolv.conf, hosts and hostname over these), service and
    # protocol names, CA certificates for curl, and users for ps and ls. No
    # shadow file: no tool logs anyone in.
    printf 'hosts: files dns\npasswd: files\ngroup: files\n' > "$root/etc/nsswitch.conf"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    : > "$root/etc/resolv.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
    : > "$root/etc/hostname"
    for file in "${etc_copied[@]}"; do
        [[ -f $file ]] && place "$root" "$file"
    done
    for lib in "${nss_modules[@]}"; do
        [[ -f $lib ]] && place "$root" "$lib"
    done
    # Nothing that runs there gains privileges by being run.
    find "$root" -type f -perm /6000 -exec chmod ug-s {} +
}

if $tools_only; then
    # What the tree is made of: this script and the tools it copies.
    stamp=$( { sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
               for path in "${tool_paths[@]}"; do
                   stat -L -c '%n %s %Y' "$(readlink -f "$path")"
               done; } | sha256sum | cut -d' ' -f1 )
    mkdir -p "$(dirname "$out")"
    # One layout at a time (parallel test binaries share the tree).
    exec 9> "$out.lock"
    flock 9
    if [[ -f $out/.toolbox-stamp && $(< "$out/.toolbox-stamp") == "$stamp" ]]; then
        exit 0
    fi
    if [[ -e $out && ! -f $out/.toolbox-stamp ]] && [[ -n $(ls -A "$out") ]]; then
        echo "toolbox.sh: $out is not empty and not a tool tree this script made" >&2
        exit 1
    fi
    new=$(mktemp -d "$out.new.XXXXXX")
    trap 'rm -rf "$new"' EXIT
    tool_tree "$new"
    echo "$stamp" > "$new/.toolbox-stamp"
    chmod 0755 "$new"
    if [[ -e $out ]]; then
        old=$(mktemp -d "$out.old.XXXXXX")
        mv "$out" "$old/tree"
        mv "$new" "$out"
        rm -rf "$old"
    else
        mv "$new" "$out"
    fi
    echo "toolbox.sh: $(du -sh "$out" | cut -f1) in $out ($(find "$out" -type f | wc -l) files)"
    exit 0
fi

tool_tree "$out/toolbox"

# The agent's own root: its binary and libraries, the /etc it reads (user
# names in logs, host name lookup for a kubeconfig's server, CA
# certificates for a server a kubeconfig names without its own CA), and
# /tmp, where toolbox mode mounts the tool tree's view.
mkdir -p "$out"/{usr/local/bin,etc/ssl/certs,tmp}
chmod 1777 "$out/tmp"
printf 'hosts: files dns\npasswd: files\ngroup: files\n' > "$out/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/nonexistent\n' > "$out/etc/passwd"
printf 'root:x:0:\n' > "$out/etc/group"
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && place "$out" /etc/ssl/certs/ca-certificates.crt
if [[ -n $agent ]]; then
    libraries_of "$out" "$(readlink -f "$agent")"
    install -m 0755 "$agent" "$out/usr/local/bin/nsdebug"
fi
echo "toolbox.sh: $(du -sh "$out" | cut -f1) in $out ($(find "$out" -type f | wc -l) files; tool tree $(du -sh "$out/toolbox" | cut -f1))"
