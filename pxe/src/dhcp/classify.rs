//! What kind of client is asking, from the raw option values it sent.
//!
//! Raw values, not dhcproto's enums: its option-93 enum predates the RFC 4578 errata (7 = "BC",
//! everything ≥ 10 is Unknown) and it does not model option 175 at all.

use serde::Serialize;

use super::wire::ClientMessage;

/// The firmware family of a UEFI PXE client (option 93).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UefiArch {
    /// 7 (what OVMF sends) or 9 (some firmware).
    X64,
    /// 11.
    Arm64,
    /// 6.
    Ia32,
    /// 10.
    Arm32,
}

/// Who is asking. Decides which boot file (if any) the reply carries (see `policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClientKind {
    /// iPXE (a NIC ROM or a chainloaded binary): gets the script, or the firmware file of its
    /// architecture when that is not itself iPXE, never another iPXE binary. `arch` is option 93
    /// (or the `Arch:` field of option 60): the firmware iPXE runs on.
    Ipxe { arch: Option<u16> },
    /// UEFI HTTP boot; `arch` is option 93 (15/16/18/19) or the `Arch:` field of option 60.
    UefiHttp { arch: Option<u16> },
    /// UEFI firmware PXE (EDK2 and friends).
    UefiPxe(UefiArch),
    /// Legacy BIOS PXE ROM.
    BiosPxe,
    /// A PXE client of an architecture we have no file kind for (e.g. Itanium): address only.
    OtherPxe { arch: u16 },
    /// No PXE signs at all (an OS's DHCP client): address only.
    Plain,
}

impl ClientKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientKind::Ipxe { .. } => "ipxe",
            ClientKind::UefiHttp { .. } => "uefi-http",
            ClientKind::UefiPxe(UefiArch::X64) => "uefi-x64",
            ClientKind::UefiPxe(UefiArch::Arm64) => "uefi-arm64",
            ClientKind::UefiPxe(UefiArch::Ia32) => "uefi-ia32",
            ClientKind::UefiPxe(UefiArch::Arm32) => "uefi-arm32",
            ClientKind::BiosPxe => "bios",
            ClientKind::OtherPxe { .. } => "pxe-other",
            ClientKind::Plain => "plain",
        }
    }

    /// Firmware PXE kinds (the ones that want option 60 `PXEClient` back).
    pub fn is_firmware_pxe(&self) -> bool {
        matches!(self, ClientKind::UefiPxe(_) | ClientKind::BiosPxe)
    }

    /// The firmware PXE kind of an option-93 architecture (RFC 4578 and its IANA registry).
    pub fn of_pxe_arch(arch: u16) -> ClientKind {
        match arch {
            0 => ClientKind::BiosPxe,
            6 => ClientKind::UefiPxe(UefiArch::Ia32),
            7 | 9 => ClientKind::UefiPxe(UefiArch::X64),
            10 => ClientKind::UefiPxe(UefiArch::Arm32),
            11 => ClientKind::UefiPxe(UefiArch::Arm64),
            other => ClientKind::OtherPxe { arch: other },
        }
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 4578 (+ errata / IANA registry) architecture types that mean "UEFI HTTP boot".
const HTTP_ARCHES: [u16; 4] = [15, 16, 18, 19];

/// Classify a decoded client message.
pub fn classify(msg: &ClientMessage) -> ClientKind {
    classify_raw(
        msg.ipxe_encap,
        msg.user_class.as_deref(),
        msg.vendor_class.as_deref(),
        &msg.client_arch,
    )
}

/// Classify from the raw option values: 175 present, 77, 60 and the u16s of 93.
pub fn classify_raw(
    ipxe_encap: bool,
    user_class: Option<&[u8]>,
    vendor_class: Option<&[u8]>,
    arches: &[u16],
) -> ClientKind {
    let vendor = vendor_class.unwrap_or_default();
    let arch = arches.first().copied();
    // iPXE first: it also sends 60 "PXEClient:..." and 93 like the firmware it replaces.
    if ipxe_encap || user_class.is_some_and(is_ipxe_user_class) {
        return ClientKind::Ipxe {
            arch: arch.or_else(|| vendor_arch(vendor)),
        };
    }
    if vendor.starts_with(b"HTTPClient") || arch.is_some_and(|a| HTTP_ARCHES.contains(&a)) {
        return ClientKind::UefiHttp {
            arch: arch.or_else(|| vendor_arch(vendor)),
        };
    }
    let pxe_vendor = vendor.starts_with(b"PXEClient");
    // Option 93 alone is enough: it is only defined for PXE clients.
    let arch = match arch {
        Some(a) => a,
        None if pxe_vendor => vendor_arch(vendor).unwrap_or(0),
        None => return ClientKind::Plain,
    };
    ClientKind::of_pxe_arch(arch)
}

/// iPXE sends user class "iPXE" as plain bytes; RFC 3004 clients send length-prefixed entries.
fn is_ipxe_user_class(raw: &[u8]) -> bool {
    if raw == b"iPXE" {
        return true;
    }
    let mut rest = raw;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// The `Arch:NNNNN` field of a PXE/HTTP vendor class (`PXEClient:Arch:00007:UNDI:003000`).
fn vendor_arch(vendor: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(vendor).ok()?;
    let mut parts = s.split(':');
    while let Some(p) = parts.next() {
        if p == "Arch" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod testpackets;

#[cfg(test)]
mod tests {
    use super::testpackets as pk;
    use super::*;
    use crate::dhcp::wire::{decode, MessageType};

    fn kind_of(hex: &str) -> ClientKind {
        let msg = decode(&pk::bytes(hex)).expect("real packet decodes");
        assert_eq!(msg.msg_type, MessageType::Discover);
        classify(&msg)
    }

    #[test]
    fn real_packets() {
        assert_eq!(
            kind_of(pk::OVMF_DISCOVER),
            ClientKind::UefiPxe(UefiArch::X64)
        );
        assert_eq!(
            kind_of(pk::IPXE_ROM_DISCOVER),
            ClientKind::Ipxe { arch: Some(0) }
        );
        assert_eq!(kind_of(pk::UDHCPC_DISCOVER), ClientKind::Plain);
        assert_eq!(kind_of(pk::DHCLIENT_DISCOVER), ClientKind::Plain);
        assert_eq!(
            kind_of(pk::HTTP_DISCOVER),
            ClientKind::UefiHttp { arch: Some(16) }
        );
    }

    #[test]
    fn ovmf_packet_fields() {
        let msg = decode(&pk::bytes(pk::OVMF_DISCOVER)).unwrap();
        assert_eq!(msg.client_arch, vec![7]);
        assert!(msg
            .vendor_class
            .as_deref()
            .unwrap()
            .starts_with(b"PXEClient:Arch:00007:UNDI:003000"));
        assert_eq!(msg.client_uuid.as_ref().map(Vec::len), Some(17));
        assert!(!msg.ipxe_encap);
    }

    #[test]
    fn raw_table() {
        let t =
            |encap, uc: Option<&[u8]>, vc: Option<&[u8]>, a: &[u16]| classify_raw(encap, uc, vc, a);
        assert_eq!(
            t(true, None, Some(b"PXEClient:Arch:00000"), &[0]),
            ClientKind::Ipxe { arch: Some(0) }
        );
        assert_eq!(
            t(false, Some(b"iPXE"), None, &[7]),
            ClientKind::Ipxe { arch: Some(7) }
        );
        assert_eq!(
            t(false, Some(b"\x04iPXE"), None, &[]),
            ClientKind::Ipxe { arch: None }
        );
        assert_eq!(
            t(true, None, Some(b"PXEClient:Arch:00011:UNDI:003010"), &[]),
            ClientKind::Ipxe { arch: Some(11) },
            "arch from option 60 when 93 is missing"
        );
        assert_eq!(t(false, Some(b"\x05other"), None, &[]), ClientKind::Plain);
        assert_eq!(t(false, Some(b"\x09"), None, &[]), ClientKind::Plain);
        assert_eq!(
            t(false, None, Some(b"HTTPClient:Arch:00016:UNDI:003001"), &[]),
            ClientKind::UefiHttp { arch: Some(16) }
        );
        assert_eq!(
            t(false, None, None, &[19]),
            ClientKind::UefiHttp { arch: Some(19) }
        );
        assert_eq!(
            t(false, None, Some(b"HTTPClient"), &[]),
            ClientKind::UefiHttp { arch: None }
        );
        assert_eq!(
            t(false, None, Some(b"PXEClient:Arch:00007:UNDI:003000"), &[7]),
            ClientKind::UefiPxe(UefiArch::X64)
        );
        assert_eq!(
            t(false, None, None, &[9]),
            ClientKind::UefiPxe(UefiArch::X64)
        );
        assert_eq!(
            t(false, None, None, &[11]),
            ClientKind::UefiPxe(UefiArch::Arm64)
        );
        assert_eq!(
            t(false, None, None, &[6]),
            ClientKind::UefiPxe(UefiArch::Ia32)
        );
        assert_eq!(
            t(false, None, None, &[10]),
            ClientKind::UefiPxe(UefiArch::Arm32)
        );
        assert_eq!(
            t(false, None, Some(b"PXEClient:Arch:00000:UNDI:002001"), &[0]),
            ClientKind::BiosPxe
        );
        assert_eq!(t(false, None, Some(b"PXEClient"), &[]), ClientKind::BiosPxe);
        assert_eq!(
            t(false, None, Some(b"PXEClient:Arch:00007"), &[]),
            ClientKind::UefiPxe(UefiArch::X64)
        );
        assert_eq!(t(false, None, None, &[2]), ClientKind::OtherPxe { arch: 2 });
        assert_eq!(
            t(false, None, Some(b"udhcp 1.35.0"), &[]),
            ClientKind::Plain
        );
        assert_eq!(t(false, None, None, &[]), ClientKind::Plain);
    }
}
