//! Operations on existing definitions: `guest clone` (virt-clone), `guest virtio` and
//! `guest vhost` (the `virsh edit` steps of the virtualization guide).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hwaddr::Mac;

use super::conn::{self, Conn};
use super::storage::{StoragePool, Volume, VolumeSpec};
use super::{console_log, xml};
use crate::config::{self, guest_mac, ExtraReservation, Model};

/// MAC of a clone's `index`-th interface: the first is derived exactly like a config guest's.
pub fn clone_mac(name: &str, index: usize) -> Mac {
    if index == 0 {
        guest_mac(name)
    } else {
        guest_mac(&format!("{name}/{index}"))
    }
}

/// Names of the clones: NEW, or NEW-1 … NEW-N.
pub fn clone_names(new: &str, count: u32) -> Vec<String> {
    if count <= 1 {
        vec![new.to_string()]
    } else {
        (1..=count).map(|i| format!("{new}-{i}")).collect()
    }
}

pub struct CloneRequest<'a> {
    pub source: &'a str,
    pub new: &'a str,
    pub count: u32,
    /// Full copies instead of qcow2 overlays on the source's images.
    pub full: bool,
}

/// Clone a shut-off guest: new name, UUID, MACs, disks (overlays or copies, as volumes of the
/// storage pool, made by libvirtd) and, when the source sits on a config network with DHCP, a
/// reservation. Returns a line per clone.
pub fn clone_blocking(
    c: &Conn,
    model: &Model,
    root: &Path,
    req: &CloneRequest,
) -> Result<Vec<String>> {
    let src = c
        .lookup(req.source)?
        .with_context(|| format!("no guest named {} in libvirt", req.source))?;
    if src
        .is_active()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    {
        bail!(
            "guest {} is running: shut it down first (a running guest's disks are not consistent)",
            req.source
        );
    }
    let (info, src_xml) = conn::inactive_info(&src)?;
    let names = clone_names(req.new, req.count);
    for n in &names {
        crate::config::check_guest_name(n).map_err(|e| anyhow::anyhow!("{e}"))?;
        if c.lookup(n)?.is_some() {
            bail!("a guest named {n} already exists");
        }
    }
    let taken = mac_holders(c, model, root, &names)?;
    check_clone_macs(taken, &names, info.interfaces.len())?;
    let network = info
        .owner
        .as_ref()
        .map(|o| o.network.clone())
        .or_else(|| {
            let bridge = info.interfaces.first()?.bridge.clone()?;
            model
                .networks
                .iter()
                .find(|n| n.bridge == bridge)
                .map(|n| n.name.clone())
        })
        .filter(|n| {
            model
                .networks
                .iter()
                .any(|net| &net.name == n && net.dhcp.is_some())
        });
    let pool = c.ensure_pool(&model.libvirt.pool)?;
    let mut out = Vec::new();
    for name in &names {
        let mut made: Vec<Volume> = Vec::new();
        match clone_one(
            c,
            model,
            root,
            req,
            &info,
            &src_xml,
            name,
            network.as_deref(),
            &pool,
            &mut made,
        ) {
            Ok(line) => out.push(line),
            Err(e) => {
                // Clones finished before stay (each is complete); this one's new disks go.
                for v in &made {
                    if let Err(d) = v.delete() {
                        tracing::warn!("removing a volume of the failed clone {name}: {d}");
                    }
                }
                return Err(e.context(format!(
                    "cloning {} as {name} (done before: {})",
                    req.source,
                    out.len()
                )));
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn clone_one(
    c: &Conn,
    model: &Model,
    root: &Path,
    req: &CloneRequest,
    info: &xml::DomainInfo,
    src_xml: &str,
    name: &str,
    network: Option<&str>,
    pool: &StoragePool,
    made: &mut Vec<Volume>,
) -> Result<String> {
    let macs: Vec<Mac> = (0..info.interfaces.len())
        .map(|i| clone_mac(name, i))
        .collect();
    let file_disks: Vec<&xml::DiskInfo> =
        info.disks.iter().filter(|d| d.source.is_some()).collect();
    let several = file_disks.iter().filter(|d| d.device == "disk").count() > 1;
    let mut new_files = Vec::new();
    for d in &file_disks {
        let Some(source) = d.source.as_deref().filter(|_| d.device == "disk") else {
            new_files.push(None); // CD-ROM images are shared, as virt-clone does
            continue;
        };
        // What QEMU opens the source as: libvirt's own record of it (no format means raw).
        let format = d.format.clone().unwrap_or_else(|| "raw".into());
        let ext = if req.full { format.as_str() } else { "qcow2" };
        let volume = if several {
            format!("{name}-{}.{ext}", d.target)
        } else {
            format!("{name}.{ext}")
        };
        let vol = if req.full {
            let from = c.volume_by_path(source)?.with_context(|| {
                format!("--full copies through libvirt's storage API, which needs the source disk in a storage pool, and {source} is in none: define a pool for its directory (virsh pool-define-as NAME dir --target DIR && virsh pool-start NAME), or clone without --full (a qcow2 overlay on it)")
            })?;
            pool.copy_volume(
                &VolumeSpec {
                    name: &volume,
                    format: &format,
                    capacity: None,
                    backing: None,
                },
                &from,
            )?
        } else {
            pool.create_volume(&VolumeSpec {
                name: &volume,
                format: "qcow2",
                capacity: None,
                backing: Some((source, &format)),
            })?
        };
        let path = vol.path()?;
        made.push(vol);
        new_files.push(Some(path));
    }
    let ip = match network {
        Some(net) => Some(reserve(model, root, net, name, &macs)?),
        None => None,
    };
    let log = info
        .console_log
        .as_ref()
        .map(|_| console_log(root, model, name));
    if let Some(d) = log.as_ref().and_then(|l| l.parent()) {
        std::fs::create_dir_all(d)?;
    }
    let log_text = log.as_ref().map(|l| l.display().to_string());
    let new_xml = xml::clone_xml(
        src_xml,
        &xml::CloneSpec {
            name,
            macs: &macs,
            disk_files: &new_files,
            console_log: log_text.as_deref(),
            ip,
            network,
            source: &info.name,
        },
    )?;
    c.define(&new_xml)?;
    let mac = macs.first().map_or_else(|| "-".to_string(), Mac::to_string);
    let how = if req.full {
        "full copies"
    } else {
        "qcow2 overlays on the source's disks"
    };
    Ok(match ip {
        Some(ip) => format!("defined {name} (MAC {mac}, reserved {ip}, {how})"),
        None => format!("defined {name} (MAC {mac}, no reservation: the source is on no config network with DHCP; {how})"),
    })
}

/// Who already has which MAC on this host: the config's guests, reservations and bridges, the
/// clone reservations on record (but those of `replacing`, which a new clone of that name takes
/// over) and every interface of every libvirt domain.
fn mac_holders(
    c: &Conn,
    model: &Model,
    root: &Path,
    replacing: &[String],
) -> Result<Vec<(Mac, String)>> {
    let mut out = model.macs();
    for r in config::read_clone_reservations(root, &model.state_dir)
        .into_iter()
        .filter(|r| !replacing.contains(&r.name))
    {
        out.push((r.mac, format!("clone \"{}\"", r.name)));
    }
    for d in c.all_domains()? {
        let Ok((info, _)) = conn::inactive_info(&d) else {
            continue;
        };
        for mac in info.interfaces.iter().filter_map(|n| n.mac) {
            out.push((mac, format!("libvirt domain \"{}\"", info.name)));
        }
    }
    Ok(out)
}

/// A clone's MACs are derived from its name (24 bits of a hash): refuse a name whose MACs meet
/// a MAC already in use, or each other, before anything is made.
fn check_clone_macs(
    mut taken: Vec<(Mac, String)>,
    names: &[String],
    interfaces: usize,
) -> Result<()> {
    for name in names {
        for i in 0..interfaces {
            let mac = clone_mac(name, i);
            if let Some((_, who)) = taken.iter().find(|(m, _)| *m == mac) {
                bail!("the MAC {mac} derived for clone {name} is already used by {who}: choose another name for the clone");
            }
            taken.push((mac, format!("clone \"{name}\"")));
        }
    }
    Ok(())
}

/// Pick a free address on `network` for a clone and record it in the clone reservations file.
fn reserve(model: &Model, root: &Path, network: &str, name: &str, mac: &[Mac]) -> Result<Ipv4Addr> {
    let Some(mac) = mac.first() else {
        bail!("clone {name} has no network interface to reserve an address for")
    };
    let cfg = model
        .dhcp_configs(root)
        .into_iter()
        .find(|d| d.network == network)
        .with_context(|| format!("network {network} has no DHCP"))?;
    let first = u32::from(cfg.subnet.network()) + 1;
    let last = u32::from(cfg.subnet.broadcast()).saturating_sub(1);
    let ip = (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| {
            *ip != cfg.server_ip
                && !(cfg.range_start <= *ip && *ip <= cfg.range_end)
                && !cfg.hosts.iter().any(|h| h.ip == *ip || h.mac == *mac)
        })
        .with_context(|| format!("network {network} has no free address outside its DHCP range"))?;
    let file = config::clone_reservations_file(root, &model.state_dir);
    let mut all = config::read_clone_reservations(root, &model.state_dir);
    all.retain(|r| r.name != name);
    all.push(ExtraReservation {
        network: network.to_string(),
        name: name.to_string(),
        mac: *mac,
        ip,
    });
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&all)?)?;
    std::fs::rename(&tmp, &file)?;
    Ok(ip)
}

/// `guest virtio`: rewrite the persistent definition; refuse while it runs unless `next_boot`.
pub fn virtio_blocking(c: &Conn, name: &str, next_boot: bool) -> Result<Vec<String>> {
    edit(c, name, next_boot, xml::to_virtio)
}

/// `guest vhost NAME on|off`: rewrite the persistent definition's virtio NICs.
pub fn vhost_blocking(c: &Conn, name: &str, on: bool, next_boot: bool) -> Result<Vec<String>> {
    edit(c, name, next_boot, |x| xml::set_vhost(x, on))
}

fn edit(
    c: &Conn,
    name: &str,
    next_boot: bool,
    change: impl Fn(&str) -> std::result::Result<(String, Vec<String>), xml::XmlError>,
) -> Result<Vec<String>> {
    let d = c
        .lookup(name)?
        .with_context(|| format!("no guest named {name} in libvirt"))?;
    let running = d
        .is_active()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if running && !next_boot {
        bail!("guest {name} is running: shut it down first, or pass --next-boot to change its definition for its next start");
    }
    let (_, current) = conn::inactive_info(&d)?;
    let (new, mut changes) = change(&current)?;
    if changes.is_empty() {
        return Ok(vec![format!("guest {name}: nothing to change")]);
    }
    c.define(&new)?;
    if running {
        changes.push(format!("guest {name} is running: the changes apply from its next start (shut it down, then start it)"));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_name_whose_mac_is_taken_is_refused_naming_the_holder() {
        // Found by brute force (as in the config tests): their derived MACs meet.
        let (guest, clone) = ("db588", "web23440");
        assert_eq!(clone_mac(clone, 0), config::guest_mac(guest));
        let taken = vec![(config::guest_mac(guest), format!("guest \"{guest}\""))];
        let e = check_clone_macs(taken.clone(), &clone_names(clone, 1), 1).expect_err("taken");
        assert_eq!(
            e.to_string(),
            format!("the MAC {} derived for clone {clone} is already used by guest \"{guest}\": choose another name for the clone", config::guest_mac(guest))
        );
        // A second interface's MAC is checked too, and so are the new clones among themselves.
        let second = clone_mac("web", 1);
        let e = check_clone_macs(
            vec![(second, "libvirt domain \"old\"".into())],
            &clone_names("web", 1),
            2,
        )
        .expect_err("second NIC");
        assert!(e.to_string().contains("libvirt domain \"old\""), "{e}");
        assert!(check_clone_macs(taken, &clone_names("web", 3), 2).is_ok());
    }
}
