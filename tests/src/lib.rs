//! The kit for hostagent's integration tests, on top of the shared [`testkit`] (namespaces,
//! waiting, test packets, DHCP clients): the hostagent binary and its command line ([`cli`]), a
//! scratch `--root` ([`Scratch`]), config files built from parts ([`config`]), `hostagent run`
//! as a daemon ([`daemon`]), console and agent logs ([`console`]), SLAAC guests and rdisc6
//! ([`ipv6`]), QEMU guests ([`qemu`]) and a
//! private libvirtd ([`libvirt`]) and a private firewalld ([`firewalld`]).

pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod dns;
pub mod firewalld;
pub mod ipv6;
pub mod libvirt;
pub mod netboot;
pub mod qemu;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace's cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Path of the hostagent binary built by this workspace.
pub fn hostagent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HOSTAGENT_BIN") {
        return PathBuf::from(p);
    }
    let bin = target_dir().join("debug/hostagent");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p hostagent)",
        bin.display()
    );
    bin
}

/// One of this package's helper binaries (dhcp-flood, dhcp-raw, dhcp-spam), built beside
/// hostagent.
pub fn helper_bin(name: &str) -> PathBuf {
    hostagent_bin().with_file_name(name)
}

/// The file name tests write their config to, inside the scratch directory (outside the root's
/// /etc, so a test can also check that the root's own files are untouched).
const CONFIG_FILE: &str = "config.toml";

/// A scratch --root for one test, with the config written into it; deleted on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("hostagent-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn root_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 tempdir")
    }

    /// Write the config file; returns its path.
    pub fn config(&self, text: impl std::fmt::Display) -> String {
        let p = self.file(CONFIG_FILE);
        std::fs::write(&p, text.to_string()).expect("write config");
        p.to_str().expect("utf-8").to_string()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `rel` (its directories created as needed).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.file(rel);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Every regular file under the root but the config (relative path → content): what the
    /// agent wrote, read back independently. Symbolic links are not followed.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let (p, kind) = (e.path(), e.file_type().expect("file type"));
                if kind.is_dir() {
                    walk(base, &p, out);
                } else if kind.is_file() {
                    let rel = p.strip_prefix(base).expect("below the root");
                    let rel = rel.display().to_string();
                    if rel != CONFIG_FILE {
                        out.insert(rel, std::fs::read(&p).unwrap_or_default());
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root(), self.root(), &mut out);
        out
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}
