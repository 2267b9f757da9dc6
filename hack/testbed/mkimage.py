#!/usr/bin/env python3
"""Build a single-layer OCI image-layout tarball from a directory (stdlib only).

The output can be loaded with `ctr -n k8s.io images import FILE.tar`; the
manifest descriptor in index.json carries the `io.containerd.image.name`
annotation so containerd names the image after --name.

The output is deterministic for identical input: the layer tar has sorted
entries, mtime 0, uid/gid 0 and no user/group names; gzip headers carry no
name and mtime 0; JSON is serialised with sorted keys.

Usage:
  mkimage.py --name nsdebug.local/busybox:1 --rootfs DIR --out busybox.tar \
      [--entrypoint '["/bin/sh"]'] [--cmd '["sh"]'] [--workdir /] \
      [--env PATH=/bin --env FOO=bar]

Prints the manifest digest (sha256:...) on stdout.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

ARCH_MAP = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


def die(msg):
    print("mkimage: error: " + msg, file=sys.stderr)
    sys.exit(2)


def json_list(text, what):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        die("%s is not valid JSON: %s" % (what, e))
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        die("%s must be a JSON list of strings" % what)
    return value


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def split_ref(name):
    """Return the tag of a reference like host/path/name:tag (default 'latest')."""
    last = name.rsplit("/", 1)[-1]
    if "@" in last:
        die("--name must be a tagged reference, not a digest: %s" % name)
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "latest"


def walk_sorted(root):
    """Yield paths relative to root (POSIX style), parents before children, sorted."""
    def rec(rel):
        full = os.path.join(root, rel) if rel else root
        names = sorted(os.listdir(full))
        for n in names:
            child_rel = n if not rel else rel + "/" + n
            yield child_rel
            child_full = os.path.join(root, child_rel)
            if stat.S_ISDIR(os.lstat(child_full).st_mode):
                yield from rec(child_rel)

    yield from rec("")


def build_layer_tar(rootfs):
    """Return the uncompressed layer tar bytes for rootfs."""
    buf = io.BytesIO()
    seen_inodes = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in walk_sorted(rootfs):
            full = os.path.join(rootfs, rel)
            st = os.lstat(full)
            ti = tarfile.TarInfo(rel)
            ti.mode = stat.S_IMODE(st.st_mode)
            ti.uid = 0
            ti.gid = 0
            ti.uname = ""
            ti.gname = ""
            ti.mtime = 0
            fileobj = None
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = seen_inodes[key]
                else:
                    if st.st_nlink > 1:
                        seen_inodes[key] = rel
                    ti.type = tarfile.REGTYPE
                    ti.size = st.st_size
                    fileobj = open(full, "rb")
            else:
                die("unsupported file type in rootfs: %s" % full)
            try:
                tar.addfile(ti, fileobj)
            finally:
                if fileobj is not None:
                    fileobj.close()
    return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def add_bytes(tar, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    tar.addfile(ti, io.BytesIO(data))


def add_dir(tar, name):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    tar.addfile(ti)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="full image reference, e.g. nsdebug.local/pause:1")
    ap.add_argument("--rootfs", required=True, help="directory to pack as the single layer")
    ap.add_argument("--entrypoint", help="JSON list, e.g. '[\"/pause\"]'")
    ap.add_argument("--cmd", help="JSON list, e.g. '[\"sh\"]'")
    ap.add_argument("--workdir", default=None, help="working directory (default: unset, i.e. /)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE, may repeat")
    ap.add_argument("--arch", default=None, help="override architecture (default from uname -m)")
    ap.add_argument("--out", required=True, help="output .tar (OCI image layout)")
    args = ap.parse_args(argv)

    if not os.path.isdir(args.rootfs):
        die("--rootfs %s is not a directory" % args.rootfs)
    entrypoint = json_list(args.entrypoint, "--entrypoint")
    cmd = json_list(args.cmd, "--cmd")
    for e in args.env:
        if "=" not in e or e.startswith("="):
            die("--env must be KEY=VALUE, got %r" % e)
    tag = split_ref(args.name)

    machine = args.arch or platform.machine()
    arch, variant = ARCH_MAP.get(machine, (machine, None))

    layer_tar = build_layer_tar(args.rootfs)
    diff_id = "sha256:" + sha256_hex(layer_tar)
    layer_gz = gzip_bytes(layer_tar)
    layer_digest = sha256_hex(layer_gz)

    img_config = {}
    if entrypoint:
        img_config["Entrypoint"] = entrypoint
    if cmd:
        img_config["Cmd"] = cmd
    if args.env:
        img_config["Env"] = list(args.env)
    if args.workdir:
        img_config["WorkingDir"] = args.workdir

    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": img_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": "1970-01-01T00:00:00Z",
                "created_by": "nsdebug-testbed mkimage.py",
            }
        ],
    }
    if variant:
        config["variant"] = variant
    config_bytes = canonical_json(config)
    config_digest = sha256_hex(config_bytes)

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {
            "mediaType": MT_CONFIG,
            "digest": "sha256:" + config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": MT_LAYER_GZIP,
                "digest": "sha256:" + layer_digest,
                "size": len(layer_gz),
            }
        ],
    }
    manifest_bytes = canonical_json(manifest)
    manifest_digest = sha256_hex(manifest_bytes)

    platform_desc = {"architecture": arch, "os": "linux"}
    if variant:
        platform_desc["variant"] = variant
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": "sha256:" + manifest_digest,
                "size": len(manifest_bytes),
                "platform": platform_desc,
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    index_bytes = canonical_json(index)
    layout_bytes = canonical_json({"imageLayoutVersion": "1.0.0"})

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            add_bytes(tar, "oci-layout", layout_bytes)
            add_bytes(tar, "index.json", index_bytes)
            add_dir(tar, "blobs")
            add_dir(tar, "blobs/sha256")
            blobs = {
                config_digest: config_bytes,
                layer_digest: layer_gz,
                manifest_digest: manifest_bytes,
            }
            for digest in sorted(blobs):
                add_bytes(tar, "blobs/sha256/" + digest, blobs[digest])
    os.replace(tmp, args.out)
    print("sha256:" + manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
