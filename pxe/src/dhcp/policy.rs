//! Which boot file or URL a client is handed, and the PXE options that make firmware take it.
//!
//! # The chain rule
//!
//! One table, read from EDK2's PxeBcDhcp4.c/HttpBootDhcp4.c, iPXE's dhcp.c, pixiecore, smee and
//! dnsmasq, and tested chain by chain (`tests` below, `pxe/tests/boot_chain.rs`, and real
//! firmware in `tests/tests/boot_field.rs`). "host" is the client's `[[network.dhcp.host]]`.
//!
//! | client (how it is recognised)                           | gets, first that applies                                                        |
//! |---------------------------------------------------------|---------------------------------------------------------------------------------|
//! | BIOS PXE ROM (93 = 0, or `PXEClient` without 93)        | host `boot`, else `bios`                                                        |
//! | UEFI x64 PXE (93 = 7 or 9)                              | host `boot`, else `uefi`                                                        |
//! | UEFI arm64 PXE (93 = 11)                                | host `boot`, else `arm64`                                                       |
//! | UEFI ia32 / arm32 / other PXE (93 = 6, 10, ...)         | host `boot`, else nothing                                                       |
//! | UEFI HTTP boot (60 `HTTPClient`, or 93 = 15, 16, 18, 19)| `http://<server>:<http_port>/` + host `boot`, else `arm64` (18, 19) or `uefi`  |
//! | iPXE (option 175, or user class `iPXE`)                 | host `script`; host `boot` unless it is an iPXE build; `script`; the firmware file of its architecture (by option 93, as above) unless that is an iPXE build; else nothing |
//! | no PXE signs (an OS's DHCP client)                      | nothing                                                                         |
//!
//! So the chains people run all end, and none loops:
//! - PXE ROM → pxelinux: `bios = "pxelinux.0"`; QEMU's NIC ROM *is* iPXE and gets `pxelinux.0`
//!   too (it is not an iPXE build). lpxelinux.0 the same way, then fetching over HTTP itself.
//! - PXE ROM → iPXE → script: `bios = "undionly.kpxe"`, `script = "boot.ipxe"`: the ROM gets
//!   undionly.kpxe; that iPXE comes back and gets the script. Without `script` it gets nothing
//!   (undionly.kpxe is an iPXE build: handing it out again would loop) and the log says why.
//! - UEFI → shim → GRUB: `uefi = "bootnetx64.efi"`; shim loads GRUB from its own folder.
//! - UEFI → ipxe.efi → script: as for BIOS, with `uefi = "ipxe.efi"`.
//! - UEFI HTTP boot: firmware asking as `HTTPClient` gets the `uefi` file as an http:// URL.
//!
//! "An iPXE build" is decided by the file's content (`ipxe_build`), not its name.
//!
//! # What goes with the file
//! - Firmware PXE gets the file in BOTH the header `file` and option 67 (many BIOS ROMs read only
//!   the header), `siaddr` = next-server, option 60 `PXEClient` and option 43 with
//!   PXE_DISCOVERY_CONTROL (sub-option 6) = 8: "use the boot file in this offer". EDK2 ranks that
//!   offer highest; `PXEClient` without 43 makes it ask again on UDP 4011 (which only the
//!   proxyDHCP server (`dhcp::proxy`) answers, and where it wants exactly that).
//! - iPXE handed a firmware file gets it the same way (by TFTP name: pxelinux derives its config
//!   path from it); a script is an http:// URL when HTTP boot is on, else its TFTP name.
//! - UEFI HTTP boot gets option 60 `HTTPClient` and the URL.
//! - A boot file (not a script, not a URL) carries the PXELINUX options 208–211 when the network
//!   sets any (`PxelinuxOptions`).
//! - A kind with nothing configured gets an address and no boot options at all (a bare
//!   `PXEClient` without a file would only confuse firmware).

use std::net::Ipv4Addr;

use super::classify::{ClientKind, UefiArch};
use super::ipxe_build::BootFiles;
use super::wire::opt;
use crate::config::{BootConfig, PxelinuxOptions, StaticHost};

/// Option 43 for PXE clients: sub-option 6 (PXE_DISCOVERY_CONTROL), length 1, value 8
/// (bit 3: use the boot server list off; download the file named in this reply), then END.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];
/// Option 208's fixed value (RFC 5071 §4).
pub const PXELINUX_MAGIC: [u8; 4] = [0xf1, 0x00, 0x74, 0x7e];

/// Boot-related parts of an OFFER/ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReply {
    /// Header `siaddr` (next-server).
    pub siaddr: Ipv4Addr,
    /// Header `file` and option 67: a TFTP path relative to the boot root, or an http:// URL.
    pub file: String,
    /// Option 66: the server address as text.
    pub server_name: String,
    /// Option 60 to send back (`PXEClient` / `HTTPClient`), if any.
    pub vendor_class: Option<&'static str>,
    /// Option 43, if any.
    pub vendor_options: Option<Vec<u8>>,
    /// Option 97 echoed back (PXE clients expect their UUID in the reply).
    pub client_uuid: Option<Vec<u8>>,
    /// More boot options (208–211), in order.
    pub extra: Vec<(u8, Vec<u8>)>,
}

impl BootReply {
    /// Every boot option in the order the reply carries them (60, 43, 66, 67, 97, 208–211).
    pub fn options(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(vc) = self.vendor_class {
            out.push((opt::VENDOR_CLASS, vc.as_bytes().to_vec()));
        }
        if let Some(vo) = &self.vendor_options {
            out.push((opt::VENDOR_SPECIFIC, vo.clone()));
        }
        out.push((opt::TFTP_SERVER_NAME, self.server_name.as_bytes().to_vec()));
        out.push((opt::BOOTFILE_NAME, self.file.as_bytes().to_vec()));
        if let Some(uuid) = &self.client_uuid {
            out.push((opt::CLIENT_UUID, uuid.clone()));
        }
        out.extend(self.extra.iter().cloned());
        out
    }
}

/// Why a client gets no boot file (an address only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBoot {
    /// An OS's DHCP client.
    NotABootClient,
    /// The network has no `[network.pxe]`.
    NoPxe,
    /// Nothing is configured for this kind of client.
    NothingFor(ClientKind),
    /// UEFI HTTP boot needs `http_port`.
    NoHttp,
    /// iPXE asked, no script applies, and every file for it is an iPXE build: handing one out
    /// would chainload forever.
    WouldLoop { file: String },
}

impl std::fmt::Display for NoBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBoot::NotABootClient => f.write_str("not a network-boot client"),
            NoBoot::NoPxe => f.write_str("the network has no [network.pxe]"),
            NoBoot::NothingFor(kind) => write!(f, "no boot file configured for {kind} clients"),
            NoBoot::NoHttp => f.write_str("UEFI HTTP boot needs http_port in [network.pxe]"),
            NoBoot::WouldLoop { file } => write!(
                f,
                "iPXE asked and has no script to run; {file} is itself an iPXE build, so handing \
                 it out would chainload forever: set script = \"...\" (an iPXE script) or point \
                 the firmware key at a non-iPXE loader"
            ),
        }
    }
}

/// Decide the boot reply (the chain rule of the module docs). `files` says which configured
/// files are iPXE builds.
pub fn boot_reply(
    kind: &ClientKind,
    boot: Option<&BootConfig>,
    host: Option<&StaticHost>,
    server_ip: Ipv4Addr,
    client_uuid: Option<&[u8]>,
    files: &dyn BootFiles,
) -> Result<BootReply, NoBoot> {
    if *kind == ClientKind::Plain {
        return Err(NoBoot::NotABootClient);
    }
    let boot = boot.ok_or(NoBoot::NoPxe)?;
    let host_boot = host.and_then(|h| h.boot.as_deref());
    let http = |file: &str| -> Option<String> {
        boot.http_port
            .map(|port| format!("http://{server_ip}:{port}/{}", file.trim_start_matches('/')))
    };
    let reply = |file: String, vendor_class, vendor_options, pxelinux: bool| BootReply {
        siaddr: server_ip,
        file,
        server_name: server_ip.to_string(),
        vendor_class,
        vendor_options,
        client_uuid: client_uuid.map(<[u8]>::to_vec),
        extra: if pxelinux {
            pxelinux_options(&boot.pxelinux)
        } else {
            Vec::new()
        },
    };
    let firmware = |file: &str| {
        reply(
            file.to_string(),
            Some("PXEClient"),
            Some(PXE_VENDOR_OPTIONS.to_vec()),
            true,
        )
    };
    match kind {
        ClientKind::Plain => Err(NoBoot::NotABootClient),
        ClientKind::Ipxe { arch } => {
            enum Pick<'a> {
                Script(&'a str),
                File(&'a str),
            }
            let default_file = arch
                .map(ClientKind::of_pxe_arch)
                .and_then(|k| firmware_file(&k, boot));
            let candidates = [
                host.and_then(|h| h.script.as_deref()).map(Pick::Script),
                host_boot.map(Pick::File),
                boot.script.as_deref().map(Pick::Script),
                default_file.map(Pick::File),
            ];
            let mut looping = None;
            for pick in candidates.into_iter().flatten() {
                match pick {
                    Pick::Script(s) => {
                        return Ok(reply(
                            http(s).unwrap_or_else(|| s.to_string()),
                            None,
                            None,
                            false,
                        ))
                    }
                    Pick::File(f) if files.is_ipxe(f) => {
                        looping.get_or_insert(f);
                    }
                    Pick::File(f) => return Ok(firmware(f)),
                }
            }
            Err(match looping {
                Some(f) => NoBoot::WouldLoop {
                    file: f.to_string(),
                },
                None => NoBoot::NothingFor(*kind),
            })
        }
        ClientKind::UefiHttp { arch } => {
            let file = host_boot
                .or(match arch {
                    Some(18) | Some(19) => boot.arm64.as_deref(),
                    _ => boot.uefi.as_deref(),
                })
                .ok_or(NoBoot::NothingFor(*kind))?;
            let url = http(file).ok_or(NoBoot::NoHttp)?;
            Ok(reply(url, Some("HTTPClient"), None, false))
        }
        ClientKind::UefiPxe(_) | ClientKind::BiosPxe | ClientKind::OtherPxe { .. } => {
            let file = host_boot
                .or_else(|| firmware_file(kind, boot))
                .ok_or(NoBoot::NothingFor(*kind))?;
            Ok(firmware(file))
        }
    }
}

/// The network's file for a firmware PXE kind (`bios`, `uefi`, `arm64`; none for the others).
fn firmware_file<'a>(kind: &ClientKind, boot: &'a BootConfig) -> Option<&'a str> {
    match kind {
        ClientKind::BiosPxe => boot.bios.as_deref(),
        ClientKind::UefiPxe(UefiArch::X64) => boot.uefi.as_deref(),
        ClientKind::UefiPxe(UefiArch::Arm64) => boot.arm64.as_deref(),
        _ => None,
    }
}

/// 208 plus whichever of 209–211 are set; nothing when none is.
fn pxelinux_options(p: &PxelinuxOptions) -> Vec<(u8, Vec<u8>)> {
    if p.is_empty() {
        return Vec::new();
    }
    let mut out = vec![(opt::PXELINUX_MAGIC, PXELINUX_MAGIC.to_vec())];
    if let Some(f) = &p.config_file {
        out.push((opt::PXELINUX_CONFIG_FILE, f.as_bytes().to_vec()));
    }
    if let Some(prefix) = &p.path_prefix {
        out.push((opt::PXELINUX_PATH_PREFIX, prefix.as_bytes().to_vec()));
    }
    if let Some(secs) = p.reboot_time {
        out.push((opt::PXELINUX_REBOOT_TIME, secs.to_be_bytes().to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mac;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// Names ending in `.kpxe`, or starting with `ipxe`, stand for iPXE builds here (the real
    /// content check is `ipxe_build`'s, tested there and in pxe/tests/boot_chain.rs).
    fn ipxe_named(f: &str) -> bool {
        f.ends_with(".kpxe") || f.starts_with("ipxe")
    }

    fn boot(http_port: Option<u16>) -> BootConfig {
        BootConfig {
            root: "/srv/boot".into(),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: Some("ipxe-arm64.efi".into()),
            script: Some("boot.ipxe".into()),
            http_port,
            pxelinux: PxelinuxOptions::default(),
        }
    }

    /// Debian's netboot tree, no iPXE anywhere: pxelinux for BIOS, shim for UEFI.
    fn stock() -> BootConfig {
        BootConfig {
            bios: Some("pxelinux.0".into()),
            uefi: Some("debian-installer/amd64/bootnetx64.efi".into()),
            arm64: Some("debian-installer/arm64/bootnetaa64.efi".into()),
            script: None,
            ..boot(None)
        }
    }

    fn host(boot: Option<&str>, script: Option<&str>) -> StaticHost {
        StaticHost {
            mac: Mac([0x52, 0x54, 0, 0, 0, 0x10]),
            ip: Ipv4Addr::new(10, 77, 0, 10),
            name: Some("bastion".into()),
            boot: boot.map(Into::into),
            script: script.map(Into::into),
        }
    }

    fn decide(kind: ClientKind, b: &BootConfig, h: Option<&StaticHost>) -> Result<String, NoBoot> {
        boot_reply(&kind, Some(b), h, IP, None, &ipxe_named).map(|r| r.file)
    }

    const IPXE_BIOS: ClientKind = ClientKind::Ipxe { arch: Some(0) };
    const IPXE_X64: ClientKind = ClientKind::Ipxe { arch: Some(7) };
    const IPXE_ARM: ClientKind = ClientKind::Ipxe { arch: Some(11) };

    /// Every kind × (network default, per-host override), with and without HTTP.
    #[test]
    fn file_table() {
        let tftp = boot(None);
        let web = boot(Some(8069));
        let over = host(Some("custom.efi"), Some("host.ipxe"));
        let plain_host = host(None, None);
        let x64 = ClientKind::UefiPxe(UefiArch::X64);
        let arm = ClientKind::UefiPxe(UefiArch::Arm64);
        let ia32 = ClientKind::UefiPxe(UefiArch::Ia32);
        let http16 = ClientKind::UefiHttp { arch: Some(16) };
        let http19 = ClientKind::UefiHttp { arch: Some(19) };
        let s = |v: &str| Ok(v.to_string());
        let nothing = |k| Err(NoBoot::NothingFor(k));
        type Row<'a> = (
            ClientKind,
            &'a BootConfig,
            Option<&'a StaticHost>,
            Result<String, NoBoot>,
        );
        let rows: Vec<Row> = vec![
            (IPXE_BIOS, &tftp, None, s("boot.ipxe")),
            (IPXE_BIOS, &web, None, s("http://10.77.0.1:8069/boot.ipxe")),
            (
                IPXE_BIOS,
                &web,
                Some(&over),
                s("http://10.77.0.1:8069/host.ipxe"),
            ),
            (IPXE_BIOS, &tftp, Some(&over), s("host.ipxe")),
            (IPXE_BIOS, &tftp, Some(&plain_host), s("boot.ipxe")),
            (ClientKind::BiosPxe, &tftp, None, s("undionly.kpxe")),
            (ClientKind::BiosPxe, &web, None, s("undionly.kpxe")),
            (ClientKind::BiosPxe, &tftp, Some(&over), s("custom.efi")),
            (
                ClientKind::BiosPxe,
                &tftp,
                Some(&plain_host),
                s("undionly.kpxe"),
            ),
            (x64, &tftp, None, s("ipxe.efi")),
            (x64, &tftp, Some(&over), s("custom.efi")),
            (arm, &tftp, None, s("ipxe-arm64.efi")),
            (arm, &tftp, Some(&over), s("custom.efi")),
            (ia32, &tftp, None, nothing(ia32)),
            (ia32, &tftp, Some(&over), s("custom.efi")),
            (http16, &web, None, s("http://10.77.0.1:8069/ipxe.efi")),
            (
                http19,
                &web,
                None,
                s("http://10.77.0.1:8069/ipxe-arm64.efi"),
            ),
            (
                http16,
                &web,
                Some(&over),
                s("http://10.77.0.1:8069/custom.efi"),
            ),
            (http16, &tftp, None, Err(NoBoot::NoHttp)),
            (
                ClientKind::OtherPxe { arch: 2 },
                &tftp,
                None,
                nothing(ClientKind::OtherPxe { arch: 2 }),
            ),
            (
                ClientKind::OtherPxe { arch: 2 },
                &tftp,
                Some(&over),
                s("custom.efi"),
            ),
            (ClientKind::Plain, &tftp, None, Err(NoBoot::NotABootClient)),
            (
                ClientKind::Plain,
                &tftp,
                Some(&over),
                Err(NoBoot::NotABootClient),
            ),
        ];
        for (kind, b, h, want) in rows {
            assert_eq!(
                decide(kind, b, h),
                want,
                "{kind:?} http={:?} host={h:?}",
                b.http_port
            );
        }
    }

    /// iPXE without a script: the firmware file of its architecture, unless that is iPXE.
    #[test]
    fn ipxe_without_a_script_gets_its_firmware_file_unless_that_is_ipxe() {
        let s = |v: &str| Ok(v.to_string());
        let st = stock();
        // QEMU's NIC ROM (iPXE) on a pxelinux network: pxelinux.0, the "Nothing to boot".
        assert_eq!(decide(IPXE_BIOS, &st, None), s("pxelinux.0"));
        assert_eq!(
            decide(IPXE_X64, &st, None),
            s("debian-installer/amd64/bootnetx64.efi")
        );
        assert_eq!(
            decide(IPXE_ARM, &st, None),
            s("debian-installer/arm64/bootnetaa64.efi")
        );
        assert_eq!(
            decide(ClientKind::Ipxe { arch: None }, &st, None),
            Err(NoBoot::NothingFor(ClientKind::Ipxe { arch: None })),
            "no architecture: no firmware file to pick"
        );
        // The firmware files are iPXE builds and there is no script: nothing, and why.
        let ipxe_only = BootConfig {
            script: None,
            ..boot(None)
        };
        assert_eq!(
            decide(IPXE_BIOS, &ipxe_only, None),
            Err(NoBoot::WouldLoop {
                file: "undionly.kpxe".into()
            })
        );
        assert_eq!(
            decide(IPXE_X64, &ipxe_only, None),
            Err(NoBoot::WouldLoop {
                file: "ipxe.efi".into()
            })
        );
        // A per-host non-iPXE boot file wins over the network's script; an iPXE one is skipped.
        let with_script = BootConfig {
            script: Some("boot.ipxe".into()),
            ..stock()
        };
        assert_eq!(
            decide(
                IPXE_BIOS,
                &with_script,
                Some(&host(Some("lpxelinux.0"), None))
            ),
            s("lpxelinux.0")
        );
        assert_eq!(
            decide(IPXE_BIOS, &with_script, Some(&host(Some("my.kpxe"), None))),
            s("boot.ipxe")
        );
        assert_eq!(
            decide(IPXE_BIOS, &ipxe_only, Some(&host(Some("my.kpxe"), None))),
            Err(NoBoot::WouldLoop {
                file: "my.kpxe".into()
            }),
            "the first iPXE build met is the one named"
        );
        // A script of the network beats the network's firmware file.
        assert_eq!(decide(IPXE_BIOS, &with_script, None), s("boot.ipxe"));
        let why = NoBoot::WouldLoop {
            file: "undionly.kpxe".into(),
        }
        .to_string();
        assert!(
            why.contains("undionly.kpxe") && why.contains("script"),
            "{why}"
        );
    }

    /// Whatever the config, iPXE is never handed an iPXE build.
    #[test]
    fn ipxe_never_gets_an_ipxe_build() {
        let names = [
            None,
            Some("undionly.kpxe"),
            Some("ipxe.efi"),
            Some("pxelinux.0"),
        ];
        for bios in names {
            for uefi in names {
                for script in [None, Some("boot.ipxe")] {
                    for host_boot in names {
                        let b = BootConfig {
                            bios: bios.map(Into::into),
                            uefi: uefi.map(Into::into),
                            script: script.map(Into::into),
                            ..boot(None)
                        };
                        let h = host(host_boot, None);
                        for kind in [IPXE_BIOS, IPXE_X64, ClientKind::Ipxe { arch: None }] {
                            if let Ok(file) = decide(kind, &b, Some(&h)) {
                                assert!(!ipxe_named(&file), "{kind:?} got {file} from {b:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unconfigured_kinds_get_no_boot_reply() {
        let empty = BootConfig {
            root: "/b".into(),
            bios: None,
            uefi: None,
            arm64: None,
            script: None,
            http_port: Some(80),
            pxelinux: PxelinuxOptions::default(),
        };
        for kind in [
            IPXE_BIOS,
            ClientKind::BiosPxe,
            ClientKind::UefiPxe(UefiArch::X64),
            ClientKind::UefiPxe(UefiArch::Arm64),
            ClientKind::UefiHttp { arch: Some(16) },
        ] {
            assert_eq!(
                boot_reply(&kind, Some(&empty), None, IP, None, &ipxe_named),
                Err(NoBoot::NothingFor(kind)),
                "{kind:?}"
            );
            assert_eq!(
                boot_reply(&kind, None, None, IP, None, &ipxe_named),
                Err(NoBoot::NoPxe),
                "{kind:?} without [pxe]"
            );
        }
    }

    #[test]
    fn pxe_options_per_kind() {
        let b = boot(Some(8069));
        let uuid = [0u8; 17];
        let get = |kind: ClientKind, uuid: Option<&[u8]>| {
            boot_reply(&kind, Some(&b), None, IP, uuid, &ipxe_named).unwrap()
        };
        let r = get(ClientKind::UefiPxe(UefiArch::X64), Some(&uuid));
        assert_eq!(r.siaddr, IP);
        assert_eq!(r.server_name, "10.77.0.1");
        assert_eq!(r.vendor_class, Some("PXEClient"));
        assert_eq!(r.vendor_options.as_deref(), Some(&[6, 1, 8, 255][..]));
        assert_eq!(r.client_uuid.as_deref(), Some(&uuid[..]));

        let r = get(ClientKind::BiosPxe, None);
        assert_eq!(r.vendor_class, Some("PXEClient"));
        assert!(r.vendor_options.is_some());
        assert_eq!(r.client_uuid, None);

        let r = get(ClientKind::UefiHttp { arch: Some(16) }, None);
        assert_eq!(r.vendor_class, Some("HTTPClient"));
        assert_eq!(r.vendor_options, None);

        let r = get(IPXE_BIOS, None);
        assert_eq!(r.vendor_class, None);
        assert_eq!(r.vendor_options, None);
        assert!(!ipxe_named(&r.file), "iPXE must not get a binary");

        // iPXE handed a firmware file gets it like firmware does (TFTP name, PXEClient, 43).
        let r = boot_reply(&IPXE_BIOS, Some(&stock()), None, IP, None, &ipxe_named).unwrap();
        assert_eq!(r.file, "pxelinux.0");
        assert_eq!(r.vendor_class, Some("PXEClient"));
    }

    #[test]
    fn pxelinux_options_go_with_boot_files_only() {
        let b = BootConfig {
            http_port: Some(8069),
            script: Some("boot.ipxe".into()),
            pxelinux: PxelinuxOptions {
                config_file: Some("pxelinux.cfg/lab".into()),
                path_prefix: Some("debian-installer/amd64/".into()),
                reboot_time: Some(300),
            },
            ..stock()
        };
        let r = boot_reply(&ClientKind::BiosPxe, Some(&b), None, IP, None, &ipxe_named).unwrap();
        assert_eq!(
            r.extra,
            vec![
                (208, vec![0xf1, 0x00, 0x74, 0x7e]),
                (209, b"pxelinux.cfg/lab".to_vec()),
                (210, b"debian-installer/amd64/".to_vec()),
                (211, vec![0, 0, 1, 44]),
            ]
        );
        let codes: Vec<u8> = r.options().iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [60, 43, 66, 67, 208, 209, 210, 211]);
        for kind in [IPXE_BIOS, ClientKind::UefiHttp { arch: Some(16) }] {
            let r = boot_reply(&kind, Some(&b), None, IP, None, &ipxe_named).unwrap();
            assert!(
                r.extra.is_empty(),
                "{kind:?}: a script or URL, no pxelinux options"
            );
        }
        let only_reboot = BootConfig {
            pxelinux: PxelinuxOptions {
                reboot_time: Some(5),
                ..PxelinuxOptions::default()
            },
            ..stock()
        };
        let r = boot_reply(
            &ClientKind::BiosPxe,
            Some(&only_reboot),
            None,
            IP,
            None,
            &ipxe_named,
        )
        .unwrap();
        assert_eq!(
            r.extra,
            vec![(208, PXELINUX_MAGIC.to_vec()), (211, vec![0, 0, 0, 5])]
        );
        let none = boot_reply(
            &ClientKind::BiosPxe,
            Some(&stock()),
            None,
            IP,
            None,
            &ipxe_named,
        )
        .unwrap();
        assert!(
            none.extra.is_empty(),
            "nothing set, nothing sent (not even 208)"
        );
    }
}
