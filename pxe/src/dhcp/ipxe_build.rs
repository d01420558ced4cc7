//! Is a boot file an iPXE build? Decided by its content, so that a renamed `undionly.kpxe` (or a
//! `pxelinux.0` that is really an iPXE binary) is told apart from pxelinux, shim or GRUB.
//!
//! Signatures, checked on Debian's `ipxe` and `ipxe-qemu` (1.0.0+git-20190125) and against
//! `pxelinux`, `syslinux-common`, `shim-signed`, `grub-efi-amd64-signed` and the
//! `debian-installer-12-netboot-amd64` tree (none of which contain either):
//! - `PXE->EB:`: printed by iPXE's PXE prefix (`pxeprefix.S`), which stays uncompressed in every
//!   `.pxe`, `.kpxe` and `.kkpxe` (the rest of those images is compressed: `undionly.kpxe` holds
//!   no other readable iPXE string);
//! - `http://ipxe.org/`: the base of iPXE's error URLs, in every uncompressed build (`ipxe.efi`,
//!   `snponly.efi`, the NIC ROMs).
//!
//! Only the first [`SCAN_LIMIT`] bytes are read (iPXE's EFI builds are about 1 MiB; a 40 MiB
//! initrd named as a boot file is not worth reading whole). A file that cannot be read counts as
//! "not iPXE": handing its name out cannot loop, the client just fails to fetch it.
//!
//! [`IpxeBuilds`] reads files through the boot root's [`SafeRoot`] (the same rules and symlinks
//! the TFTP server follows) and remembers each answer until the file changes (device, inode, size
//! or mtime differ), so a DHCP storm costs one `stat`-like open per iPXE request, not a read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::saferoot::SafeRoot;

/// Byte strings only iPXE builds contain (see the module docs).
pub const SIGNATURES: [&[u8]; 2] = [b"PXE->EB:", b"http://ipxe.org/"];
/// How much of a file is searched.
pub const SCAN_LIMIT: u64 = 4 << 20;
/// Files remembered at most (a boot root names a handful; the cap only bounds a pathological
/// config with thousands of per-host boot files).
const CACHE_MAX: usize = 256;

/// Whether `bytes` contain one of the iPXE signatures.
pub fn is_ipxe_build(bytes: &[u8]) -> bool {
    SIGNATURES
        .iter()
        .any(|sig| bytes.windows(sig.len()).any(|w| w == *sig))
}

/// What the boot policy asks about a configured file name.
pub trait BootFiles {
    /// Whether `file` (a name relative to the boot root) is an iPXE build.
    fn is_ipxe(&self, file: &str) -> bool;
}

/// For tests and callers without a boot root: a fixed answer per name.
impl<F: Fn(&str) -> bool> BootFiles for F {
    fn is_ipxe(&self, file: &str) -> bool {
        self(file)
    }
}

/// Identity of a file's content as far as the cache cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// Reads boot files under a root and remembers what they are.
pub struct IpxeBuilds {
    root: PathBuf,
    /// Opened on first use: the boot root may appear after the DHCP server starts.
    safe: RefCell<Option<SafeRoot>>,
    cache: RefCell<HashMap<String, (Stamp, bool)>>,
}

impl IpxeBuilds {
    pub fn new(root: PathBuf) -> IpxeBuilds {
        IpxeBuilds {
            root,
            safe: RefCell::new(None),
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn probe(&self, file: &str) -> Option<bool> {
        let mut safe = self.safe.borrow_mut();
        if safe.is_none() {
            *safe = SafeRoot::new(&self.root).ok();
        }
        let (f, meta) = safe.as_ref()?.open(file).ok()?;
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        if let Some((seen, answer)) = self.cache.borrow().get(file) {
            if *seen == stamp {
                return Some(*answer);
            }
        }
        let mut head = Vec::new();
        f.take(SCAN_LIMIT).read_to_end(&mut head).ok()?;
        let answer = is_ipxe_build(&head);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(file.to_string(), (stamp, answer));
        Some(answer)
    }
}

impl BootFiles for IpxeBuilds {
    fn is_ipxe(&self, file: &str) -> bool {
        self.probe(file).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_found_anywhere_and_nothing_else_matches() {
        assert!(is_ipxe_build(b"\x00\x01junk PXE->EB: !PXE at"));
        assert!(is_ipxe_build(b"see http://ipxe.org/err/123"));
        assert!(!is_ipxe_build(
            b"PXELINUX 6.04 PXE  Copyright (C) 1994-2015 H. Peter Anvin"
        ));
        assert!(!is_ipxe_build(b"PXE->E")); // cut short
        assert!(!is_ipxe_build(b""));
    }

    #[test]
    fn files_are_read_through_the_root_and_remembered_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot.0");
        std::fs::write(&p, b"pxelinux").unwrap();
        std::fs::write(dir.path().join("ipxe.efi"), b"MZ... http://ipxe.org/ ...").unwrap();
        std::os::unix::fs::symlink("ipxe.efi", dir.path().join("link.efi")).unwrap();
        let builds = IpxeBuilds::new(dir.path().to_path_buf());
        assert!(!builds.is_ipxe("boot.0"));
        assert!(builds.is_ipxe("ipxe.efi"));
        assert!(
            builds.is_ipxe("link.efi"),
            "a symlink inside the root is followed"
        );
        assert!(
            !builds.is_ipxe("missing.efi"),
            "unreadable counts as not iPXE"
        );
        assert!(!builds.is_ipxe("../etc/passwd"), "the root's rules apply");
        // The same name now holds an iPXE build: the size changed, so it is read again.
        std::fs::write(&p, b"xx PXE->EB: xx").unwrap();
        assert!(builds.is_ipxe("boot.0"));
    }

    #[test]
    fn a_missing_root_is_not_an_error() {
        let builds = IpxeBuilds::new("/nonexistent/boot/root".into());
        assert!(!builds.is_ipxe("undionly.kpxe"));
    }
}
