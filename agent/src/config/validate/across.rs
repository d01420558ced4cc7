//! Rules between networks: unique names, bridges, MACs and host ports; subnets that do not overlap.

use std::collections::HashMap;
use std::ops::Range;

use hwaddr::Mac;

use super::super::checks;
use super::super::model::Network;
use super::network::Marks;
use super::Checker;

pub(super) fn across_networks(c: &mut Checker, nets: &[Network], marks: &[Marks]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bridges: HashMap<&str, usize> = HashMap::new();
    let mut macs: HashMap<Mac, usize> = HashMap::new();
    let mut ports: HashMap<&str, Range<usize>> = HashMap::new();
    for (i, (n, m)) in nets.iter().zip(marks).enumerate() {
        let name_taken = names.contains_key(n.name.as_str());
        if let Some(&j) = names.get(n.name.as_str()) {
            let line = c.line_of(&marks[j].name);
            c.report(
                m.name.clone(),
                checks::bad(
                    format!("network name \"{}\" is used twice", n.name),
                    format!("give each [[network]] its own name (the other is on line {line})"),
                ),
            );
        } else {
            names.insert(&n.name, i);
        }
        if let Some(&j) = bridges.get(n.bridge.as_str()) {
            let line = c.line_of(&marks[j].bridge);
            c.report(
                m.bridge.clone(),
                checks::bad(
                    format!("bridge \"{}\" is used by two networks", n.bridge),
                    format!("give each network its own bridge (the other is on line {line})"),
                ),
            );
        } else {
            bridges.insert(&n.bridge, i);
        }
        // Two networks of the same name derive the same MAC: that is one mistake, reported once.
        if let Some(&j) = macs.get(&n.mac).filter(|_| !(name_taken && m.mac_derived)) {
            let line = c.line_of(&marks[j].mac);
            let what = if m.mac_derived {
                "the MAC derived from this network's name"
            } else {
                "this MAC"
            };
            c.report(
                m.mac.clone(),
                checks::bad(
                    format!("{what} ({}) is also the bridge MAC of network \"{}\"", n.mac, nets[j].name),
                    format!("set mac = \"52:54:00:..\" explicitly on one of them (the other is on line {line})"),
                ),
            );
        } else {
            macs.insert(n.mac, i);
        }
        for (j, other) in nets.iter().enumerate().take(i) {
            if let (Some(a), Some(b), Some(span)) = (n.subnet(), other.subnet(), &m.address) {
                if a.contains(&b.network()) || b.contains(&a.network()) {
                    let line = c.line_of(marks[j].address.as_ref().unwrap_or(&marks[j].name));
                    c.report(
                        span.clone(),
                        checks::bad(
                            format!("subnet {a} overlaps {b} of network \"{}\"", other.name),
                            format!(
                                "give each network a separate subnet (the other is on line {line})"
                            ),
                        ),
                    );
                }
            }
        }
        for (port, span) in n.interfaces.iter().zip(&m.interfaces) {
            if let Some(first) = ports.get(port.as_str()) {
                let line = c.line_of(first);
                c.report(span.clone(), checks::bad(format!("interface \"{port}\" is listed in two networks"), format!("a host port can join only one bridge (it is also listed on line {line})")));
            } else if let Some(j) = nets.iter().position(|o| o.bridge == *port) {
                // Own bridge was refused per network already, so this is another network's.
                let line = c.line_of(&marks[j].bridge);
                c.report(
                    span.clone(),
                    checks::bad(
                        format!(
                            "interface \"{port}\" is the bridge of network \"{}\"",
                            nets[j].name
                        ),
                        format!("list host ports only, not another network's bridge (line {line})"),
                    ),
                );
            } else {
                ports.insert(port, span.clone());
            }
        }
    }
}
