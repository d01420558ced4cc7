#!/usr/bin/env bash
# Builds and installs hostagent with the shipped default config and a ready boot root:
#   /usr/local/bin/hostagent, /etc/hostagent/hostagent.toml (kept if present),
#   /var/lib/hostagent/boot/{undionly.kpxe,ipxe.efi,boot.ipxe} (from Debian's ipxe package),
#   /etc/systemd/system/hostagent.service.
# DESTDIR=DIR installs under DIR instead (what the tests do); HOSTAGENT_BIN=PATH installs that
# binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo $0)" >&2; exit 1; }
dest="${DESTDIR:-}"
./scripts/install-deps.sh
bin="${HOSTAGENT_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -p hostagent
  bin=target/release/hostagent
fi
install -d "$dest/usr/local/bin"
install -m 0755 "$bin" "$dest/usr/local/bin/hostagent"
install -d -m 0755 "$dest/etc/hostagent"
[ -e "$dest/etc/hostagent/hostagent.toml" ] || install -m 0644 etc/hostagent.toml "$dest/etc/hostagent/hostagent.toml"
boot="$dest/var/lib/hostagent/boot"
install -d -m 0755 "$boot"
for f in undionly.kpxe ipxe.efi; do
  [ -e "$boot/$f" ] || install -m 0644 "/usr/lib/ipxe/$f" "$boot/$f"
done
[ -e "$boot/boot.ipxe" ] || install -m 0644 etc/examples/boot.ipxe "$boot/boot.ipxe"
# The unit goes where systemd will read it: into DESTDIR when that tree has a systemd directory,
# or onto this host when installing for real and the host runs systemd.
if [ -n "$dest" ] && [ -d "$dest/etc/systemd/system" ] || { [ -z "$dest" ] && [ -d /etc/systemd/system ]; }; then
  install -m 0644 etc/hostagent.service "$dest/etc/systemd/system/hostagent.service"
  if [ -z "$dest" ] && command -v systemctl >/dev/null; then systemctl daemon-reload 2>/dev/null || true; fi
fi
echo "installed under ${dest:-/}: 'sudo hostagent plan' shows what it will do, 'sudo hostagent run' does it"
