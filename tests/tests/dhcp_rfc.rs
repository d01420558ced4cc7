//! The DHCP server keeps the RFCs' promises with clients nobody here wrote, against the real
//! `hostagent run`:
//! - dhcpcd with its default DUID client identifier (RFC 4361) gets, renews and releases a
//!   lease; `leases` shows its client-id and hostname (option 12); after a reboot on a new NIC
//!   (new chaddr, same DUID) it keeps its address (RFC 2131 §4.2); it is handed the network's
//!   NTP servers (42) and classless static routes (121, RFC 3442, with the default route a 121
//!   client needs since it ignores option 3);
//! - a relay agent's option 82 comes back byte for byte, last, in the OFFER, the ACK and a NAK
//!   (RFC 3046 §2.2), through the relay (giaddr).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use hostagent_tests::cli::{mac_text, Cli};
use hostagent_tests::config::{Config, Dhcp, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::dhcp::{msg, opt, Packet, Reply};
use testkit::dhcp_client::{Dhcpcd, Record};
use testkit::{stdout, wait_for, Netns};

const BRIDGE: &str = "br-rfc";

fn config(net: &str) -> Config {
    Config::new("/var/lib/hostagent").network(
        Network::nat("lab", BRIDGE, &format!("{net}.1/24")).dhcp(
            Dhcp::new(&format!("{net}.100-{net}.199"))
                .lease_time("1h")
                .dns(&[&format!("{net}.1")])
                .raw(&format!("ntp = [\"{net}.1\", \"{net}.2\"]"))
                .raw(&format!(
                    "routes = [{{ to = \"10.200.0.0/16\", via = \"{net}.254\" }}]"
                )),
        ),
    )
}

/// `hostagent run` on `net`.0/24 in a namespace of its own.
fn start(tag: &str, net: &str) -> (Netns, Scratch, String, Daemon) {
    let host = Netns::new(tag);
    let s = Scratch::new();
    let cfg = s.config(config(net));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    (host, s, cfg, d)
}

/// The first of `reasons` dhcpcd recorded within `secs`.
fn any_event(c: &Dhcpcd, reasons: &[&str], secs: u64) -> Option<Record> {
    wait_for(secs, || reasons.iter().find_map(|r| c.records(r).pop()))
}

#[test]
fn dhcpcd_duid_lease_is_renewed_kept_across_a_new_nic_and_released() {
    let net = "10.86.0";
    let (host, s, cfg, d) = start("rfcd", net);
    let cli = Cli::new(&host, &s, &cfg);
    let guest = host.plug(BRIDGE, "vrfcd0");
    let first_mac = guest.mac("eth0");
    // A fixed IAID: dhcpcd's default is the MAC's last four bytes, which would change the
    // client identifier with the NIC, and the point here is a machine that keeps its DUID.
    let dhcpcd = Dhcpcd::new(
        &guest,
        s.root(),
        "a",
        "dhcpcd-guest",
        "interface eth0\niaid 1\n",
    );
    let run = dhcpcd.spawn();
    let bound = run.wait_event("BOUND", 60).unwrap_or_else(|| {
        panic!(
            "dhcpcd got no lease:\n{}\nagent:\n{}",
            dhcpcd.log_text(),
            d.log_text()
        )
    });
    let ip = bound["ip"].clone();
    assert!(ip.starts_with(&format!("{net}.1")), "{bound:?}");
    assert_eq!(bound["ntp"], format!("{net}.1,{net}.2"), "option 42");
    let routes = &bound["routes"];
    assert!(
        routes.contains(&format!("10.200.0.0/16,{net}.254")),
        "option 121: {routes}"
    );
    assert!(
        routes.contains(&format!("0.0.0.0/0,{net}.1")),
        "the default route rides in 121 (RFC 3442 §2): {routes}"
    );

    let leased = |mac: &str| {
        cli.lease_records()
            .into_iter()
            .map(|(_, l)| l)
            .find(|l| mac_text(&l["mac"]) == mac)
    };
    let lease = leased(&first_mac).expect("leases --json lists dhcpcd's lease");
    let client_id = lease["client_id"].as_str().unwrap_or_default().to_string();
    assert!(
        client_id.starts_with("ff:00:00:00:01:"),
        "RFC 4361 client-id (type 255, IAID 1, DUID): {lease}"
    );
    assert_eq!(lease["hostname"], "dhcpcd-guest", "option 12 kept: {lease}");
    assert_eq!(lease["ip"], ip.as_str());
    let table = stdout(&cli.run(&["leases"]));
    assert!(
        table
            .lines()
            .any(|l| l.contains(&ip) && l.contains("dhcpcd-guest") && l.contains(&client_id)),
        "`hostagent leases` shows hostname and client-id:\n{table}"
    );

    run.renew();
    let renewed = run
        .wait_event("RENEW", 30)
        .unwrap_or_else(|| panic!("no renewal:\n{}", dhcpcd.log_text()));
    assert_eq!(renewed["ip"], ip);

    // A new NIC: dhcpcd stops without releasing, the MAC changes, dhcpcd starts again with the
    // same DUID. The address follows the client identifier, not chaddr.
    run.stop();
    let new_mac = "52:54:00:86:0e:01";
    guest.ok(&["ip", "link", "set", "eth0", "down"]);
    guest.ok(&["ip", "link", "set", "eth0", "address", new_mac]);
    guest.ok(&["ip", "link", "set", "eth0", "up"]);
    let before = dhcpcd.records("BOUND").len() + dhcpcd.records("REBOOT").len();
    let run = dhcpcd.spawn();
    let again = wait_for(60, || {
        let now = dhcpcd.records("BOUND").len() + dhcpcd.records("REBOOT").len();
        (now > before)
            .then(|| any_event(&dhcpcd, &["REBOOT", "BOUND"], 0))
            .flatten()
    })
    .unwrap_or_else(|| panic!("no lease after the NIC change:\n{}", dhcpcd.log_text()));
    assert_eq!(again["ip"], ip, "same client-id, new chaddr: same address");
    let moved = leased(new_mac).expect("the lease under the new MAC");
    assert_eq!(moved["ip"], ip.as_str());
    assert_eq!(moved["client_id"], client_id.as_str());
    assert!(
        leased(&first_mac).is_none(),
        "one client, one lease: {:?}",
        cli.lease_records()
    );

    run.release();
    let gone = wait_for(15, || leased(new_mac).is_none().then_some(()));
    assert!(
        gone.is_some(),
        "lease still listed after dhcpcd released it; agent:\n{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("dhcp release") && l.contains(&client_id)),
        "no release logged for the client-id:\n{log}"
    );
}

/// RFC 3046 §2.2: "DHCP servers claiming to support the Relay Agent Information option SHALL
/// echo the entire contents of the Relay Agent Information option in all replies." A relay
/// agent (a namespace on the segment with an address of its own, listening on UDP 67 as relays
/// do) forwards a client's DISCOVER and REQUESTs with giaddr and option 82.
#[test]
fn option_82_comes_back_byte_for_byte_through_the_relay() {
    let net = "10.87.0";
    let (host, s, cfg, d) = start("rfcr", net);
    let relay = host.plug(BRIDGE, "vrfcr0");
    relay.ok(&["ip", "addr", "add", &format!("{net}.50/24"), "dev", "eth0"]);
    let relay_ip: Ipv4Addr = format!("{net}.50").parse().expect("ip");
    let server: Ipv4Addr = format!("{net}.1").parse().expect("ip");
    // Circuit id "br0/7" and a 6-byte remote id, as a switch's relay agent writes them.
    let info: Vec<u8> = [
        1, 5, b'b', b'r', b'0', b'/', b'7', 2, 6, 0, 0x1b, 0x21, 0x3c, 0x4d, 0x5e,
    ]
    .to_vec();
    let mac = [0x52, 0x54, 0x00, 0x87, 0x00, 0x01];

    let replies = relay.enter(move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(relay_ip, 67)).expect("relay port 67");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let ask = |p: Packet| -> Reply {
            let bytes = p
                .giaddr(relay_ip)
                .option(opt::RELAY_AGENT_INFO, &info)
                .bytes();
            for _ in 0..5 {
                sock.send_to(&bytes, SocketAddrV4::new(server, 67))
                    .expect("send");
                let mut buf = [0u8; 1500];
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    return Reply::parse(&buf[..n]).expect("a well-formed reply");
                }
            }
            panic!("no reply through the relay");
        };
        let offer = ask(Packet::new(msg::DISCOVER, mac).xid(0x8201));
        let ack = ask(Packet::new(msg::REQUEST, mac)
            .xid(0x8202)
            .selecting(offer.yiaddr, server));
        // Outside the range: the server says no, and says it with 82 too.
        let nak = ask(Packet::new(msg::REQUEST, mac)
            .xid(0x8203)
            .selecting(Ipv4Addr::new(10, 87, 0, 7), server));
        vec![offer, ack, nak]
    });
    let info: Vec<u8> = [
        1, 5, b'b', b'r', b'0', b'/', b'7', 2, 6, 0, 0x1b, 0x21, 0x3c, 0x4d, 0x5e,
    ]
    .to_vec();
    for (reply, want) in replies.iter().zip([msg::OFFER, msg::ACK, msg::NAK]) {
        assert_eq!(reply.msg_type(), Some(want), "{reply:?}");
        assert_eq!(reply.giaddr, relay_ip, "answered through the relay");
        assert!(
            reply.echoes_relay_info(&info),
            "option 82 unchanged and last in message type {want} (RFC 3046 §2.2): {:?}",
            reply.codes()
        );
    }
    assert!(replies[0]
        .yiaddr
        .to_string()
        .starts_with(&format!("{net}.1")));
    assert_eq!(replies[1].yiaddr, replies[0].yiaddr);
    let leases = Cli::new(&host, &s, &cfg).leases();
    assert!(
        leases
            .iter()
            .any(|(_, m, ip)| m == "52:54:00:87:00:01" && *ip == replies[1].yiaddr.to_string()),
        "{leases:?}\n{}",
        d.log_text()
    );
}
