//! Which boot file or URL a client is handed, and the PXE options that make firmware take it.
//!
//! Rules (see the field notes, read from EDK2, pixiecore, smee and dnsmasq):
//! - iPXE gets the script (an http:// URL when HTTP boot is on, else its TFTP name), never an
//!   iPXE binary: that would chainload forever.
//! - Firmware PXE gets `bios` / `uefi` / `arm64` in BOTH the header `file` and option 67 (many BIOS
//!   ROMs read only the header), `siaddr` = next-server, option 60 `PXEClient` and option 43 with
//!   PXE_DISCOVERY_CONTROL (sub-option 6) = 8: "use the boot file in this offer". EDK2 ranks that
//!   offer highest; `PXEClient` without 43 would make it ask again on UDP 4011, which we do not serve.
//! - UEFI HTTP boot gets option 60 `HTTPClient` and an http://<server_ip>:<port>/<file> URL.
//! - A per-host `boot` (firmware) or `script` (iPXE) wins over the network's default.
//! - A kind with nothing configured gets an address and no boot options at all (a bare
//!   `PXEClient` without a file would only confuse firmware).

use std::net::Ipv4Addr;

use super::classify::{ClientKind, UefiArch};
use crate::config::{BootConfig, StaticHost};

/// Option 43 for PXE clients: sub-option 6 (PXE_DISCOVERY_CONTROL), length 1, value 8
/// (bit 3: use the boot server list off; download the file named in this reply), then END.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

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
}

/// Decide the boot reply. `None` = address only (not a boot client, or nothing configured for it).
pub fn boot_reply(
    kind: &ClientKind,
    boot: Option<&BootConfig>,
    host: Option<&StaticHost>,
    server_ip: Ipv4Addr,
    client_uuid: Option<&[u8]>,
) -> Option<BootReply> {
    let boot = boot?;
    let host_boot = host.and_then(|h| h.boot.as_deref());
    let http = |file: &str| -> Option<String> {
        boot.http_port
            .map(|port| format!("http://{server_ip}:{port}/{}", file.trim_start_matches('/')))
    };
    let (file, vendor_class, vendor_options) = match kind {
        ClientKind::Ipxe => {
            let script = host
                .and_then(|h| h.script.as_deref())
                .or(boot.script.as_deref())?;
            (
                http(script).unwrap_or_else(|| script.to_string()),
                None,
                None,
            )
        }
        ClientKind::UefiHttp { arch } => {
            let file = host_boot.or(match arch {
                Some(18) | Some(19) => boot.arm64.as_deref(),
                _ => boot.uefi.as_deref(),
            })?;
            (http(file)?, Some("HTTPClient"), None)
        }
        ClientKind::UefiPxe(arch) => {
            let default = match arch {
                UefiArch::X64 => boot.uefi.as_deref(),
                UefiArch::Arm64 => boot.arm64.as_deref(),
                // No config key for these (yet): address only unless the host names a file.
                UefiArch::Ia32 | UefiArch::Arm32 => None,
            };
            let file = host_boot.or(default)?;
            (
                file.to_string(),
                Some("PXEClient"),
                Some(PXE_VENDOR_OPTIONS.to_vec()),
            )
        }
        ClientKind::BiosPxe => {
            let file = host_boot.or(boot.bios.as_deref())?;
            (
                file.to_string(),
                Some("PXEClient"),
                Some(PXE_VENDOR_OPTIONS.to_vec()),
            )
        }
        ClientKind::OtherPxe { .. } => {
            let file = host_boot?;
            (
                file.to_string(),
                Some("PXEClient"),
                Some(PXE_VENDOR_OPTIONS.to_vec()),
            )
        }
        ClientKind::Plain => return None,
    };
    Some(BootReply {
        siaddr: server_ip,
        file,
        server_name: server_ip.to_string(),
        vendor_class,
        vendor_options,
        client_uuid: client_uuid.map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mac;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn boot(http_port: Option<u16>) -> BootConfig {
        BootConfig {
            root: "/srv/boot".into(),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: Some("ipxe-arm64.efi".into()),
            script: Some("boot.ipxe".into()),
            http_port,
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

    fn file(kind: ClientKind, b: &BootConfig, h: Option<&StaticHost>) -> Option<String> {
        boot_reply(&kind, Some(b), h, IP, None).map(|r| r.file)
    }

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
        let s = |v: &str| Some(v.to_string());
        let rows: Vec<(ClientKind, &BootConfig, Option<&StaticHost>, Option<String>)> = vec![
            (ClientKind::Ipxe, &tftp, None, s("boot.ipxe")),
            (
                ClientKind::Ipxe,
                &web,
                None,
                s("http://10.77.0.1:8069/boot.ipxe"),
            ),
            (
                ClientKind::Ipxe,
                &web,
                Some(&over),
                s("http://10.77.0.1:8069/host.ipxe"),
            ),
            (ClientKind::Ipxe, &tftp, Some(&over), s("host.ipxe")),
            (ClientKind::Ipxe, &tftp, Some(&plain_host), s("boot.ipxe")),
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
            (ia32, &tftp, None, None),
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
            (http16, &tftp, None, None), // HTTP boot needs the HTTP server
            (ClientKind::OtherPxe { arch: 2 }, &tftp, None, None),
            (
                ClientKind::OtherPxe { arch: 2 },
                &tftp,
                Some(&over),
                s("custom.efi"),
            ),
            (ClientKind::Plain, &tftp, None, None),
            (ClientKind::Plain, &tftp, Some(&over), None),
        ];
        for (kind, b, h, want) in rows {
            assert_eq!(
                file(kind, b, h),
                want,
                "{kind:?} http={:?} host={h:?}",
                b.http_port
            );
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
        };
        for kind in [
            ClientKind::Ipxe,
            ClientKind::BiosPxe,
            ClientKind::UefiPxe(UefiArch::X64),
            ClientKind::UefiPxe(UefiArch::Arm64),
            ClientKind::UefiHttp { arch: Some(16) },
        ] {
            assert_eq!(
                boot_reply(&kind, Some(&empty), None, IP, None),
                None,
                "{kind:?}"
            );
            assert_eq!(
                boot_reply(&kind, None, None, IP, None),
                None,
                "{kind:?} without [pxe]"
            );
        }
    }

    #[test]
    fn pxe_options_per_kind() {
        let b = boot(Some(8069));
        let uuid = [0u8; 17];
        let r = boot_reply(
            &ClientKind::UefiPxe(UefiArch::X64),
            Some(&b),
            None,
            IP,
            Some(&uuid),
        )
        .unwrap();
        assert_eq!(r.siaddr, IP);
        assert_eq!(r.server_name, "10.77.0.1");
        assert_eq!(r.vendor_class, Some("PXEClient"));
        assert_eq!(r.vendor_options.as_deref(), Some(&[6, 1, 8, 255][..]));
        assert_eq!(r.client_uuid.as_deref(), Some(&uuid[..]));

        let r = boot_reply(&ClientKind::BiosPxe, Some(&b), None, IP, None).unwrap();
        assert_eq!(r.vendor_class, Some("PXEClient"));
        assert!(r.vendor_options.is_some());
        assert_eq!(r.client_uuid, None);

        let r = boot_reply(
            &ClientKind::UefiHttp { arch: Some(16) },
            Some(&b),
            None,
            IP,
            None,
        )
        .unwrap();
        assert_eq!(r.vendor_class, Some("HTTPClient"));
        assert_eq!(r.vendor_options, None);

        let r = boot_reply(&ClientKind::Ipxe, Some(&b), None, IP, None).unwrap();
        assert_eq!(r.vendor_class, None);
        assert_eq!(r.vendor_options, None);
        assert!(
            !r.file.ends_with(".efi") && !r.file.ends_with(".kpxe"),
            "iPXE must not get a binary"
        );
    }
}
