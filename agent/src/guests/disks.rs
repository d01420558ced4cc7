//! A config guest's disk: what `plan` says about it, how `apply` makes it when it is missing, and
//! where the domain definition points.
//!
//! A disk without an absolute `path` is a volume of the storage pool (`[libvirt] pool`, libvirt's
//! `default` unless set), made by libvirtd through its storage API (`storage`); `default` itself
//! is created when libvirt has no such pool. A disk with an absolute `path` is a file the user
//! placed: it is used where it is (and made with qemu-img when missing), and `plan` warns when
//! libvirt's QEMU user cannot reach it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use netcfg::Host;

use super::conn::{Conn, LibvirtError, Result};
use super::storage::{
    missing_pool, PoolState, StoragePool, VolumeSpec, DEFAULT_POOL, DEFAULT_POOL_DIR,
};
use super::{qemu_img, GuestAction};
use crate::config::{DiskSource, Guest, GuestDisk, Model};

fn gib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// The pool as one `plan` sees it: looked up once, and the step that makes it usable (define or
/// start) planned once, before the first volume.
pub(super) struct PoolView<'a> {
    name: &'a str,
    /// None until looked up; then the pool if it is already active.
    seen: Option<Option<StoragePool>>,
}

impl<'a> PoolView<'a> {
    pub(super) fn new(name: &'a str) -> PoolView<'a> {
        PoolView { name, seen: None }
    }

    fn get(&mut self, c: &Conn, actions: &mut Vec<GuestAction>) -> Result<Option<&StoragePool>> {
        if self.seen.is_none() {
            match c.pool_state(self.name)? {
                PoolState::Missing if self.name == DEFAULT_POOL => {
                    actions.push(GuestAction::CreatePool {
                        pool: self.name.to_string(),
                        dir: DEFAULT_POOL_DIR.to_string(),
                    })
                }
                PoolState::Missing => return Err(missing_pool(self.name)),
                PoolState::Inactive => actions.push(GuestAction::StartPool {
                    pool: self.name.to_string(),
                }),
                PoolState::Active => {}
            }
            self.seen = Some(c.active_pool(self.name)?);
        }
        Ok(self.seen.as_ref().and_then(Option::as_ref))
    }
}

fn plan_error(guest: &str, message: String) -> LibvirtError {
    LibvirtError::Call {
        what: format!("disk of guest {guest}"),
        message,
    }
}

/// The steps that make `g`'s missing disk (none when it exists), and notes on a file disk QEMU
/// may not reach.
pub(super) fn plan(
    c: &Conn,
    model: &Model,
    root: &Path,
    g: &Guest,
    pool: &mut PoolView,
    actions: &mut Vec<GuestAction>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(d) = &g.disk else { return Ok(()) };
    let host = Host::new(root, &model.state_dir);
    match &d.source {
        DiskSource::Volume(name) => {
            let pool_name = pool.name;
            let active = pool.get(c, actions)?;
            if let Some(p) = active {
                if p.volume(name)?.is_some() {
                    return Ok(());
                }
            }
            let how = match (&d.backing, d.size_bytes) {
                (Some(b), _) => format!("qcow2 overlay on {}", backing_name(b, &host, pool_name)),
                (None, Some(s)) => format!("{} {}", gib(s), d.format.as_str()),
                (None, None) => return Err(plan_error(&g.name, format!("volume {name} is not in storage pool {pool_name} and the disk has no size or backing to create it from: add size = \"20GiB\", or put the image in the pool (copy it into the pool's directory, then `virsh pool-refresh {pool_name}`)"))),
            };
            if let (Some(DiskSource::Volume(b)), Some(p)) = (&d.backing, active) {
                if p.volume(b)?.is_none() {
                    return Err(plan_error(&g.name, format!("the backing volume {b} is not in storage pool {}: put the template there (copy it into the pool's directory, then `virsh pool-refresh {}`)", p.name, p.name)));
                }
            }
            actions.push(GuestAction::CreateVolume {
                guest: g.name.clone(),
                pool: pool_name.to_string(),
                volume: name.clone(),
                how,
            });
        }
        DiskSource::File(p) => {
            let path = host.path(p);
            if let Some(note) = unreachable_for_qemu(&path) {
                notes.push(format!("guest {}: {note}", g.name));
            }
            if path.exists() {
                return Ok(());
            }
            let how = match (&d.backing, d.size_bytes) {
                (Some(b), _) => format!("qcow2 overlay on {}", backing_name(b, &host, pool.name)),
                (None, Some(s)) => format!("{} {}", gib(s), d.format.as_str()),
                (None, None) => {
                    return Err(plan_error(
                        &g.name,
                        format!(
                        "{} does not exist and the disk has no size or backing to create it from",
                        path.display()
                    ),
                    ))
                }
            };
            actions.push(GuestAction::CreateDisk {
                guest: g.name.clone(),
                path: path.display().to_string(),
                how,
            });
        }
    }
    Ok(())
}

fn backing_name(b: &DiskSource, host: &Host, pool: &str) -> String {
    match b {
        DiskSource::Volume(v) => format!("volume {v} in pool {pool}"),
        DiskSource::File(p) => host.path(p).display().to_string(),
    }
}

/// With libvirt's default security QEMU runs as an unprivileged user (Debian: libvirt-qemu)
/// and libvirt chowns the disk file to it, but not the directories above: each must let other
/// users through (search permission).
fn unreachable_for_qemu(file: &Path) -> Option<String> {
    let closed = file.ancestors().skip(1).find(|dir| {
        std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 == 0)
    })?;
    let mode = std::fs::metadata(closed).ok()?.permissions().mode() & 0o7777;
    Some(format!(
        "disk {} is below {} (mode {mode:04o}), which other users cannot enter: if QEMU runs unprivileged (libvirt's default: user libvirt-qemu) the guest will not start; leave the disk's path out to use a storage volume, or `chmod o+x {}`",
        file.display(),
        closed.display(),
        closed.display()
    ))
}

/// Makes `g`'s disk (the plan said it is missing). A volume that appeared meanwhile (e.g. its
/// pool was only just started and already held it) is kept.
pub(super) fn create(c: &Conn, model: &Model, root: &Path, g: &Guest) -> anyhow::Result<()> {
    let Some(d) = &g.disk else { return Ok(()) };
    let host = Host::new(root, &model.state_dir);
    match &d.source {
        DiskSource::Volume(name) => {
            let pool = c.ensure_pool(&model.libvirt.pool)?;
            if pool.volume(name)?.is_some() {
                tracing::info!(guest = %g.name, volume = %name, pool = %pool.name, "volume exists: kept");
                return Ok(());
            }
            let backing = d
                .backing
                .as_ref()
                .map(|b| backing_of(c, Some(&pool), &host, b))
                .transpose()?;
            pool.create_volume(&VolumeSpec {
                name,
                format: d.format.as_str(),
                capacity: d.size_bytes,
                backing: backing.as_ref().map(|(p, f)| (p.as_str(), f.as_str())),
            })?;
        }
        DiskSource::File(p) => {
            let path = host.path(p);
            match (&d.backing, d.size_bytes) {
                (Some(b), size) => {
                    let pool = matches!(b, DiskSource::Volume(_))
                        .then(|| c.ensure_pool(&model.libvirt.pool))
                        .transpose()?;
                    let (backing, _) = backing_of(c, pool.as_ref(), &host, b)?;
                    qemu_img::overlay(&path, Path::new(&backing), size)?
                }
                (None, Some(size)) => qemu_img::create(&path, d.format.as_str(), size)?,
                (None, None) => bail!(
                    "disk {} of guest {} does not exist and has no size or backing to create it from",
                    path.display(),
                    g.name
                ),
            }
        }
    }
    Ok(())
}

/// A backing image's file and format: a pool volume's as libvirt records them, a file's from
/// its own header (libvirt would record a file given without a format as raw).
fn backing_of(
    c: &Conn,
    pool: Option<&StoragePool>,
    host: &Host,
    b: &DiskSource,
) -> anyhow::Result<(String, String)> {
    match b {
        DiskSource::Volume(v) => {
            let pool = pool.context("a backing volume needs the storage pool")?;
            let vol = pool.volume(v)?.with_context(|| {
                format!(
                    "the backing volume {v} is not in storage pool {}",
                    pool.name
                )
            })?;
            Ok((vol.path()?, vol.format()?))
        }
        DiskSource::File(p) => {
            let path = host.path(p);
            let text = path.display().to_string();
            let format = match c.volume_by_path(&text)? {
                Some(vol) => vol.format()?,
                None => qemu_img::format_of(&path)?,
            };
            Ok((text, format))
        }
    }
}

/// The file the domain definition names for `g`'s disk (made by now).
pub(super) fn locate(
    c: &Conn,
    model: &Model,
    root: &Path,
    g: &Guest,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(GuestDisk { source, .. }) = &g.disk else {
        return Ok(None);
    };
    Ok(Some(match source {
        DiskSource::Volume(name) => {
            let pool = c.ensure_pool(&model.libvirt.pool)?;
            let vol = pool
                .volume(name)?
                .with_context(|| format!("volume {name} vanished from pool {}", pool.name))?;
            PathBuf::from(vol.path()?)
        }
        DiskSource::File(p) => Host::new(root, &model.state_dir).path(p),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_below_a_closed_directory_is_named_with_its_mode() {
        let t = tempfile::tempdir().expect("tempdir");
        let closed = t.path().join("closed");
        std::fs::create_dir_all(closed.join("open")).expect("dirs");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let note = unreachable_for_qemu(&closed.join("open/d.qcow2")).expect("a note");
        assert!(
            note.contains(&format!("below {} (mode 0700)", closed.display())),
            "{note}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let open = unreachable_for_qemu(&closed.join("open/d.qcow2"));
        // Only the directories above the test's own temp dir remain, and those are searchable
        // on any sane host (/tmp is 1777).
        assert!(open.is_none(), "{open:?}");
    }
}
