//! Guest disks as libvirt storage volumes: libvirtd creates, copies and owns the files, in a pool
//! directory its QEMU user can reach.
//!
//! Why not files the agent makes itself (qemu-img into `<state_dir>/guests`): with libvirt's
//! default security (Debian: QEMU runs as `libvirt-qemu`, DAC relabelling on) libvirt chowns a
//! disk file to that user at start, but every directory above it must already let the user
//! through, and the agent's state directory is root-only (0700). A pool is the place libvirt
//! itself keeps images for that reason (`/var/lib/libvirt/images`, 0711), and volumes made
//! through the storage API are also labelled right on SELinux and AppArmor hosts.

use std::fmt::Write as _;

use super::conn::{Conn, LibvirtError, Result};
use super::sys;
use super::xml::escape;

/// The pool guests' disks go to unless `[libvirt] pool` names another: libvirt's own default
/// (what virt-install and virt-manager create on first use).
pub const DEFAULT_POOL: &str = "default";
/// Where the agent creates [`DEFAULT_POOL`] when libvirt has none (libvirt's usual place; as
/// libvirtd sees it, so never under --root).
pub const DEFAULT_POOL_DIR: &str = "/var/lib/libvirt/images";

fn call(what: impl Into<String>) -> impl FnOnce(sys::Error) -> LibvirtError {
    let what = what.into();
    move |e| LibvirtError::Call {
        what,
        message: e.message,
    }
}

/// What libvirt has under a pool name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Missing,
    Inactive,
    Active,
}

/// The definition of [`DEFAULT_POOL`]: a directory pool, root-owned and 0711 as Debian's
/// libvirt-daemon-system package makes `/var/lib/libvirt/images` (other users may pass through
/// to the files libvirt chowns to them, not list the directory).
pub fn default_pool_xml() -> String {
    format!(
        "<pool type='dir'>\n  <name>{DEFAULT_POOL}</name>\n  <target>\n    <path>{DEFAULT_POOL_DIR}</path>\n    <permissions><mode>0711</mode><owner>0</owner><group>0</group></permissions>\n  </target>\n</pool>\n"
    )
}

/// A new volume: `capacity` bytes (None: the backing image's size), in `format`, optionally a
/// qcow2 overlay on `backing` (path, format).
pub struct VolumeSpec<'a> {
    pub name: &'a str,
    pub format: &'a str,
    pub capacity: Option<u64>,
    pub backing: Option<(&'a str, &'a str)>,
}

impl VolumeSpec<'_> {
    pub fn xml(&self) -> String {
        let mut x = String::from("<volume>\n");
        let _ = writeln!(x, "  <name>{}</name>", escape(self.name));
        if let Some(c) = self.capacity {
            let _ = writeln!(x, "  <capacity unit='bytes'>{c}</capacity>");
        }
        let _ = writeln!(
            x,
            "  <target><format type='{}'/></target>",
            escape(self.format)
        );
        if let Some((path, format)) = self.backing {
            // The format must be given: without it libvirt records the backing file as raw.
            let _ = writeln!(
                x,
                "  <backingStore><path>{}</path><format type='{}'/></backingStore>",
                escape(path),
                escape(format)
            );
        }
        x.push_str("</volume>\n");
        x
    }
}

/// An active pool.
pub struct StoragePool {
    inner: sys::Pool,
    pub name: String,
}

/// A volume of some pool.
pub struct Volume {
    inner: sys::Volume,
}

impl Conn {
    fn pool_ref(&self, name: &str) -> Result<Option<sys::Pool>> {
        match self.raw().pool_lookup_by_name(name) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.code == sys::ERR_NO_STORAGE_POOL => Ok(None),
            Err(e) => Err(call(format!("looking up storage pool {name}"))(e)),
        }
    }

    pub fn pool_state(&self, name: &str) -> Result<PoolState> {
        Ok(match self.pool_ref(name)? {
            None => PoolState::Missing,
            Some(p) => {
                if p.is_active()
                    .map_err(call(format!("reading storage pool {name}")))?
                {
                    PoolState::Active
                } else {
                    PoolState::Inactive
                }
            }
        })
    }

    /// The pool, started if it was defined but inactive (and refreshed: volumes copied into its
    /// directory by hand are seen). [`DEFAULT_POOL`] is defined, built and set to autostart
    /// when libvirt has none; another missing pool is an error saying how to make it.
    pub fn ensure_pool(&self, name: &str) -> Result<StoragePool> {
        let what = |w: &str| format!("{w} storage pool {name}");
        let pool = match self.pool_ref(name)? {
            Some(p) => p,
            None if name == DEFAULT_POOL => {
                let p = self
                    .raw()
                    .pool_define_xml(&default_pool_xml())
                    .map_err(call(what("defining")))?;
                p.build().map_err(call(what("building")))?;
                p.set_autostart(true)
                    .map_err(call(what("setting autostart on")))?;
                tracing::info!(pool = name, dir = DEFAULT_POOL_DIR, "storage pool defined");
                p
            }
            None => return Err(missing_pool(name)),
        };
        if !pool.is_active().map_err(call(what("reading")))? {
            pool.create().map_err(call(what("starting")))?;
            tracing::info!(pool = name, "storage pool started");
        }
        Ok(StoragePool {
            inner: pool,
            name: name.to_string(),
        })
    }

    /// The pool if it exists and runs; None otherwise (nothing is changed: for `plan`).
    pub fn active_pool(&self, name: &str) -> Result<Option<StoragePool>> {
        let Some(p) = self.pool_ref(name)? else {
            return Ok(None);
        };
        if !p
            .is_active()
            .map_err(call(format!("reading storage pool {name}")))?
        {
            return Ok(None);
        }
        Ok(Some(StoragePool {
            inner: p,
            name: name.to_string(),
        }))
    }

    /// The volume whose file is `path`, if a pool holds it.
    pub fn volume_by_path(&self, path: &str) -> Result<Option<Volume>> {
        match self.raw().vol_lookup_by_path(path) {
            Ok(v) => Ok(Some(Volume { inner: v })),
            Err(e) if e.code == sys::ERR_NO_STORAGE_VOL => Ok(None),
            Err(e) => Err(call(format!("looking up the volume of {path}"))(e)),
        }
    }
}

/// A `[libvirt] pool` that libvirt does not have.
pub fn missing_pool(name: &str) -> LibvirtError {
    LibvirtError::Call {
        what: format!("storage pool {name}"),
        message: format!(
            "libvirt has no storage pool named \"{name}\": define it (e.g. `virsh pool-define-as {name} dir --target /srv/images && virsh pool-build {name} && virsh pool-start {name} && virsh pool-autostart {name}`), or leave [libvirt] pool out to use libvirt's \"{DEFAULT_POOL}\" pool"
        ),
    }
}

impl StoragePool {
    /// The pool's directory (its `<target><path>`).
    pub fn dir(&self) -> Result<String> {
        let text = self
            .inner
            .xml_desc()
            .map_err(call(format!("reading storage pool {}", self.name)))?;
        let doc = roxmltree::Document::parse(&text).map_err(super::xml::XmlError::from)?;
        Ok(doc
            .descendants()
            .find(|n| {
                n.has_tag_name("path") && n.parent().is_some_and(|p| p.has_tag_name("target"))
            })
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// The volume `name`, looking again after a refresh when it is not known (a file copied
    /// into the directory since the pool started).
    pub fn volume(&self, name: &str) -> Result<Option<Volume>> {
        let lookup = || match self.inner.vol_lookup_by_name(name) {
            Ok(v) => Ok(Some(Volume { inner: v })),
            Err(e) if e.code == sys::ERR_NO_STORAGE_VOL => Ok(None),
            Err(e) => Err(call(format!(
                "looking up volume {name} in pool {}",
                self.name
            ))(e)),
        };
        if let Some(v) = lookup()? {
            return Ok(Some(v));
        }
        self.inner
            .refresh()
            .map_err(call(format!("refreshing storage pool {}", self.name)))?;
        lookup()
    }

    pub fn create_volume(&self, spec: &VolumeSpec) -> Result<Volume> {
        self.inner
            .vol_create_xml(&spec.xml())
            .map(|inner| Volume { inner })
            .map_err(call(format!(
                "creating volume {} in pool {}",
                spec.name, self.name
            )))
    }

    /// A full copy of `from` as a new volume (virt-clone's copy, done by libvirtd).
    pub fn copy_volume(&self, spec: &VolumeSpec, from: &Volume) -> Result<Volume> {
        self.inner
            .vol_create_xml_from(&spec.xml(), &from.inner)
            .map(|inner| Volume { inner })
            .map_err(call(format!(
                "copying a volume to {} in pool {}",
                spec.name, self.name
            )))
    }
}

impl Volume {
    pub fn path(&self) -> Result<String> {
        self.inner.path().map_err(call("reading a volume's path"))
    }

    /// The image format libvirt records for the volume ("qcow2", "raw", …).
    pub fn format(&self) -> Result<String> {
        let text = self
            .inner
            .xml_desc()
            .map_err(call("reading a volume's definition"))?;
        let doc = roxmltree::Document::parse(&text).map_err(super::xml::XmlError::from)?;
        Ok(doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("target"))
            .and_then(|t| t.children().find(|n| n.has_tag_name("format")))
            .and_then(|f| f.attribute("type"))
            .unwrap_or("raw")
            .to_string())
    }

    pub fn delete(&self) -> Result<()> {
        self.inner.delete().map_err(call("deleting a volume"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_xml_names_the_backing_format() {
        let x = VolumeSpec {
            name: "web-1.qcow2",
            format: "qcow2",
            capacity: None,
            backing: Some(("/var/lib/libvirt/images/base's.img", "raw")),
        }
        .xml();
        let doc = roxmltree::Document::parse(&x).expect("well-formed");
        let backing = doc
            .descendants()
            .find(|n| n.has_tag_name("backingStore"))
            .expect("backingStore");
        let text = |tag: &str| {
            backing
                .descendants()
                .find(|n| n.has_tag_name(tag))
                .map(|n| {
                    (
                        n.text().map(str::to_string),
                        n.attribute("type").map(str::to_string),
                    )
                })
        };
        assert_eq!(
            text("path"),
            Some((Some("/var/lib/libvirt/images/base's.img".into()), None))
        );
        assert_eq!(text("format"), Some((None, Some("raw".into()))));
        assert!(!x.contains("<capacity"), "{x}");
        let sized = VolumeSpec {
            name: "n.raw",
            format: "raw",
            capacity: Some(1 << 30),
            backing: None,
        }
        .xml();
        assert!(
            sized.contains("<capacity unit='bytes'>1073741824</capacity>"),
            "{sized}"
        );
    }

    #[test]
    fn the_default_pool_is_a_root_owned_0711_directory() {
        let x = default_pool_xml();
        let doc = roxmltree::Document::parse(&x).expect("well-formed");
        let find = |tag: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text())
                .map(str::to_string)
        };
        assert_eq!(doc.root_element().attribute("type"), Some("dir"));
        assert_eq!(find("name").as_deref(), Some(DEFAULT_POOL));
        assert_eq!(find("path").as_deref(), Some(DEFAULT_POOL_DIR));
        assert_eq!(find("mode").as_deref(), Some("0711"));
        assert_eq!(find("owner").as_deref(), Some("0"));
    }
}
