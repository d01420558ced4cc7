//! What each network's guests get for DNS, said once for `check` (one line per network) and
//! `plan` (its warnings): the resolvers DHCP hands out (option 6) and where the network's own
//! server forwards. The point is the case that stops an unattended install: a network that
//! hands out no resolver at all (DNS off, and a host whose resolv.conf names only 127.0.0.53).

use std::path::Path;

use serde::Serialize;

use crate::config::{describe_upstreams, GuestResolvers, Mode, Model, Network};

/// One network's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub network: String,
    /// False: something is missing that guests will notice.
    pub ok: bool,
    pub message: String,
    /// What to do about it (empty when ok).
    pub hint: String,
}

/// A finding per network that runs DHCP or a DNS server, in config order. Reads ROOT's
/// resolv.conf files (nothing is changed).
pub fn findings(model: &Model, root: &Path) -> Vec<Finding> {
    let services = model.dns_services(root);
    let mut out = Vec::new();
    for n in &model.networks {
        let service = services.iter().find(|s| s.config.network == n.name);
        let server = service.map(|s| {
            let gw = s.config.listen.first().map(|a| a.ip().to_string());
            format!(
                "DNS server on {} for domain {} {}",
                gw.unwrap_or_default(),
                s.config.zone.domain,
                describe_upstreams(&s.config.upstreams)
            )
        });
        let finding = |ok: bool, message: String, hint: &str| Finding {
            network: n.name.clone(),
            ok,
            message,
            hint: hint.to_string(),
        };
        if let Some(problem) = service.and_then(|s| s.upstream_problem.as_ref()) {
            out.push(finding(
                false,
                format!("its DNS server answers only its own names: {problem}"),
                "set forwarders = [\"IP\", ...] under [network.dns], or give the host a resolv.conf with a reachable nameserver",
            ));
            continue;
        }
        let Some(resolvers) = model.guest_resolvers(n, root) else {
            if let Some(server) = server {
                out.push(finding(true, server, ""));
            }
            continue;
        };
        out.push(match (&resolvers, server) {
            (GuestResolvers::Host(list), _) if list.is_empty() => finding(
                false,
                format!(
                    "DHCP hands out no DNS server: the network's DNS server is off and {} names no resolver guests can reach (loopback stubs such as 127.0.0.53 are not)",
                    root.join("etc/resolv.conf").display()
                ),
                &enable_hint(n),
            ),
            (GuestResolvers::Configured(list), _) if list.is_empty() => finding(
                false,
                "DHCP hands out no DNS server: dns = [] is written under [network.dhcp] or [dhcp]".into(),
                "list a resolver in dns, or remove dns = [] to hand out the network's own DNS server",
            ),
            (GuestResolvers::Configured(list), Some(server))
                if !list.iter().any(|ip| Some(*ip) == n.gateway()) =>
            {
                finding(
                    false,
                    format!(
                        "DHCP hands out dns = [{}], not the network's own {server}: guests will not resolve lease, host or guest names",
                        join(list)
                    ),
                    "add the gateway address to dns under [network.dhcp] (or [dhcp]), or remove dns there to hand out the gateway alone",
                )
            }
            (GuestResolvers::Gateway(gw), Some(server)) => {
                finding(true, format!("guests are told {gw}: {server}"), "")
            }
            (other, server) => finding(
                true,
                format!(
                    "guests are told {}{}",
                    join(&other.addrs()),
                    server.map(|s| format!("; {s}")).unwrap_or_default()
                ),
                "",
            ),
        });
    }
    out
}

fn enable_hint(n: &Network) -> String {
    if n.mode == Mode::Bridge {
        "set enable = true under [network.dns] to run the network's DNS server, or dns = [\"IP\"] under [network.dhcp]".into()
    } else {
        "remove enable = false from [network.dns] to run the network's DNS server, or set dns = [\"IP\"] under [network.dhcp]".into()
    }
}

fn join(list: &[std::net::Ipv4Addr]) -> String {
    list.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = "[[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"br-lab\"\naddress = \"10.77.0.1/24\"\n[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n";

    fn findings_for(extra: &str, resolv: Option<&str>) -> Vec<Finding> {
        let root = tempfile::tempdir().expect("tempdir");
        if let Some(text) = resolv {
            std::fs::create_dir_all(root.path().join("etc")).expect("etc");
            std::fs::write(root.path().join("etc/resolv.conf"), text).expect("resolv.conf");
        }
        let model =
            crate::config::parse(&format!("{NET}{extra}"), Path::new("t.toml")).expect("config");
        findings(&model, root.path())
    }

    fn one(extra: &str, resolv: Option<&str>) -> Finding {
        let mut f = findings_for(extra, resolv);
        assert_eq!(f.len(), 1, "{f:?}");
        f.remove(0)
    }

    #[test]
    fn each_way_of_ending_up_without_a_resolver_is_a_warning_with_a_hint() {
        let stub = Some("nameserver 127.0.0.53\n");
        let off = "[network.dns]\nenable = false\n";
        let f = one(off, stub);
        assert!(
            !f.ok && f.message.contains("hands out no DNS server"),
            "{f:?}"
        );
        assert!(f.hint.contains("enable = false"), "{f:?}");
        let f = one("dns = []\n", stub);
        assert!(!f.ok && f.message.contains("dns = []"), "{f:?}");
        let f = one("dns = [\"192.0.2.53\"]\n", stub);
        assert!(
            !f.ok && f.message.contains("not the network's own"),
            "{f:?}"
        );
        let f = one("", None);
        assert!(!f.ok && f.message.contains("only its own names"), "{f:?}");
        assert!(f.hint.contains("forwarders"), "{f:?}");
    }

    #[test]
    fn what_guests_are_told_is_said_when_all_is_well() {
        let f = one("", Some("nameserver 192.0.2.1\n"));
        assert!(f.ok, "{f:?}");
        assert!(f.message.starts_with("guests are told 10.77.0.1: DNS server on 10.77.0.1 for domain lab forwards to 192.0.2.1"), "{f:?}");
        let f = one(
            "[network.dns]\nenable = false\n",
            Some("nameserver 192.0.2.1\n"),
        );
        assert!(f.ok && f.message == "guests are told 192.0.2.1", "{f:?}");
        let f = one(
            "dns = [\"10.77.0.1\", \"192.0.2.9\"]\n",
            Some("nameserver 192.0.2.1\n"),
        );
        assert!(
            f.ok && f
                .message
                .starts_with("guests are told 10.77.0.1, 192.0.2.9; DNS server"),
            "{f:?}"
        );
    }
}
