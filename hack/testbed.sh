#!/usr/bin/env bash
# nsdebug testbed: a private containerd (CRI enabled) with a CNI bridge and a
# few locally built images, for integration tests that need real pods.
#
#   hack/testbed.sh up       install deps, build+import images, start containerd;
#                            prints the CRI socket path on stdout (logs on stderr)
#   hack/testbed.sh down     stop everything this testbed started and clean up
#                            (down --purge also drops the image build cache)
#   hack/testbed.sh stop-runtime   stop containerd only (pods keep running)
#   hack/testbed.sh start-runtime  start containerd again after stop-runtime
#   hack/testbed.sh status   is it running, socket, images
#   hack/testbed.sh env      KEY=VALUE lines, e.g.  set -a; eval "$(hack/testbed.sh env)"; set +a
#
# Paths (override via environment):
#   NSDEBUG_TESTBED_STATE  (default /run/nsdebug-testbed)      socket, config, pid, log, CNI conf
#   NSDEBUG_TESTBED_ROOT   (default /var/lib/nsdebug-testbed)  containerd root, image build cache
#
# This never touches a system containerd (/run/containerd/containerd.sock):
# everything is found through our own socket, config and state paths.
set -euo pipefail

STATE=${NSDEBUG_TESTBED_STATE:-/run/nsdebug-testbed}
ROOT=${NSDEBUG_TESTBED_ROOT:-/var/lib/nsdebug-testbed}
STATE=${STATE%/}
ROOT=${ROOT%/}
for _d in "$STATE" "$ROOT"; do
  case "$_d" in
    /*/*) ;;
    *)
      echo "testbed: error: NSDEBUG_TESTBED_STATE/ROOT must be absolute paths at least two levels deep, got '$_d'" >&2
      exit 2
      ;;
  esac
  case "$_d" in
    /var/lib | /var/run | /run/user | /usr/* | /etc/* | /proc/* | /sys/* | /dev/*)
      echo "testbed: error: refusing to use '$_d' as a testbed directory" >&2
      exit 2
      ;;
  esac
done
unset _d

SOCK="$STATE/containerd.sock"
TTRPC_SOCK="$STATE/containerd.sock.ttrpc"
CONFIG="$STATE/config.toml"
PIDFILE="$STATE/containerd.pid"
LOG="$STATE/containerd.log"
CNI_DIR="$STATE/cni/net.d"
CNI_IPAM_DIR="$STATE/cni/ipam"
CTRD_ROOT="$ROOT/containerd"
CTRD_STATE="$STATE/containerd"
RUNC_ROOT="$STATE/runc"
OPT_DIR="$ROOT/opt"
IMAGE_CACHE="$ROOT/images"
# The tool tree toolbox mode and the privileged profile run (what the
# image ships at /toolbox), laid out by hack/image/toolbox.sh.
TOOLBOX_DIR="$ROOT/toolbox"

CNI_NAME="nsdebug-testbed"
BRIDGE="nsdbg0"
SUBNET="10.99.0.0/24"
CNI_BIN_DIR="/usr/lib/cni"
K8S_NS="k8s.io"

PAUSE_IMAGE="nsdebug.local/pause:1"
BUSYBOX_IMAGE="nsdebug.local/busybox:1"
HELLO_IMAGE="nsdebug.local/distroless-hello:1"

# Bump when the image recipes in this script change (part of the cache key).
IMAGE_RECIPE_VERSION=1

APT_PACKAGES=(containerd runc containernetworking-plugins busybox-static protobuf-compiler
  iproute2 gcc libc6-dev python3 procps mount util-linux
  tcpdump strace lsof curl ca-certificates)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR="$SCRIPT_DIR/testbed"

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

log() { printf 'testbed: %s\n' "$*" >&2; }
die() {
  printf 'testbed: error: %s\n' "$*" >&2
  exit 1
}

python() {
  if [[ -x /usr/bin/python3 ]]; then
    /usr/bin/python3 "$@"
  else
    python3 "$@"
  fi
}

ctr_() { ctr -a "$SOCK" "$@"; }

# ---------------------------------------------------------------------------
# packages

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  [[ $(id -u) == 0 ]] || die "need root to install: ${missing[*]}"
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# ---------------------------------------------------------------------------
# images

image_cache_key() {
  {
    echo "recipe=$IMAGE_RECIPE_VERSION"
    echo "arch=$(uname -m)"
    gcc -dumpfullversion 2>/dev/null || gcc -dumpversion
    sha256sum "$SRC_DIR/mkimage.py" "$SRC_DIR/pause.c" "$SRC_DIR/hello.c" /bin/busybox | awk '{print $1}'
  } | sha256sum | cut -c1-16
}

build_images() {
  local key dir tmp
  key=$(image_cache_key)
  dir="$IMAGE_CACHE/$key"
  IMAGE_DIR="$dir"
  if [[ -f "$dir/done" ]]; then
    return 0
  fi
  log "building images (cache key $key)"
  mkdir -p "$IMAGE_CACHE"
  tmp=$(mktemp -d "$IMAGE_CACHE/build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT

  # static binaries
  gcc -static -O2 -s -Wall -o "$tmp/pause" "$SRC_DIR/pause.c"
  gcc -static -O2 -s -Wall -o "$tmp/hello" "$SRC_DIR/hello.c"

  # pause
  mkdir -p "$tmp/rootfs-pause"
  install -m 0755 "$tmp/pause" "$tmp/rootfs-pause/pause"
  python "$SRC_DIR/mkimage.py" --name "$PAUSE_IMAGE" --rootfs "$tmp/rootfs-pause" \
    --entrypoint '["/pause"]' --out "$tmp/pause.tar" >"$tmp/pause.digest"

  # distroless-hello: only /hello
  mkdir -p "$tmp/rootfs-hello"
  install -m 0755 "$tmp/hello" "$tmp/rootfs-hello/hello"
  python "$SRC_DIR/mkimage.py" --name "$HELLO_IMAGE" --rootfs "$tmp/rootfs-hello" \
    --entrypoint '["/hello"]' --env PORT=8080 --out "$tmp/distroless-hello.tar" >"$tmp/distroless-hello.digest"

  # busybox
  local bb="$tmp/rootfs-busybox" applet
  mkdir -p "$bb/bin" "$bb/etc" "$bb/root" "$bb/tmp"
  chmod 0755 "$bb" "$bb/bin" "$bb/etc"
  chmod 0700 "$bb/root"
  chmod 1777 "$bb/tmp"
  install -m 0755 /bin/busybox "$bb/bin/busybox"
  while read -r applet; do
    [[ -n "$applet" && "$applet" != busybox && "$applet" != */* ]] || continue
    ln -sf busybox "$bb/bin/$applet"
  done < <(/bin/busybox --list | sort -u)
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$bb/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$bb/etc/group"
  chmod 0644 "$bb/etc/passwd" "$bb/etc/group"
  python "$SRC_DIR/mkimage.py" --name "$BUSYBOX_IMAGE" --rootfs "$bb" \
    --cmd '["sh"]' --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --out "$tmp/busybox.tar" >"$tmp/busybox.digest"

  mkdir -p "$dir"
  local n
  for n in pause busybox distroless-hello; do
    mv -f "$tmp/$n.tar" "$tmp/$n.digest" "$dir/"
  done
  touch "$dir/done"
  rm -rf "$tmp"
  trap - EXIT
  # drop stale cache generations
  local d
  for d in "$IMAGE_CACHE"/*/; do
    d=${d%/}
    [[ "$d" == "$dir" ]] || rm -rf "$d"
  done
}

import_images() {
  local listing n ref want have
  listing=$(ctr_ -n "$K8S_NS" images ls 2>/dev/null || true)
  for n in pause busybox distroless-hello; do
    case $n in
      pause) ref=$PAUSE_IMAGE ;;
      busybox) ref=$BUSYBOX_IMAGE ;;
      distroless-hello) ref=$HELLO_IMAGE ;;
    esac
    want=$(cat "$IMAGE_DIR/$n.digest")
    have=$(awk -v r="$ref" '$1 == r {print $3}' <<<"$listing")
    if [[ "$have" == "$want" ]]; then
      continue
    fi
    log "importing $ref ($want)"
    ctr_ -n "$K8S_NS" images import "$IMAGE_DIR/$n.tar" >&2
    have=$(ctr_ -n "$K8S_NS" images ls | awk -v r="$ref" '$1 == r {print $3}')
    [[ "$have" == "$want" ]] || die "import of $ref failed (have '$have', want '$want')"
  done
}

# ---------------------------------------------------------------------------
# config

write_file_if_changed() { # path content -> returns 0 if changed
  local path=$1 content=$2
  if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
    return 1
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.tmp"
  mv -f "$path.tmp" "$path"
  return 0
}

containerd_config() {
  cat <<EOF
# Generated by hack/testbed.sh -- private containerd for the nsdebug testbed.
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
oom_score = 0
# Snapshotters that cannot work here; disabling them keeps the log clean.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$TTRPC_SOCK"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$OPT_DIR"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # This VM refuses negative oom_score_adj; runc fails without this.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # Keep the pods' network namespaces under our state dir, not /run/netns.
    netns_mounts_under_state_dir = true
    disable_apparmor = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$RUNC_ROOT"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$CNI_DIR"
      max_conf_num = 1
EOF
}

cni_config() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$CNI_IPAM_DIR"
      }
    }
  ]
}
EOF
}

# ---------------------------------------------------------------------------
# process helpers

proc_cmdline() { # pid -> cmdline with NULs replaced by spaces
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# Our containerd: a process whose argv has --config <our config>.
is_our_containerd() {
  local pid=$1 exe
  [[ -d /proc/$pid ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  [[ "$exe" == */containerd || "$exe" == */containerd" (deleted)" ]] || return 1
  [[ " $(proc_cmdline "$pid")" == *" --config $CONFIG "* ]]
}

containerd_pids() {
  local pid
  if [[ -f "$PIDFILE" ]]; then
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_our_containerd "$pid"; then
      echo "$pid"
    fi
  fi
  # also any stray one started with our config (e.g. pid file lost)
  for pid in $(pgrep -x containerd 2>/dev/null || true); do
    if is_our_containerd "$pid" && [[ "$pid" != "$(cat "$PIDFILE" 2>/dev/null || true)" ]]; then
      echo "$pid"
    fi
  done
}

# live containerd daemons that are not ours
other_containerd_pids() {
  local pid
  for pid in $(pgrep -x containerd 2>/dev/null || true); do
    pid_alive "$pid" || continue
    is_our_containerd "$pid" || echo "$pid"
  done
}

# containerd shims serving our containerd: "-address <our socket>" in argv.
shim_pids() {
  local pid
  for pid in $(pgrep -f 'containerd-shim' 2>/dev/null || true); do
    [[ "$pid" != "$$" ]] || continue
    if [[ " $(proc_cmdline "$pid")" == *" -address $SOCK "* ]]; then
      echo "$pid"
    fi
  done
}

answering() {
  [[ -S "$SOCK" ]] && timeout 5 ctr -a "$SOCK" version >/dev/null 2>&1
}

pid_alive() { # true if pid exists and is not a zombie
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [[ "${s%% *}" != Z ]]
}

wait_gone() { # timeout_s pid...
  local t=$1 deadline pid alive
  shift
  deadline=$((SECONDS + t))
  while :; do
    alive=0
    for pid in "$@"; do
      pid_alive "$pid" && alive=1
    done
    ((alive)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------
# up

start_containerd() {
  mkdir -p "$STATE" "$CTRD_ROOT" "$CTRD_STATE" "$OPT_DIR"
  rm -f "$SOCK" "$TTRPC_SOCK"
  log "starting containerd (log: $LOG)"
  {
    echo "==== $(date -u +%FT%TZ) starting containerd --config $CONFIG"
  } >>"$LOG"
  # bash -c writes its own pid, then execs containerd: the pid file is exact
  # whether or not setsid forks.
  # fd 9 is the up/down lock: containerd (and its shims) must not inherit it.
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
    containerd --config "$CONFIG" </dev/null >>"$LOG" 2>&1 9>&- &
  local deadline=$((SECONDS + 20)) pid
  while ! answering; do
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      tail -n 30 "$LOG" >&2 || true
      die "containerd exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOG" >&2 || true
      die "containerd did not answer on $SOCK within 20s"
    fi
    sleep 0.2
  done
}

stop_containerd_only() {
  local pids
  pids=$(containerd_pids)
  [[ -n "$pids" ]] || return 0
  log "stopping containerd ($(echo $pids))"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  if ! wait_gone 10 $pids; then
    log "containerd did not exit on SIGTERM, killing"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait_gone 5 $pids || true
  fi
  rm -f "$PIDFILE"
}

# containerd is not running: clear whatever a previous run left behind (shims,
# containers, mounts, bridge) so we always start from a clean slate.
preclean() {
  local leftovers=0
  [[ -n "$(shim_pids)" ]] && leftovers=1
  [[ -n "$(mounts_under "$STATE" "$ROOT")" ]] && leftovers=1
  [[ -d "$CTRD_STATE" || -d "$CTRD_ROOT/io.containerd.metadata.v1.bolt" ]] && leftovers=1
  ((leftovers)) || return 0
  log "containerd not running but leftovers found: cleaning up first"
  if [[ -f "$LOG" ]]; then
    mkdir -p "$ROOT"
    mv -f "$LOG" "$ROOT/containerd.log.prev"
  fi
  (cmd_down)
  mkdir -p "$STATE" "$CNI_DIR" "$CNI_IPAM_DIR" "$CTRD_ROOT" "$OPT_DIR"
  chmod 0711 "$STATE"
  write_file_if_changed "$CONFIG" "$(containerd_config)" || true
  write_file_if_changed "$CNI_DIR/10-$CNI_NAME.conflist" "$(cni_config)" || true
}

cmd_up() {
  install_packages
  [[ -d "$SRC_DIR" ]] || die "missing $SRC_DIR"
  [[ -x "$CNI_BIN_DIR/bridge" && -x "$CNI_BIN_DIR/host-local" && -x "$CNI_BIN_DIR/loopback" ]] ||
    die "CNI plugins missing in $CNI_BIN_DIR"

  build_images
  bash "$SCRIPT_DIR/image/toolbox.sh" --tools-only "$TOOLBOX_DIR" >&2

  mkdir -p "$STATE" "$CNI_DIR" "$CNI_IPAM_DIR" "$CTRD_ROOT" "$OPT_DIR"
  chmod 0711 "$STATE"
  local config_changed=0
  if write_file_if_changed "$CONFIG" "$(containerd_config)"; then
    config_changed=1
  fi
  # drop foreign conf files (max_conf_num=1 picks the first one)
  local f
  for f in "$CNI_DIR"/*; do
    [[ -e "$f" && "$(basename "$f")" != "10-$CNI_NAME.conflist" ]] && rm -f "$f"
  done
  write_file_if_changed "$CNI_DIR/10-$CNI_NAME.conflist" "$(cni_config)" || true

  local pids
  pids=$(containerd_pids)
  if [[ -n "$pids" ]] && ((config_changed)); then
    log "containerd config changed: restarting the testbed from scratch"
    stop_containerd_only
    pids=""
  fi
  if [[ -z "$pids" ]]; then
    preclean
    start_containerd
  elif ! answering; then
    log "containerd running (pid $(echo $pids)) but not answering yet, waiting"
    local deadline=$((SECONDS + 20))
    until answering; do
      ((SECONDS < deadline)) || die "containerd (pid $(echo $pids)) does not answer on $SOCK; try: $0 down"
      sleep 0.2
    done
  fi

  import_images
  echo "$SOCK"
}

# ---------------------------------------------------------------------------
# down

# runc containers belonging to us: state.json whose rootfs lives under our dirs.
# Prints "<runc-state-dir> <init-pid> <cgroup,cgroup,...>" lines.
our_runc_containers() {
  python - "$STATE" "$ROOT" "$RUNC_ROOT" /run/containerd/runc <<'PY'
import json, os, sys
state, root = sys.argv[1], sys.argv[2]
prefixes = tuple(p.rstrip("/") + "/" for p in (state, root))
for rroot in sys.argv[3:]:
    if not os.path.isdir(rroot):
        continue
    for ns in sorted(os.listdir(rroot)):
        nsdir = os.path.join(rroot, ns)
        if not os.path.isdir(nsdir):
            continue
        for cid in sorted(os.listdir(nsdir)):
            f = os.path.join(nsdir, cid, "state.json")
            try:
                with open(f) as fh:
                    st = json.load(fh)
            except Exception:
                continue
            rootfs = (st.get("config") or {}).get("rootfs") or ""
            if not (rootfs + "/").startswith(prefixes):
                continue
            pid = st.get("init_process_pid") or 0
            cg = st.get("cgroup_paths") or {}
            # only the container's own leaf cgroups (named after its id, for
            # cgroupfs "<parent>/<id>" as well as systemd "cri-containerd-<id>.scope"):
            # never a shared parent, whose processes we would otherwise kill
            paths = sorted(set(v for v in cg.values()
                               if v and v.startswith("/sys/fs/cgroup/") and cid in os.path.basename(v)))
            print(os.path.join(nsdir, cid), pid, ",".join(paths))
PY
}

# leaf cgroups of our containers plus their parents (below the controller
# mount point, e.g. /sys/fs/cgroup/cpu/k8s.io), deepest first; rmdir only
# ever removes empty cgroups, so shared parents in use stay.
cgroup_dirs_deepest_first() {
  local cg
  for cg in "$@"; do
    while [[ "$cg" == /sys/fs/cgroup/*/* ]]; do
      echo "$cg"
      cg=${cg%/*}
    done
  done | awk '{print length($0) "\t" $0}' | sort -rn -k1,1 | cut -f2- | awk '!seen[$0]++'
}

cgroup_pids() { # cgroup dirs... -> pids inside them
  local d
  for d in "$@"; do
    [[ -f "$d/cgroup.procs" ]] && cat "$d/cgroup.procs" 2>/dev/null || true
  done | sort -un
}

# remember our containers' runc state dirs and cgroups (before the shims or
# runc delete them) so that empty parents can be removed at the end
collect_our_containers() {
  local dir pid cgs
  local -a arr
  while read -r dir pid cgs; do
    [[ -n "$dir" ]] || continue
    IFS=, read -r -a arr <<<"$cgs"
    CGROUPS+=("${arr[@]}")
    RUNC_DIRS+=("$dir")
  done < <(our_runc_containers)
}

kill_our_containers() {
  local dir pid cgs pids all_cgs=() victims=()
  local -a arr
  while read -r dir pid cgs; do
    [[ -n "$dir" ]] || continue
    IFS=, read -r -a arr <<<"$cgs"
    all_cgs+=("${arr[@]}")
    [[ "$pid" =~ ^[0-9]+$ && "$pid" != 0 ]] && pid_alive "$pid" && victims+=("$pid")
    # shellcheck disable=SC2207
    pids=($(cgroup_pids "${arr[@]}"))
    victims+=("${pids[@]}")
    RUNC_DIRS+=("$dir")
  done < <(our_runc_containers)
  CGROUPS+=("${all_cgs[@]}")
  if ((${#victims[@]})); then
    log "killing container processes: ${victims[*]}"
    kill -KILL "${victims[@]}" 2>/dev/null || true
    wait_gone 10 "${victims[@]}" || log "warning: some container processes survived SIGKILL"
  fi
}

graceful_tasks() {
  # With containerd still answering, let the shims tear containers down.
  answering || return 0
  local ns t
  for ns in $(timeout 10 ctr -a "$SOCK" namespaces ls -q 2>/dev/null || true); do
    for t in $(timeout 10 ctr -a "$SOCK" -n "$ns" tasks ls -q 2>/dev/null || true); do
      timeout 10 ctr -a "$SOCK" -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    for t in $(timeout 10 ctr -a "$SOCK" -n "$ns" tasks ls -q 2>/dev/null || true); do
      timeout 15 ctr -a "$SOCK" -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || true
    done
  done
}

mounts_under() { # dirs... -> mount points under them, deepest first
  python - "$@" <<'PY'
import sys
def unescape(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i+1:i+4].isdigit():
            out.append(chr(int(s[i+1:i+4], 8))); i += 4
        else:
            out.append(s[i]); i += 1
    return "".join(out)
prefixes = [p.rstrip("/") for p in sys.argv[1:]]
seen = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        mp = unescape(line.split()[4])
        if any(mp == p or mp.startswith(p + "/") for p in prefixes):
            seen.append(mp)
# deepest first; later mounts (stacked on top) first for the same depth
order = sorted(range(len(seen)), key=lambda i: (-seen[i].count("/"), -i))
for i in order:
    print(seen[i])
PY
}

unmount_all() {
  local mp left
  for _ in 1 2 3 4 5; do
    left=0
    while IFS= read -r mp; do
      [[ -n "$mp" ]] || continue
      left=1
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: cannot unmount $mp"
    done < <(mounts_under "$STATE" "$ROOT")
    ((left)) || return 0
  done
  if [[ -n "$(mounts_under "$STATE" "$ROOT")" ]]; then
    log "warning: still mounted:"
    mounts_under "$STATE" "$ROOT" >&2
  fi
}

cmd_down() {
  local purge=0
  [[ "${1:-}" == "--purge" ]] && purge=1
  RUNC_DIRS=()
  CGROUPS=()

  # sandbox ids (for CNI cache cleanup), before anything is removed
  local sandbox_ids=() d
  for d in "$CTRD_STATE"/io.containerd.grpc.v1.cri/sandboxes/* "$CTRD_ROOT"/io.containerd.grpc.v1.cri/sandboxes/*; do
    [[ -d "$d" ]] && sandbox_ids+=("$(basename "$d")")
  done

  local task_ids=()
  for d in "$CTRD_STATE"/io.containerd.runtime.v2.task/*/*; do
    [[ -d "$d" ]] && task_ids+=("$(basename "$d")")
  done

  collect_our_containers
  graceful_tasks
  stop_containerd_only

  # containers left behind (shims outlive containerd): kill their processes
  kill_our_containers
  local shims
  shims=$(shim_pids)
  if [[ -n "$shims" ]]; then
    log "killing shims: $(echo $shims)"
    # shellcheck disable=SC2086
    kill -TERM $shims 2>/dev/null || true
    # shellcheck disable=SC2086
    wait_gone 5 $shims || {
      # shellcheck disable=SC2086
      kill -KILL $shims 2>/dev/null || true
      # shellcheck disable=SC2086
      wait_gone 5 $shims || log "warning: shims survived SIGKILL: $(echo $shims)"
    }
  fi
  # a second pass catches containers whose shim died before killing them
  kill_our_containers

  # shim sockets live in /run/containerd/s/<hash>; the bundles record them
  local a addr
  for a in "$CTRD_STATE"/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f "$a" ]] || continue
    addr=$(cat "$a" 2>/dev/null || true)
    addr=${addr#unix://}
    [[ "$addr" == /run/containerd/s/* ]] && rm -f "$addr"
  done
  # runc state dirs of our containers (incl. ctr-run ones in the default root)
  for d in "${RUNC_DIRS[@]}"; do
    rm -rf "$d"
  done

  # `ctr run` (tests) uses /run/containerd/{fifo,runc/<ns>}: drop what our
  # containers left there, unless some other containerd is running
  if [[ -z "$(other_containerd_pids)" ]]; then
    local fd id
    for fd in /run/containerd/fifo/*/; do
      [[ -d "$fd" ]] || continue
      for id in "${task_ids[@]}"; do
        rm -f "$fd$id"-stdin "$fd$id"-stdout "$fd$id"-stderr
      done
      rmdir "$fd" 2>/dev/null || true
    done
    rmdir /run/containerd/s /run/containerd/fifo /run/containerd/runc/* 2>/dev/null || true
    rmdir /run/containerd/runc /run/containerd 2>/dev/null || true
  fi

  # empty cgroups of our containers
  local cg
  if ((${#CGROUPS[@]})); then
    while IFS= read -r cg; do
      [[ -d "$cg" ]] && rmdir "$cg" 2>/dev/null || true
    done < <(cgroup_dirs_deepest_first "${CGROUPS[@]}")
  fi

  unmount_all

  # network: veths still attached, then the bridge
  local l
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for l in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$l" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || log "warning: cannot delete $BRIDGE"
  fi

  # libcni result cache (default /var/lib/cni/results)
  rm -f /var/lib/cni/results/"$CNI_NAME"-* 2>/dev/null || true
  for d in "${sandbox_ids[@]}"; do
    rm -f /var/lib/cni/results/cni-loopback-"$d"-* 2>/dev/null || true
  done

  # state and containerd root (the image build cache survives unless --purge)
  if [[ -n "$(mounts_under "$STATE" "$ROOT")" ]]; then
    die "mounts remain under $STATE / $ROOT; not removing them"
  fi
  rm -rf "$STATE"
  if ((purge)); then
    rm -rf "$ROOT"
  else
    rm -rf "$CTRD_ROOT" "$OPT_DIR"
    rm -rf "$IMAGE_CACHE"/build.* 2>/dev/null || true
  fi
  log "down"
}

# ---------------------------------------------------------------------------
# status / env

cmd_status() {
  local pids rc=0
  pids=$(containerd_pids)
  echo "socket: $SOCK"
  echo "state:  $STATE"
  echo "root:   $ROOT"
  if [[ -n "$pids" ]]; then
    if answering; then
      echo "containerd: running (pid $(echo $pids)), answering"
    else
      echo "containerd: running (pid $(echo $pids)), NOT answering"
      rc=1
    fi
  else
    echo "containerd: not running"
    rc=1
  fi
  local shims
  shims=$(shim_pids)
  echo "shims: $(echo $shims | wc -w)"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    echo "bridge: $BRIDGE $(ip -o -4 addr show dev "$BRIDGE" | awk '{print $4}' | tr '\n' ' ')"
  else
    echo "bridge: $BRIDGE absent (created with the first pod)"
  fi
  if ((rc == 0)); then
    echo "images:"
    ctr_ -n "$K8S_NS" images ls 2>/dev/null | awk 'NR > 1 && $1 !~ /^sha256:/ {print "  " $1 "  " $3 "  " $4 " " $5}'
    echo "tasks:"
    ctr_ -n "$K8S_NS" tasks ls 2>/dev/null | sed 's/^/  /'
  fi
  return $rc
}

cmd_env() {
  printf 'NSDEBUG_CRI_SOCKET=%q\n' "$SOCK"
  printf 'NSDEBUG_CRI_ENDPOINT=%q\n' "unix://$SOCK"
  printf 'NSDEBUG_TESTBED_STATE=%q\n' "$STATE"
  printf 'NSDEBUG_TESTBED_ROOT=%q\n' "$ROOT"
  printf 'NSDEBUG_CONTAINERD_NAMESPACE=%q\n' "$K8S_NS"
  printf 'NSDEBUG_PAUSE_IMAGE=%q\n' "$PAUSE_IMAGE"
  printf 'NSDEBUG_BUSYBOX_IMAGE=%q\n' "$BUSYBOX_IMAGE"
  printf 'NSDEBUG_DISTROLESS_IMAGE=%q\n' "$HELLO_IMAGE"
  printf 'NSDEBUG_POD_SUBNET=%q\n' "$SUBNET"
  printf 'NSDEBUG_TOOLBOX_ROOT=%q\n' "$TOOLBOX_DIR"
}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# up/down are serialised (parallel test runners may call `up` concurrently).
# The lock lives beside the state dir because `down` removes the state dir.
lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  if ! flock -w 120 9; then
    die "could not lock $STATE.lock within 120s"
  fi
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    up)
      lock
      cmd_up "$@"
      ;;
    down)
      lock
      cmd_down "$@"
      ;;
    stop-runtime)
      # containerd only: the pods keep running in their shims, as on a node
      # whose runtime restarts. The outage tests use this.
      lock
      stop_containerd_only
      ;;
    start-runtime)
      lock
      [[ -n "$(containerd_pids)" ]] || start_containerd
      echo "$SOCK"
      ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    -h | --help | help | "") usage ;;
    *)
      echo "unknown command: $cmd" >&2
      usage
      ;;
  esac
}

main "$@"
