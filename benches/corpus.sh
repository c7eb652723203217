#!/usr/bin/env bash
# Builds the benchmark corpus once, into target/bench-corpus (or
# $CARGO_TARGET_DIR/bench-corpus):
#
#   rootfs/        a real root filesystem: `debootstrap --variant=minbase`
#                  of Debian bookworm when debootstrap and a mirror are
#                  there (LAYERSTACK_BENCH_MIRROR, else the bookworm
#                  mirror of this machine's apt sources), else a copy of
#                  the host's /usr (rootfs/usr).
#   oci/           an OCI image layout made by umoci, tag `bench`, three
#                  gzip layers:
#                    1. the tree;
#                    2. changes 200 files, deletes 500 files and 20 whole
#                       directories, adds 1,000 small files and one 200 MiB
#                       file (var/tmp/big.bin);
#                    3. recreates one deleted directory and deletes the
#                       200 MiB file.
#   kernel/2, kernel/3
#                  the same layers 2 and 3 as overlayfs upper directories,
#                  made by applying the same changes through a kernel
#                  overlay mount (layer 1 is rootfs/ itself).
#   changes/       the lists of paths each step changed.
#
# Needs root (debootstrap, device nodes, overlay mounts) and umoci. Each
# part is skipped when its `.done` marker is there; delete the directory to
# rebuild. The changes are chosen from the sorted file list, so the same
# rootfs gives the same layers.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${CARGO_TARGET_DIR:-$here/target}/bench-corpus

# The Debian mirror: $LAYERSTACK_BENCH_MIRROR, else the one this machine's
# apt already uses for bookworm (deb822 `.sources` files or one-line
# `sources.list` entries), so the script names no host of its own.
apt_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local f
    for f in "${files[@]}"; do
        [ -r "$f" ] || continue
        case "$f" in
        *.sources)
            awk '
                /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; exit } uri = ""; suite = 0; next }
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
                END { if (uri != "" && suite) print uri }
            ' "$f"
            ;;
        *)
            awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' "$f"
            ;;
        esac
    done | head -n 1
}
mirror=${LAYERSTACK_BENCH_MIRROR:-$(apt_mirror)}
mkdir -p "$out"
cd "$out"

if [ "$(id -u)" != 0 ]; then
    echo "corpus.sh: needs root (debootstrap, device nodes, overlay mounts)" >&2
    exit 1
fi
command -v umoci >/dev/null || { echo "corpus.sh: needs umoci (apt-get install umoci)" >&2; exit 1; }

# --- the root filesystem ---------------------------------------------------
if [ ! -e rootfs.done ]; then
    rm -rf rootfs rootfs.tmp
    if command -v debootstrap >/dev/null && [ -n "$mirror" ] &&
        debootstrap --variant=minbase bookworm rootfs.tmp "$mirror" >debootstrap.log 2>&1; then
        # Logs and caches that differ from run to run are not part of the
        # tree being measured.
        rm -rf rootfs.tmp/var/cache/apt/archives/*.deb rootfs.tmp/var/log/bootstrap.log \
            rootfs.tmp/debootstrap
        mv rootfs.tmp rootfs
        echo "debootstrap --variant=minbase bookworm ($mirror)" >rootfs.source
    else
        echo "corpus.sh: debootstrap unavailable or failed (see $out/debootstrap.log); copying /usr" >&2
        rm -rf rootfs.tmp
        mkdir -p rootfs
        cp -a /usr rootfs/usr
        echo "copy of the host's /usr" >rootfs.source
    fi
    touch rootfs.done
fi

# --- the changes, applied to a directory ------------------------------------
# The lists are computed once from rootfs/ and applied to both the umoci
# bundle and the kernel mount, so both get exactly the same changes.
if [ ! -e changes.done ]; then
    rm -rf changes
    mkdir changes
    # 20 whole directories: every other package documentation directory.
    (cd rootfs && find ./usr/share/doc -mindepth 1 -maxdepth 1 -type d) | LC_ALL=C sort |
        awk 'NR % 2 == 1' | head -n 20 >changes/deleted-dirs
    [ "$(wc -l <changes/deleted-dirs)" = 20 ] || { echo "corpus.sh: fewer than 20 directories under usr/share/doc" >&2; exit 1; }
    # Candidate files: regular, single link, not setuid/setgid, not empty,
    # and outside the deleted directories.
    (cd rootfs && find . -xdev -type f -links 1 ! -perm /6000 -size +0) | LC_ALL=C sort |
        grep -v -F -f <(sed 's|$|/|' changes/deleted-dirs) >changes/candidates
    n=$(wc -l <changes/candidates)
    [ "$n" -ge 1400 ] || { echo "corpus.sh: only $n candidate files" >&2; exit 1; }
    # 500 deletions and 200 changes, spread over the whole tree, disjoint.
    awk -v s=$((n / 500)) 'NR % s == 0' changes/candidates | head -n 500 >changes/deleted-files
    awk -v s=$((n / 200)) 'NR % s == 1' changes/candidates |
        grep -v -x -F -f changes/deleted-files | head -n 200 >changes/changed-files
    [ "$(wc -l <changes/deleted-files)" = 500 ] && [ "$(wc -l <changes/changed-files)" = 200 ] ||
        { echo "corpus.sh: could not choose 500 and 200 files" >&2; exit 1; }
    head -n 1 changes/deleted-dirs >changes/recreated-dir
    # The 200 MiB file: random bytes, as a binary blob would be.
    head -c $((200 << 20)) /dev/urandom >changes/big.bin
    touch changes.done
fi

step2() { # DIR
    local d=$1 i j
    while read -r f; do printf 'changed by the layerstack benchmark corpus\n' >>"$d/$f"; done <changes/changed-files
    while read -r f; do rm -f "$d/$f"; done <changes/deleted-files
    while read -r f; do rm -rf "${d:?}/$f"; done <changes/deleted-dirs
    for i in $(seq -w 0 9); do
        mkdir -p "$d/srv/bench/d$i"
        for j in $(seq -w 0 99); do
            printf 'small file %s/%s\n' "$i" "$j" >"$d/srv/bench/d$i/f$j.txt"
        done
    done
    mkdir -p "$d/var/tmp"
    cp changes/big.bin "$d/var/tmp/big.bin"
}

step3() { # DIR
    local d=$1 r
    r=$(cat changes/recreated-dir)
    mkdir "$d/$r"
    printf 'recreated\n' >"$d/$r/copyright"
    printf 'recreated\n' >"$d/$r/changelog"
    rm "$d/var/tmp/big.bin"
}

# --- the kernel layers ---------------------------------------------------------
# A step that fails must not leave the overlay mounted.
trap 'umount "$out/kernel/mnt" 2>/dev/null || true' EXIT
mount_upper() { # LOWERDIR UPPER
    mkdir -p "$2" kernel/work kernel/mnt
    rm -rf kernel/work/*
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$out/kernel/work" kernel/mnt
}
if [ ! -e kernel.done ]; then
    rm -rf kernel
    mkdir kernel
    mount_upper "$out/rootfs" "$out/kernel/2"
    step2 kernel/mnt
    umount kernel/mnt
    mount_upper "$out/kernel/2:$out/rootfs" "$out/kernel/3"
    step3 kernel/mnt
    umount kernel/mnt
    rm -rf kernel/work kernel/mnt
    touch kernel.done
fi

# --- the OCI image (made by umoci, a peer, not by us) ----------------------------
if [ ! -e oci.done ]; then
    rm -rf oci bundle
    umoci init --layout oci
    umoci new --image oci:bench
    umoci unpack --image oci:bench bundle >/dev/null
    rmdir bundle/rootfs
    cp -a rootfs bundle/rootfs
    umoci repack --refresh-bundle --history.created_by "the tree" --image oci:bench bundle
    step2 bundle/rootfs
    umoci repack --refresh-bundle --history.created_by "step 2" --image oci:bench bundle
    step3 bundle/rootfs
    umoci repack --refresh-bundle --history.created_by "step 3" --image oci:bench bundle
    umoci gc --layout oci
    rm -rf bundle
    touch oci.done
fi

echo "corpus: $out"
echo "  rootfs: $(cat rootfs.source), $(find rootfs | wc -l) entries, $(du -sh --apparent-size rootfs | cut -f1)"
for b in $(python3 -c '
import json, sys
idx = json.load(open("oci/index.json"))
m = idx["manifests"][0]["digest"].split(":")[1]
man = json.load(open("oci/blobs/sha256/" + m))
print(" ".join(l["digest"].split(":")[1] for l in man["layers"]))
' 2>/dev/null); do
    echo "  layer $b: $(stat -c %s "oci/blobs/sha256/$b") bytes (gzip)"
done
