//! PXE over IPv6 (RFC 5970): who is asking, and the boot file URL (option 59) it gets.
//!
//! The client kinds and the chain rule are the DHCPv4 ones (`dhcp::classify`, `dhcp::policy`),
//! read from the v6 options that carry the same facts: Client Architecture Type (61, the
//! values of v4's option 93: 7 x64 UEFI PXE, 16 x64 UEFI HTTP, 11 arm64 ...), Vendor Class
//! (16, whose data EDK2 fills with `PXEClient:Arch:...` or `HTTPClient:Arch:...`) and User
//! Class (15, `iPXE`). What differs is the answer: DHCPv6 has no `siaddr`/`file`, only a URL,
//! `tftp://[gateway]/FILE` for PXE and `http://[gateway]:PORT/FILE` for HTTP boot and iPXE
//! scripts when `http_port` is set.

use std::net::{Ipv4Addr, Ipv6Addr};

use dhcproto::v6::{DhcpOption, DhcpOptions, OptionCode};

use crate::config::BootConfig;
use crate::dhcp::classify::{classify_raw, ClientKind};
use crate::dhcp::ipxe_build::BootFiles;
use crate::dhcp::policy::{boot_reply, NoBoot};

/// Option 59.
pub const BOOTFILE_URL: u16 = 59;
/// The IANA enterprise number EDK2 puts in its Vendor Class (343, Intel).
pub const PXE_ENTERPRISE: u32 = 343;

/// The client's kind from its options (module docs).
pub fn classify(opts: &DhcpOptions) -> ClientKind {
    let arches: Vec<u16> = match opts.get(OptionCode::ClientArchType) {
        Some(DhcpOption::ClientArchType(a)) => a.iter().map(|a| a.0).collect(),
        _ => Vec::new(),
    };
    let vendor = match opts.get(OptionCode::VendorClass) {
        Some(DhcpOption::VendorClass(v)) => v.data.first().cloned(),
        _ => None,
    };
    let user = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => u.data.iter().find(|d| d.as_slice() == b"iPXE").cloned(),
        _ => None,
    };
    classify_raw(false, user.as_deref(), vendor.as_deref(), &arches)
}

/// What a boot client's Reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot6 {
    /// Option 59.
    pub url: String,
    /// Vendor Class (16) to send back: `PXEClient` or `HTTPClient`, as EDK2 expects.
    pub vendor_class: Option<&'static str>,
}

/// The boot file URL for `kind` on a network whose gateway is `server` (the chain rule).
pub fn boot_url(
    kind: &ClientKind,
    boot: Option<&BootConfig>,
    server: Ipv6Addr,
    files: &dyn BootFiles,
) -> Result<Boot6, NoBoot> {
    // The policy writes HTTP URLs for the address it is given; with the unspecified address
    // they are recognised by their prefix and re-addressed to the IPv6 gateway.
    let reply = boot_reply(kind, boot, None, Ipv4Addr::UNSPECIFIED, None, files)?;
    let http_prefix = boot
        .and_then(|b| b.http_port)
        .map(|port| (format!("http://{}:{port}/", Ipv4Addr::UNSPECIFIED), port));
    let url = match http_prefix {
        Some((prefix, port)) if reply.file.starts_with(&prefix) => {
            format!("http://[{server}]:{port}/{}", &reply.file[prefix.len()..])
        }
        _ => format!("tftp://[{server}]/{}", reply.file.trim_start_matches('/')),
    };
    let vendor_class = match kind {
        ClientKind::UefiHttp { .. } => Some("HTTPClient"),
        k if k.is_firmware_pxe() => Some("PXEClient"),
        _ => None,
    };
    Ok(Boot6 { url, vendor_class })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PxelinuxOptions;
    use dhcproto::v6::{Architecture, UserClass, VendorClass};

    fn boot(http: Option<u16>) -> BootConfig {
        BootConfig {
            root: "/srv/boot".into(),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: Some("arm64/ipxe.efi".into()),
            script: Some("boot.ipxe".into()),
            http_port: http,
            pxelinux: PxelinuxOptions::default(),
        }
    }

    fn opts(list: Vec<DhcpOption>) -> DhcpOptions {
        list.into_iter().collect()
    }

    #[test]
    fn arch_types_and_vendor_classes_classify_as_in_v4() {
        let arch = |a| opts(vec![DhcpOption::ClientArchType(vec![Architecture(a)])]);
        assert_eq!(classify(&arch(7)).as_str(), "uefi-x64");
        assert_eq!(classify(&arch(11)).as_str(), "uefi-arm64");
        assert_eq!(classify(&arch(16)).as_str(), "uefi-http");
        let vendor = |s: &str| {
            opts(vec![DhcpOption::VendorClass(VendorClass {
                num: PXE_ENTERPRISE,
                data: vec![s.as_bytes().to_vec()],
            })])
        };
        assert_eq!(
            classify(&vendor("HTTPClient:Arch:00016")).as_str(),
            "uefi-http"
        );
        assert_eq!(
            classify(&vendor("PXEClient:Arch:00007:UNDI:003016")).as_str(),
            "uefi-x64"
        );
        let ipxe = opts(vec![
            DhcpOption::ClientArchType(vec![Architecture(7)]),
            DhcpOption::UserClass(UserClass {
                data: vec![b"iPXE".to_vec()],
            }),
        ]);
        assert_eq!(classify(&ipxe).as_str(), "ipxe");
        assert_eq!(classify(&opts(vec![])).as_str(), "plain");
    }

    #[test]
    fn urls_name_the_v6_gateway_in_brackets() {
        let gw: Ipv6Addr = "fd00:122::1".parse().unwrap();
        let no_ipxe = |_: &str| false;
        let uefi = classify(&opts(vec![DhcpOption::ClientArchType(vec![Architecture(
            7,
        )])]));
        let b = boot_url(&uefi, Some(&boot(None)), gw, &no_ipxe).unwrap();
        assert_eq!(b.url, "tftp://[fd00:122::1]/ipxe.efi");
        assert_eq!(b.vendor_class, Some("PXEClient"));
        let http = classify(&opts(vec![DhcpOption::ClientArchType(vec![Architecture(
            16,
        )])]));
        let b = boot_url(&http, Some(&boot(Some(8069))), gw, &no_ipxe).unwrap();
        assert_eq!(b.url, "http://[fd00:122::1]:8069/ipxe.efi");
        assert_eq!(b.vendor_class, Some("HTTPClient"));
        assert_eq!(
            boot_url(&http, Some(&boot(None)), gw, &no_ipxe),
            Err(NoBoot::NoHttp)
        );
        let ipxe = ClientKind::Ipxe { arch: Some(7) };
        let b = boot_url(&ipxe, Some(&boot(Some(8069))), gw, &no_ipxe).unwrap();
        assert_eq!(b.url, "http://[fd00:122::1]:8069/boot.ipxe");
        assert_eq!(b.vendor_class, None);
        assert_eq!(
            boot_url(&ClientKind::Plain, Some(&boot(None)), gw, &no_ipxe),
            Err(NoBoot::NotABootClient)
        );
    }
}
