//! The `[network.pxe]` keys beyond the boot files: proxyDHCP and the PXELINUX options 209–211.

use std::time::Duration;

use super::super::checks::{self, Bad};
use super::super::units::parse_duration;
use super::super::wire::{self, S};
use super::Checker;

/// Longest value of option 209 or 210 (one DHCP option; pxelinux itself takes 255).
const MAX_PXELINUX_TEXT: usize = 255;

pub(super) struct PxeOptions {
    pub(super) proxy: bool,
    pub(super) pxelinux_config: Option<String>,
    pub(super) pxelinux_path_prefix: Option<String>,
    pub(super) pxelinux_reboot: Option<Duration>,
}

pub(super) fn pxe_options(c: &mut Checker, p: &wire::Pxe) -> Option<PxeOptions> {
    let before = c.problems.len();
    let mut text = |key: &str, v: &Option<S<String>>, example: &str| -> Option<String> {
        let v = v.as_ref()?;
        c.check(v.span(), pxelinux_text(key, v.get_ref(), example))
            .map(|()| v.get_ref().clone())
    };
    let pxelinux_config = text("pxelinux_config", &p.pxelinux_config, "pxelinux.cfg/lab");
    let pxelinux_path_prefix = text(
        "pxelinux_path_prefix",
        &p.pxelinux_path_prefix,
        "debian-installer/amd64/",
    );
    let pxelinux_reboot = p
        .pxelinux_reboot
        .as_ref()
        .and_then(|r| c.check(r.span(), reboot_time(r.get_ref())));
    if c.problems.len() != before {
        return None;
    }
    Some(PxeOptions {
        proxy: p.proxy.as_ref().is_some_and(|v| *v.get_ref()),
        pxelinux_config,
        pxelinux_path_prefix,
        pxelinux_reboot,
    })
}

/// A proxyDHCP network leaves addresses to the other server: it has no `[network.dhcp]`.
pub(super) fn proxy_without_dhcp(
    c: &mut Checker,
    p: &wire::Pxe,
    dhcp: Option<&S<wire::NetworkDhcp>>,
) {
    let (Some(proxy), Some(_)) = (&p.proxy, dhcp) else {
        return;
    };
    if *proxy.get_ref() {
        c.report(
            proxy.span(),
            checks::bad(
                "proxy = true and a [network.dhcp] section on the same network",
                "with proxy = true another DHCP server hands out the addresses and hostagent only \
                 answers PXE clients with boot information: remove [network.dhcp], or remove \
                 proxy to let hostagent be the network's DHCP server",
            ),
        );
    }
}

fn pxelinux_text(key: &str, text: &str, example: &str) -> Result<(), Bad> {
    let hint = format!(
        "write printable ASCII of at most {MAX_PXELINUX_TEXT} bytes, e.g. {key} = \"{example}\""
    );
    if text.is_empty() {
        return Err(checks::bad(format!("{key} is empty"), hint));
    }
    if text.len() > MAX_PXELINUX_TEXT {
        return Err(checks::bad(
            format!(
                "{key} is {} bytes, more than one DHCP option holds",
                text.len()
            ),
            hint,
        ));
    }
    if let Some(ch) = text.chars().find(|ch| !ch.is_ascii_graphic()) {
        return Err(checks::bad(
            format!("{key} \"{}\" contains {ch:?}", text.escape_debug()),
            hint,
        ));
    }
    Ok(())
}

fn reboot_time(text: &str) -> Result<Duration, Bad> {
    let hint = "write a duration such as \"5m\" or \"300s\" (at least 1s): how long pxelinux waits before rebooting when it cannot boot";
    let d = parse_duration(text).map_err(|why| {
        checks::bad(
            format!("pxelinux_reboot \"{}\": {why}", text.escape_debug()),
            hint,
        )
    })?;
    if d < Duration::from_secs(1) || d.as_secs() > u64::from(u32::MAX) {
        return Err(checks::bad(
            format!("pxelinux_reboot \"{text}\" is out of range"),
            hint,
        ));
    }
    Ok(d)
}
