//! Debian's netboot tree (package `debian-installer-12-netboot-amd64`) as a boot root, copied
//! with `cp -a` exactly as shipped (its symlinks `pxelinux.0`, `ldlinux.c32`, `pxelinux.cfg` into
//! `debian-installer/amd64/`, shim as `bootnetx64.efi`, GRUB with its prefix
//! `debian-installer/amd64/grub`), plus the marker payload (`tests/payload/build.sh`) under
//! `hostagent/` and per-machine configs that boot it instead of the 40 MB installer:
//! - pxelinux: `pxelinux.cfg/01-<mac>`, which stock pxelinux looks for before `default`;
//! - GRUB: Debian's netboot GRUB reads `grub/grub.cfg` only (it does not search per-MAC files
//!   itself), so two lines at the top of the stock `grub.cfg` source `grub/hosts/<mac>.cfg`
//!   when it exists: a plain TFTP lookup by `$net_default_mac`, a fast "file not found" for
//!   every other machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::run_ok;

use crate::qemu::payload_dir;

/// Where the package installs the tree (the `text` flavour: serial-friendly menus).
pub const TREE: &str = "/usr/lib/debian-installer/images/12/amd64/text";
/// Paths inside the tree, as the config names them.
pub const PXELINUX: &str = "pxelinux.0";
pub const SHIM: &str = "debian-installer/amd64/bootnetx64.efi";
const GRUB_DIR: &str = "debian-installer/amd64/grub";
/// Where the marker kernel and initramfs go inside the root.
pub const PAYLOAD: &str = "hostagent";

/// Copy the stock tree to `root` (which must not exist yet) and the payload into
/// `root/hostagent/`. Panics naming the package when the tree is missing.
pub fn install(root: &Path) {
    assert!(
        Path::new(TREE).join(PXELINUX).exists(),
        "{TREE} missing: apt-get install debian-installer-12-netboot-amd64"
    );
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).expect("boot root parent");
    }
    run_ok(Command::new("cp").arg("-a").arg(TREE).arg(root));
    let dir = root.join(PAYLOAD);
    std::fs::create_dir_all(&dir).expect("payload dir");
    let src = payload_dir();
    for f in ["vmlinuz", "initrd.img", "ipxe.efi", "undionly.kpxe"] {
        std::fs::copy(src.join(f), dir.join(f))
            .unwrap_or_else(|e| panic!("copy {f} into {}: {e}", dir.display()));
    }
}

/// `pxelinux.cfg/01-aa-bb-cc-dd-ee-ff` (through the tree's own `pxelinux.cfg` symlink) booting
/// the marker with `hostagent_path=pxelinux`.
pub fn pxelinux_host(root: &Path, mac: &str) -> PathBuf {
    let p = root
        .join("pxelinux.cfg")
        .join(format!("01-{}", mac.replace(':', "-")));
    let cfg = format!(
        "default marker\nprompt 0\ntimeout 0\nlabel marker\n  kernel {PAYLOAD}/vmlinuz\n  \
         append initrd={PAYLOAD}/initrd.img console=ttyS0 panic=-1 quiet hostagent_path=pxelinux\n"
    );
    std::fs::write(&p, cfg).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// The per-MAC include at the top of the stock `grub.cfg`, and `grub/hosts/<mac>.cfg` booting
/// the marker with `hostagent_path=grub`. The kernel line has no `quiet`, so the kernel's own
/// "Secure boot enabled" line reaches the serial log.
pub fn grub_host(root: &Path, mac: &str) -> PathBuf {
    let grub = root.join(GRUB_DIR);
    let cfg = grub.join("grub.cfg");
    let stock = std::fs::read_to_string(&cfg).expect("stock grub.cfg");
    let include = "if [ -s $prefix/hosts/$net_default_mac.cfg ]; then\n    \
                   source $prefix/hosts/$net_default_mac.cfg\nfi\n";
    if !stock.starts_with(include) {
        std::fs::write(&cfg, format!("{include}{stock}")).expect("write grub.cfg");
    }
    std::fs::create_dir_all(grub.join("hosts")).expect("grub hosts dir");
    let host = grub.join("hosts").join(format!("{mac}.cfg"));
    let entry = format!(
        "set timeout=0\nset default=0\nmenuentry 'hostagent marker' {{\n    \
         linux /{PAYLOAD}/vmlinuz console=ttyS0 panic=-1 hostagent_path=grub\n    \
         initrd /{PAYLOAD}/initrd.img\n}}\n"
    );
    std::fs::write(&host, entry).unwrap_or_else(|e| panic!("write {}: {e}", host.display()));
    host
}
