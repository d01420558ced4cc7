//! DHCPv6 from real clients (ISC `dhclient -6`, dhcpcd 9 `-6`) against the real binary in
//! fresh namespaces: an address in the range with the DNS option and search list, renew,
//! release, a static host by DUID, rapid commit, Information-Request, the lease's name answering
//! AAAA (and PTR) in the network's DNS until it is released, and leases surviving `kill -9`.
//!
//! ```text
//!  guest ns                         host ns (runs hostagent)
//!  eth0 fe80::… ──veth── gN ∈ br-lab 10.77.0.1/24, fd00:77::1/64 (RA with M and O; DHCPv6 on 547)
//! ```

use std::collections::HashSet;
use std::net::Ipv6Addr;

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Dhcp6, Dns, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::ipv6::wait_link_local;
use hostagent_tests::Scratch;
use testkit::dhcp_client::{Dhclient, Dhcpcd};
use testkit::dns::dig;
use testkit::{wait_for, Netns};

const GATEWAY6: &str = "fd00:77::1";
const FIXED_MAC: &str = "52:54:00:77:00:42";
const FIXED_IP: &str = "fd00:77::42";

struct Lab {
    scratch: Scratch,
    config: String,
    host: Netns,
}

impl Lab {
    fn new(dhcp6: Dhcp6) -> Lab {
        let scratch = Scratch::new();
        let net = Network::nat("lab", "br-lab", "10.77.0.1/24")
            .dhcp(Dhcp::new("10.77.0.100-10.77.0.199"))
            .dns(Dns::new())
            .address6("fd00:77::1/64")
            .dhcp6_with(dhcp6);
        let config = scratch.config(Config::new("/var/lib/hostagent").network(net));
        Lab {
            scratch,
            config,
            host: Netns::new("d6h"),
        }
    }

    fn cli(&self) -> Cli<'_> {
        Cli::new(&self.host, &self.scratch, &self.config)
    }

    fn daemon(&self) -> Daemon {
        let mut d = Daemon::start(&self.host, &self.scratch, &self.config, &[]);
        d.wait_listening(&self.host, "br-lab", &[547, 53], &[53]);
        d
    }

    /// A guest on the bridge with its link-local address usable (DHCPv6 is sent from it).
    fn guest(&self, port: &str, mac: Option<&str>) -> Netns {
        let guest = self.host.plug("br-lab", port);
        if let Some(mac) = mac {
            guest.ok(&["ip", "link", "set", "eth0", "down"]);
            guest.ok(&["ip", "link", "set", "eth0", "address", mac]);
            guest.ok(&["ip", "link", "set", "eth0", "up"]);
        }
        wait_link_local(&guest, "eth0", 15).expect("the guest's link-local address");
        guest
    }

    /// The network's DHCPv6 leases: (ip, hostname, duid).
    fn leases6(&self) -> Vec<(String, String, String)> {
        let v = hostagent_tests::cli::json(&self.cli().run(&["leases", "--json"]));
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["leases6"].as_array().cloned().unwrap_or_default())
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (s("ip"), s("hostname"), s("duid"))
            })
            .collect()
    }
}

fn in_range(ip: &str) -> bool {
    let Ok(ip) = ip.parse::<Ipv6Addr>() else {
        return false;
    };
    let (a, b): (Ipv6Addr, Ipv6Addr) = (
        "fd00:77::100".parse().unwrap(),
        "fd00:77::1ff".parse().unwrap(),
    );
    (u128::from(a)..=u128::from(b)).contains(&u128::from(ip))
}

fn aaaa(guest: &Netns, name: &str) -> Vec<String> {
    dig(Some(guest), &[&format!("@{GATEWAY6}"), name, "AAAA"]).data()
}

#[test]
fn dhclient_and_dhcpcd_get_leases_with_dns_renew_release_static_duid_rapid_commit_info_and_aaaa() {
    let lab = Lab::new(Dhcp6 {
        range: Some("fd00:77::100-fd00:77::1ff".into()),
        rapid_commit: Some(true),
        hosts: vec![(
            "duid",
            // DUID-LL (type 3, Ethernet) of FIXED_MAC: what `dhclient -6 -D LL` sends.
            format!("00:03:00:01:{FIXED_MAC}"),
            FIXED_IP.into(),
            Some("fixed".into()),
        )],
        ..Dhcp6::default()
    });
    let d = lab.daemon();
    let dir = lab.scratch.root();

    // dhclient -6: an address in the range, DNS = the gateway, search list = the domain.
    let g1 = lab.guest("g1", None);
    let web = Dhclient::v6(&g1, dir, "web", "send fqdn.fqdn \"web6\";\n");
    let out = web.run(&["-1"]);
    let bound = web.wait_event("BOUND6", 5).unwrap_or_else(|| {
        panic!(
            "dhclient -6 bound nothing: {}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            web.record_text(),
            d.log_text()
        )
    });
    let ip = bound["ip6"].clone();
    assert!(in_range(&ip), "{ip} from {bound:?}");
    assert_eq!(bound["dns6"], GATEWAY6, "{bound:?}");
    assert!(bound["search"].starts_with("lab"), "{bound:?}");
    assert!(
        lab.leases6()
            .iter()
            .any(|(l, name, _)| *l == ip && name == "web6"),
        "{:?}",
        lab.leases6()
    );

    // Its FQDN answers AAAA and the address PTR, in the network's own DNS.
    let answered = wait_for(3, || (aaaa(&g1, "web6.lab") == [ip.clone()]).then_some(()));
    assert!(
        answered.is_some(),
        "web6.lab AAAA: {:?}",
        aaaa(&g1, "web6.lab")
    );
    let ptr = dig(Some(&g1), &[&format!("@{GATEWAY6}"), "-x", &ip]).data();
    assert_eq!(ptr, ["web6.lab."], "PTR of {ip}");

    // Release: the lease goes, and so does the name.
    web.run(&["-r"]);
    assert!(
        web.wait_event("RELEASE6", 10).is_some(),
        "{}",
        web.record_text()
    );
    assert!(!lab.leases6().iter().any(|(l, ..)| *l == ip));
    let gone = wait_for(3, || aaaa(&g1, "web6.lab").is_empty().then_some(()));
    assert!(gone.is_some(), "still answers {:?}", aaaa(&g1, "web6.lab"));

    // Information-Request (dhclient -6 -S): DNS and search list, no address.
    let info = Dhclient::v6(&g1, dir, "info", "");
    info.run(&["-S", "-1"]);
    // dhclient-script hears of a stateless answer as RENEW6 without an address.
    let told = info
        .wait_event("RENEW6", 10)
        .unwrap_or_else(|| panic!("no answer: {}", info.record_text()));
    assert_eq!(told["dns6"], GATEWAY6);
    assert!(told["ip6"].is_empty());
    assert!(counter(&lab.cli().server("lab"), &["dhcp6", "information"]) >= 1);

    // A static host by DUID: dhclient -6 with a DUID-LL of its MAC.
    let g2 = lab.guest("g2", Some(FIXED_MAC));
    let fixed = Dhclient::v6(&g2, dir, "fixed", "");
    fixed.run(&["-D", "LL", "-1"]);
    let got = fixed
        .wait_event("BOUND6", 5)
        .unwrap_or_else(|| panic!("{}\nlog:\n{}", fixed.record_text(), d.log_text()));
    assert_eq!(got["ip6"], FIXED_IP);
    let named = wait_for(3, || (aaaa(&g2, "fixed.lab") == [FIXED_IP]).then_some(()));
    assert!(named.is_some(), "fixed.lab: {:?}", aaaa(&g2, "fixed.lab"));
    fixed.run(&["-x"]);

    // dhcpcd -6: follows the RA's M flag, asks with Rapid Commit (Debian's config), renews.
    let g3 = lab.guest("g3", None);
    let dc = Dhcpcd::v6(&g3, dir, "dc", "db6", "interface eth0\niaid 1\n");
    let running = dc.spawn();
    let first = running.wait_event("BOUND6", 30).unwrap_or_else(|| {
        panic!(
            "dhcpcd -6 bound nothing:\n{}\nlog:\n{}",
            dc.log_text(),
            d.log_text()
        )
    });
    let ip3 = first["ip6"].clone();
    assert!(in_range(&ip3), "{first:?}");
    assert_eq!(first["dns6"], GATEWAY6);
    let server = lab.cli().server("lab");
    assert!(
        counter(&server, &["dhcp6", "rapid_commits"]) >= 1,
        "{server}"
    );
    let replies = counter(&server, &["dhcp6", "replies"]);
    running.renew();
    let renewed = running.wait_event("RENEW6", 15);
    assert!(renewed.is_some(), "no RENEW6:\n{}", dc.log_text());
    assert_eq!(renewed.unwrap()["ip6"], ip3);
    assert!(counter(&lab.cli().server("lab"), &["dhcp6", "replies"]) > replies);
    running.release();
    let released = wait_for(5, || {
        (!lab.leases6().iter().any(|(l, ..)| *l == ip3)).then_some(())
    });
    assert!(released.is_some(), "{:?}", lab.leases6());
}

#[test]
fn v6_leases_survive_kill_9_the_same_client_gets_its_address_again_and_none_is_duplicated() {
    let lab = Lab::new(Dhcp6 {
        range: Some("fd00:77::100-fd00:77::1ff".into()),
        ..Dhcp6::default()
    });
    let mut d = lab.daemon();
    let dir = lab.scratch.root();
    let g1 = lab.guest("g1", None);
    let client = Dhclient::v6(&g1, dir, "keep", "");
    client.run(&["-1"]);
    let ip = client
        .wait_event("BOUND6", 5)
        .unwrap_or_else(|| panic!("{}\nlog:\n{}", client.record_text(), d.log_text()))["ip6"]
        .clone();
    client.run(&["-x"]);

    // A storm of v6 clients (perfdhcp -6, each its own DUID) while the daemon runs.
    let g2 = lab.guest("g2", None);
    let perf = g2.run(&[
        "timeout", "30", "perfdhcp", "-6", "-l", "eth0", "-r", "100", "-R", "150", "-n", "150",
        "-p", "10",
    ]);
    let before = wait_for(3, || {
        let l = lab.leases6();
        (l.len() > 20).then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "perfdhcp -6 leased almost nothing: {}\n{}",
            String::from_utf8_lossy(&perf.stdout),
            d.log_text()
        )
    });

    // kill -9, and a new daemon on the same state.
    d.signal(libc::SIGKILL);
    d.wait_exit(10);
    drop(d);
    let journal = lab
        .scratch
        .root()
        .join("var/lib/hostagent/leases/lab.v6.journal");
    assert!(journal.exists(), "{}", journal.display());
    let _d2 = lab.daemon();
    let after = lab.leases6();
    let ips: Vec<&String> = after.iter().map(|(ip, ..)| ip).collect();
    let unique: HashSet<&&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "an address held twice: {after:?}");
    for lease in &before {
        assert!(after.contains(lease), "{lease:?} lost across kill -9");
    }
    assert!(after.iter().any(|(l, ..)| *l == ip));

    // The same client (its DUID in its lease file) gets the same address again.
    client.run(&["-1"]);
    let again = wait_for(5, || {
        client
            .records("BOUND6")
            .into_iter()
            .chain(client.records("REBOOT6"))
            .chain(client.records("RENEW6"))
            .last()
    })
    .unwrap_or_else(|| panic!("{}", client.record_text()));
    assert_eq!(again["ip6"], ip);
}
