//! One [[network]]: its own values, and its [network.dhcp] / [network.pxe] / [network.dns]
//! sections.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use hwaddr::Mac;

use super::super::checks::{self, Bad};
use super::super::model::{DhcpDefaults, Mode, Network, Pxe};
use super::super::wire::{self, S};
use super::Checker;

/// Positions of a network's values, kept for checks across networks.
pub(super) struct Marks {
    pub(super) name: Range<usize>,
    pub(super) bridge: Range<usize>,
    pub(super) address: Option<Range<usize>>,
    pub(super) address6: Option<Range<usize>>,
    /// Where the MAC came from: the `mac` value, or the name when derived.
    pub(super) mac: Range<usize>,
    pub(super) mac_derived: bool,
    pub(super) interfaces: Vec<Range<usize>>,
}

pub(super) fn network(
    c: &mut Checker,
    w: &wire::Network,
    defaults: &DhcpDefaults,
    state_dir: Option<&Path>,
) -> Option<(Network, Marks)> {
    let before = c.problems.len();
    let name = w.name.get_ref().clone();
    c.check(w.name.span(), checks::network_name(&name));
    let mode = c.check(w.mode.span(), checks::mode(w.mode.get_ref()));
    c.check(
        w.bridge.span(),
        checks::interface_name("bridge", w.bridge.get_ref()),
    );

    let address = w
        .address
        .as_ref()
        .and_then(|a| c.check(a.span(), checks::gateway_address(a.get_ref())));
    if let (Some(mode), None) = (mode, &w.address) {
        if mode != Mode::Bridge {
            c.report(
                w.mode.span(),
                checks::bad(
                    format!("mode = \"{}\" needs an address", mode.as_str()),
                    "add the host's gateway address on the bridge, e.g. address = \"192.168.122.1/24\" (only mode = \"bridge\" may go without)",
                ),
            );
        }
    }

    let forward_delay = match &w.forward_delay {
        None => Some(0),
        Some(d) => c.check(
            d.span(),
            u32::try_from(*d.get_ref())
                .ok()
                .filter(|v| *v <= 30)
                .ok_or_else(|| {
                    checks::bad(
                        format!("forward_delay = {} is out of range", d.get_ref()),
                        "write whole seconds from 0 to 30 (libvirt uses 0)",
                    )
                }),
        ),
    };
    let mtu = match &w.mtu {
        None => Some(None),
        Some(m) => c
            .check(
                m.span(),
                u16::try_from(*m.get_ref())
                    .ok()
                    .filter(|v| *v >= 68)
                    .ok_or_else(|| {
                        checks::bad(
                            format!("mtu = {} is out of range", m.get_ref()),
                            "write a value from 68 to 65535, e.g. 1500 (or leave mtu out)",
                        )
                    }),
            )
            .map(Some),
    };
    let mac = match &w.mac {
        None => Some(Mac::derived(&name)),
        Some(m) => c.check(m.span(), checks::mac(m.get_ref())),
    };

    let mut interfaces = Vec::new();
    let mut interface_spans = Vec::new();
    if let Some(list) = &w.interfaces {
        if mode.is_some_and(|m| m != Mode::Bridge) {
            c.report(
                list.span(),
                checks::bad(
                    "interfaces is only allowed with mode = \"bridge\"",
                    "remove interfaces, or set mode = \"bridge\" to put host ports on this bridge",
                ),
            );
        }
        let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
        for i in list.get_ref() {
            let n = i.get_ref().as_str();
            if c.check(i.span(), checks::interface_name("interface", n))
                .is_none()
            {
                continue;
            }
            if n == w.bridge.get_ref() {
                c.report(
                    i.span(),
                    checks::bad(
                        format!("interface \"{n}\" is this network's bridge"),
                        "list host ports (e.g. \"eth1\"), not the bridge itself",
                    ),
                );
            } else if let Some(first) = seen.get(n) {
                let line = c.line_of(first);
                c.report(
                    i.span(),
                    checks::bad(
                        format!("interface \"{n}\" is listed twice"),
                        format!("remove this entry (already listed on line {line})"),
                    ),
                );
            } else {
                seen.insert(n, i.span());
                interfaces.push(n.to_string());
                interface_spans.push(i.span());
            }
        }
    }

    let dhcp = match &w.dhcp {
        None => None,
        Some(d) => {
            if w.address.is_none() {
                c.report(d.span(), needs_address("[network.dhcp]"));
            }
            // Without a usable address only the values themselves can be checked; do that
            // anyway so the user sees every problem in one go.
            super::dhcp::dhcp(c, d.get_ref(), address, defaults)
        }
    };
    let pxe = match &w.pxe {
        None => None,
        Some(p) => {
            if w.address.is_none() {
                c.report(p.span(), needs_address("[network.pxe]"));
            }
            super::pxe_options::proxy_without_dhcp(c, p.get_ref(), w.dhcp.as_ref());
            pxe(c, p.get_ref(), state_dir)
        }
    };
    if w.pxe.is_none() {
        // Per-host boot overrides name files under the pxe root; without one they mean nothing.
        for h in w.dhcp.iter().flat_map(|d| &d.get_ref().host) {
            for f in [&h.get_ref().boot, &h.get_ref().script]
                .into_iter()
                .flatten()
            {
                c.report(
                    f.span(),
                    checks::bad("a per-host boot file needs a [network.pxe] section on this network", "add [network.pxe] with root = \"/var/lib/hostagent/boot\", or remove this key"),
                );
            }
        }
    }

    let ipv6 = super::ipv6::ipv6(c, w, mode);
    let dns = super::dns::dns(
        c,
        w.dns.as_ref(),
        &super::dns::Around {
            name: &w.name,
            mode,
            address,
            has_address: w.address.is_some(),
            dhcp: dhcp.as_ref(),
            has_dhcp: w.dhcp.is_some(),
        },
    );

    if c.problems.len() != before {
        return None;
    }
    let marks = Marks {
        name: w.name.span(),
        bridge: w.bridge.span(),
        address: w.address.as_ref().map(|a| a.span()),
        address6: super::ipv6::span(w),
        mac: w.mac.as_ref().map_or(w.name.span(), |m| m.span()),
        mac_derived: w.mac.is_none(),
        interfaces: interface_spans,
    };
    let net = Network {
        name,
        mode: mode?,
        bridge: w.bridge.get_ref().clone(),
        address,
        stp: w.stp.unwrap_or(true),
        forward_delay: forward_delay?,
        mac: mac?,
        mtu: mtu?,
        interfaces,
        dhcp,
        pxe,
        dns,
        // Filled in by `forward::forwards` once the guests (whose addresses they may name) are known.
        forwards: Vec::new(),
        ipv6,
    };
    Some((net, marks))
}

fn needs_address(section: &str) -> Bad {
    checks::bad(
        format!("{section} needs the network to have an address"),
        "add address = \"10.0.0.1/24\" (the host's address on the bridge) to this [[network]], or remove the section",
    )
}

fn pxe(c: &mut Checker, p: &wire::Pxe, state_dir: Option<&Path>) -> Option<Pxe> {
    let before = c.problems.len();
    let root = c.check(
        p.root.span(),
        checks::absolute_dir("root", p.root.get_ref(), "/var/lib/hostagent/boot")
            .and_then(|root| checks::served_root(root, state_dir)),
    );
    let mut file = |key: &str, f: &Option<S<String>>| -> Option<String> {
        let f = f.as_ref()?;
        c.check(f.span(), checks::boot_file(key, f.get_ref()))
            .map(|()| f.get_ref().clone())
    };
    let bios = file("bios", &p.bios);
    let uefi = file("uefi", &p.uefi);
    let arm64 = file("arm64", &p.arm64);
    let script = file("script", &p.script);
    let http_port = p.http_port.as_ref().and_then(|port| {
        let result = u16::try_from(*port.get_ref()).ok().filter(|v| *v != 0).ok_or_else(|| {
            checks::bad(format!("http_port = {} is not a usable TCP port", port.get_ref()), "write a port from 1 to 65535, e.g. 8069, or leave http_port out to serve TFTP only")
        });
        c.check(port.span(), result)
    });
    let extra = super::pxe_options::pxe_options(c, p);
    if c.problems.len() != before {
        return None;
    }
    let extra = extra?;
    Some(Pxe {
        root: root?,
        bios,
        uefi,
        arm64,
        script,
        http_port,
        proxy: extra.proxy,
        pxelinux_config: extra.pxelinux_config,
        pxelinux_path_prefix: extra.pxelinux_path_prefix,
        pxelinux_reboot: extra.pxelinux_reboot,
    })
}
