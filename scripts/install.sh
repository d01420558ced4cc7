#!/usr/bin/env bash
# Builds and installs hostagent with the shipped default config and a ready boot root:
#   /usr/local/bin/hostagent, /etc/hostagent/hostagent.toml (kept if present),
#   /var/lib/hostagent/boot/{undionly.kpxe,ipxe.efi,boot.ipxe} (from Debian's ipxe package),
#   /etc/systemd/system/hostagent.service.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo $0)" >&2; exit 1; }
./scripts/install-deps.sh
cargo build --release -p hostagent
install -m 0755 target/release/hostagent /usr/local/bin/hostagent
install -d -m 0755 /etc/hostagent
[ -e /etc/hostagent/hostagent.toml ] || install -m 0644 etc/hostagent.toml /etc/hostagent/hostagent.toml
install -d -m 0755 /var/lib/hostagent/boot
for f in undionly.kpxe ipxe.efi; do
  [ -e /var/lib/hostagent/boot/$f ] || install -m 0644 /usr/lib/ipxe/$f /var/lib/hostagent/boot/$f
done
[ -e /var/lib/hostagent/boot/boot.ipxe ] || install -m 0644 etc/examples/boot.ipxe /var/lib/hostagent/boot/boot.ipxe
if [ -d /etc/systemd/system ]; then
  install -m 0644 etc/hostagent.service /etc/systemd/system/hostagent.service
  command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
fi
echo "installed: run 'sudo hostagent plan' to see what it will do, 'sudo hostagent run' to do it"
