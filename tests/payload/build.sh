#!/bin/sh
# Builds the network-boot payload for the end-to-end boot tests (tests/tests/boot_e2e.rs), entirely
# from Debian packages:
#   vmlinuz        stock kernel of the linux-image-amd64 package (downloaded, never installed)
#   initrd.img     busybox-static initramfs whose /init prints "HOSTAGENT-BOOT-OK" and the kernel
#                  command line on the console and serial port, then powers the guest off
#   undionly.kpxe  iPXE for BIOS PXE ROMs   (package ipxe)
#   ipxe.efi       iPXE for UEFI PXE        (package ipxe)
#   boot-tftp.ipxe / boot-http.ipxe   iPXE scripts for manual runs (the tests write their own)
#
# usage: tests/payload/build.sh [CACHE_DIR]      (default: tests/.cache/payload, gitignored)
# Idempotent: when every output exists and the stamp matches, it exits at once. The kernel .deb is
# kept in CACHE_DIR/debs and apt's own cache is searched first, so a rebuild works offline.
# env: HOSTAGENT_HTTP_PORT (default 8069) — port written into boot-http.ipxe.
set -eu

# Bump when the outputs change shape, so old caches are rebuilt.
PAYLOAD_VERSION=3
MARKER=HOSTAGENT-BOOT-OK

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-$here/../.cache/payload}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
stamp=$cache/.stamp
outputs="vmlinuz initrd.img undionly.kpxe ipxe.efi boot-tftp.ipxe boot-http.ipxe"

have_all_outputs() {
    for f in $outputs; do [ -s "$cache/$f" ] || return 1; done
    [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "payload $PAYLOAD_VERSION" ]
}

if have_all_outputs; then
    exit 0
fi

die() { echo "payload/build.sh: $*" >&2; exit 1; }

# Tests run in parallel processes: one builds, the others wait and then find the outputs.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.lock"
    flock 9
    if have_all_outputs; then
        exit 0
    fi
fi

# --- tools: each checked file maps to the Debian package that ships it ------------------------------
missing=""
need() { # need FILE PACKAGE
    [ -e "$1" ] || missing="$missing $2"
}
need_cmd() { # need_cmd COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need_cmd dpkg-deb dpkg
need_cmd apt-get apt
need_cmd cpio cpio
need_cmd gzip gzip
need /usr/lib/ipxe/undionly.kpxe ipxe
need /usr/lib/ipxe/ipxe.efi ipxe
need /usr/lib/ipxe/qemu/efi-virtio.rom ipxe-qemu
need /usr/share/OVMF/OVMF_CODE_4M.fd ovmf
need_cmd qemu-system-x86_64 qemu-system-x86
# The initramfs has no libc: busybox must be the static build.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing busybox-static"
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "payload/build.sh: installing missing packages:$missing" >&2
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 ||
            die "apt-get install$missing failed"
    else
        die "missing packages:$missing — run as root or: sudo apt-get install$missing"
    fi
fi
[ -x /bin/busybox ] || die "/bin/busybox missing although busybox-static is installed"

work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- kernel -----------------------------------------------------------------------------------------
# The versioned package linux-image-amd64 currently depends on, e.g. linux-image-6.1.0-56-amd64.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}') || true
mkdir -p "$cache/debs"
deb=""
if [ -n "$kpkg" ]; then
    for d in "$cache/debs/${kpkg}_"*.deb /var/cache/apt/archives/"${kpkg}_"*.deb; do
        [ -s "$d" ] && deb=$d && break
    done
    if [ -z "$deb" ]; then
        echo "payload/build.sh: downloading $kpkg" >&2
        (cd "$work" && apt-get download "$kpkg" >&2) || die "apt-get download $kpkg failed (offline? run apt-get update?)"
        for d in "$work/${kpkg}_"*.deb; do [ -s "$d" ] && mv "$d" "$cache/debs/" && deb=$cache/debs/$(basename "$d"); done
    fi
fi
if [ -z "$deb" ]; then
    # Offline and apt knows no candidate: any kernel image we downloaded before will do.
    for d in "$cache/debs/"linux-image-*-amd64_*.deb /var/cache/apt/archives/linux-image-*-amd64_*.deb; do
        [ -s "$d" ] && deb=$d && break
    done
fi
[ -n "$deb" ] || die "no linux-image-*-amd64 package found or downloadable"
dpkg-deb -x "$deb" "$work/kernel"
set -- "$work"/kernel/boot/vmlinuz-*
[ -s "$1" ] || die "$deb holds no boot/vmlinuz-*"
cp "$1" "$work/vmlinuz"

# --- initramfs --------------------------------------------------------------------------------------
root=$work/initramfs
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
cp /bin/busybox "$root/bin/busybox"
# The kernel opens /dev/console for init before anything is mounted; without the node init runs
# without stdout (not fatal: /init mounts devtmpfs and writes to the devices by name).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
cat >"$root/init" <<EOF
#!/bin/busybox sh
bb=/bin/busybox
\$bb mount -t proc proc /proc
\$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null
cmdline=\$(\$bb cat /proc/cmdline)
path=unknown
for word in \$cmdline; do
    case "\$word" in hostagent_path=*) path=\${word#hostagent_path=} ;; esac
done
# Both devices: /dev/console may be tty0 when console=ttyS0 is missing from the command line.
line="$MARKER hostagent_path=\$path cmdline=[\$cmdline]"
echo "\$line" >/dev/console
echo "\$line" >/dev/ttyS0
\$bb sync
\$bb poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.img"

# --- iPXE binaries and scripts ------------------------------------------------------------------------
cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "$work/"
# initrd=initrd.img: iPXE EFI of Debian 12's vintage does not pass the initrd otherwise.
args="initrd=initrd.img console=ttyS0 panic=-1 quiet"
cat >"$work/boot-tftp.ipxe" <<EOF
#!ipxe
kernel tftp://\${next-server}/vmlinuz $args hostagent_path=tftp
initrd tftp://\${next-server}/initrd.img
boot
EOF
port=${HOSTAGENT_HTTP_PORT:-8069}
cat >"$work/boot-http.ipxe" <<EOF
#!ipxe
kernel http://\${next-server}:$port/vmlinuz $args hostagent_path=http
initrd http://\${next-server}:$port/initrd.img
boot
EOF

for f in $outputs; do mv -f "$work/$f" "$cache/$f"; done
printf 'payload %s\nkernel %s\n' "$PAYLOAD_VERSION" "$(basename "$deb")" >"$stamp"
echo "payload/build.sh: payload ready in $cache" >&2
