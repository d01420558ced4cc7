//! The server's own DUID (RFC 8415 §11), kept in a file under state_dir so that it survives
//! restarts: a client's Renew names the server by it, and a server whose DUID changed would
//! drop every Renew as "not for us" (clients would fall back to Rebind, then lose their
//! addresses' continuity).
//!
//! A DUID-UUID (type 4, RFC 6355) from 16 random bytes, rather than a DUID-LLT: the host has
//! no one link-layer address that stands for it (bridges come and go, and take their first
//! port's MAC), and a DUID-LLT's only virtue, being made without storage, does not apply
//! when it has to be stored anyway. Written as hex text, created with write-new-then-rename.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::leases::v6::Duid;

/// Reads the DUID at `path`, or makes one and stores it there (durably) when the file is
/// missing. A file that is not a DUID is an error naming it: replacing it silently would
/// change the server's identity.
pub fn load_or_create(path: &Path) -> io::Result<Duid> {
    match fs::read_to_string(path) {
        Ok(text) => Duid::parse(text.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a DUID (hex bytes such as 00:04:...); remove it to have a new one made",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e),
    }
}

fn create(path: &Path) -> io::Result<Duid> {
    let mut uuid = [0u8; 16];
    getrandom(&mut uuid)?;
    // RFC 4122 version 4 (random), variant 10.
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut bytes = vec![0, 4];
    bytes.extend_from_slice(&uuid);
    let duid = Duid::new(&bytes).ok_or_else(|| io::Error::other("DUID-UUID has 18 bytes"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{duid}")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    tracing::info!(path = %path.display(), duid = %duid, "DHCPv6: made the server DUID");
    Ok(duid)
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duid_is_made_once_and_read_back_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dhcp6/server-duid");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.kind(), 4);
        assert_eq!(first.as_bytes().len(), 18);
        assert_eq!(load_or_create(&path).unwrap(), first);
        fs::write(&path, "not a duid\n").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("is not a DUID"), "{e}");
    }
}
