//! The drop-in files the agent owns (sysctl.d, modprobe.d) and the atomic write they share.
//!
//! Every file starts with [`HEADER`]: `down` removes a drop-in only when its content still starts
//! with it, so a file an administrator took over is left alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::model::{Desired, Host};

/// First line of every file the agent writes.
pub const HEADER: &str =
    "# Managed by hostagent: rewritten on every apply, removed by `hostagent down`.";

/// Absolute (un-rooted) path of the sysctl drop-in.
pub const SYSCTL_DROPIN: &str = "/etc/sysctl.d/90-hostagent.conf";
/// Absolute (un-rooted) path of the vhost_net module options.
pub const VHOST_CONF: &str = "/etc/modprobe.d/vhost-net.conf";
/// Where the loaded module shows the live option.
pub const VHOST_PARAM: &str = "/sys/module/vhost_net/parameters/experimental_zcopytx";

/// Is this content ours (starts with our header)?
pub fn is_ours(content: &str) -> bool {
    content.starts_with(HEADER)
}

/// The sysctl drop-in for `[sysctl]`, or None when the table is empty.
pub fn render_sysctl_dropin(sysctls: &BTreeMap<String, String>) -> Option<String> {
    if sysctls.is_empty() {
        return None;
    }
    let mut s = format!("{HEADER}\n# From the [sysctl] table of the hostagent config.\n");
    for (k, v) in sysctls {
        s.push_str(&format!("{k} = {v}\n"));
    }
    Some(s)
}

/// The modprobe options for vhost_net, or None when `[vhost_net]` is not configured.
pub fn render_vhost_conf(zcopytx: Option<bool>) -> Option<String> {
    zcopytx.map(|z| {
        format!(
            "{HEADER}\n# Takes effect when vhost_net is (re)loaded.\noptions vhost_net experimental_zcopytx={}\n",
            u8::from(z)
        )
    })
}

/// Every drop-in the agent manages, with the content the desired state wants (None = the file
/// should not exist, or at least not be ours).
pub fn desired_files(desired: &Desired) -> Vec<(PathBuf, Option<String>)> {
    vec![
        (
            PathBuf::from(SYSCTL_DROPIN),
            render_sysctl_dropin(&desired.sysctls),
        ),
        (
            PathBuf::from(VHOST_CONF),
            render_vhost_conf(desired.vhost_zcopytx),
        ),
    ]
}

/// Read a file; None when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Write via a temp file in the same directory, fsync, rename, fsync the directory: readers see
/// the old or the new content, never a torn file.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.hostagent-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(content).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove a file; absent is fine.
pub fn remove_opt(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The loaded vhost_net module's live experimental_zcopytx, None when the module is not loaded.
pub fn live_vhost_zcopytx(host: &Host) -> Option<bool> {
    let raw = std::fs::read_to_string(host.path(VHOST_PARAM)).ok()?;
    match raw.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// The value the modprobe.d file asks for, if the file is there and parses.
pub fn configured_vhost_zcopytx(content: &str) -> Option<bool> {
    content.lines().find_map(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("options")?
            .trim_start()
            .strip_prefix("vhost_net")?;
        rest.split_whitespace()
            .find_map(|kv| match kv.strip_prefix("experimental_zcopytx=")? {
                "1" | "Y" | "y" => Some(true),
                "0" | "N" | "n" => Some(false),
                _ => None,
            })
    })
}

/// A sentence saying vhost_net must be reloaded for the file to take effect, when the loaded
/// module's value differs from `wanted`. The agent never reloads it: guests may be using it.
pub fn vhost_reload_note(host: &Host, wanted: bool) -> Option<String> {
    let live = live_vhost_zcopytx(host)?;
    (live != wanted).then(|| {
        format!(
            "vhost_net is loaded with experimental_zcopytx={} but {VHOST_CONF} sets {}: reload the module \
             (`modprobe -r vhost_net && modprobe vhost_net`, with no guest running) for it to take effect",
            u8::from(live),
            u8::from(wanted)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_conf_round_trips_and_is_ours() {
        let c = render_vhost_conf(Some(true)).unwrap();
        assert!(is_ours(&c));
        assert_eq!(configured_vhost_zcopytx(&c), Some(true));
        assert_eq!(
            configured_vhost_zcopytx(&render_vhost_conf(Some(false)).unwrap()),
            Some(false)
        );
        assert_eq!(render_vhost_conf(None), None);
    }

    #[test]
    fn reload_note_only_when_loaded_value_differs() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path(), "/var/lib/hostagent");
        assert_eq!(
            vhost_reload_note(&host, true),
            None,
            "module not loaded: nothing to say"
        );
        let p = host.path(VHOST_PARAM);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "N\n").unwrap();
        assert!(vhost_reload_note(&host, true)
            .unwrap()
            .contains("experimental_zcopytx=0"));
        assert_eq!(vhost_reload_note(&host, false), None);
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/f.conf");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(
            std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
