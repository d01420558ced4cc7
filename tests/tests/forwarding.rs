//! Guest traffic through the agent's nftables rules, with the real binary, in fresh namespaces.
//!
//! Topology per test:
//!
//! ```text
//!  guest ns                 host ns (runs `hostagent apply`)              upstream ns
//!  eth0 10.77.0.10/24 ──veth── vg0 ∈ br-lab 10.77.0.1/24    up0 203.0.113.1/24 ──veth── eth0 203.0.113.2/24
//!  default via 10.77.0.1
//! ```
//!
//! Sockets on each side are opened by test threads that enter the namespace (setns affects only
//! the calling thread), so the test reads the peer address the kernel reports: no packet capture.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Network};
use hostagent_tests::Scratch;
use testkit::Netns;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

struct Lab {
    scratch: Scratch,
    config: String,
    host: Netns,
    guest: Netns,
    upstream: Netns,
}

impl Lab {
    /// Namespaces and uplink; the guest is attached after `apply` made the bridge.
    fn new(mode: &str) -> Lab {
        let scratch = Scratch::new();
        let config = scratch.config(
            Config::new("/var/lib/hostagent")
                .network(Network::new("lab", mode, "br-lab").address("10.77.0.1/24")),
        );
        let host = Netns::new("fwh");
        let guest = Netns::new("fwg");
        let upstream = Netns::new("fwu");
        host.veth_to("up0", &upstream, "eth0");
        host.ok(&["ip", "addr", "add", "203.0.113.1/24", "dev", "up0"]);
        upstream.ok(&["ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"]);
        Lab {
            scratch,
            config,
            host,
            guest,
            upstream,
        }
    }

    fn cli(&self) -> Cli<'_> {
        Cli::new(&self.host, &self.scratch, &self.config)
    }

    fn apply(&self) {
        self.cli().ok(&["apply"]);
    }

    fn attach_guest(&self) {
        self.host.veth_to("vg0", &self.guest, "eth0");
        self.host
            .ok(&["ip", "link", "set", "vg0", "master", "br-lab"]);
        self.guest
            .ok(&["ip", "addr", "add", "10.77.0.10/24", "dev", "eth0"]);
        self.guest
            .ok(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
        // The bridge runs STP by default, so a new port listens and learns (2 x 2 s) first.
        self.host.wait_forwarding("vg0");
    }

    fn upstream_routes_back(&self) {
        self.upstream
            .ok(&["ip", "route", "add", "10.77.0.0/24", "via", "203.0.113.1"]);
    }
}

/// Listen on `addr` inside `ns`; the handle yields the peer address of the first connection
/// (None if nobody connected within 4 s). Returns once the socket is bound.
fn tcp_peer(ns: &Netns, addr: SocketAddr) -> JoinHandle<Option<SocketAddr>> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let handle = ns.spawn_in(move || {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        bound_tx.send(()).expect("signal bound");
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.write_all(b"hi\n");
                    return Some(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("accept on {addr}: {e}"),
            }
        }
        None
    });
    bound_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener bound");
    handle
}

/// Connect from inside `ns` and read the listener's greeting.
fn tcp_connect(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Send one UDP datagram from `from_ns` to `to` (bound in `to_ns`); the source address seen there.
fn udp_source(from_ns: &Netns, to_ns: &Netns, to: SocketAddr) -> Option<SocketAddr> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let rx = to_ns.spawn_in(move || {
        let sock = UdpSocket::bind(to).unwrap_or_else(|e| panic!("bind {to}: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        bound_tx.send(()).expect("signal bound");
        let mut buf = [0u8; 64];
        sock.recv_from(&mut buf).ok().map(|(_, peer)| peer)
    });
    bound_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("udp bound");
    from_ns.enter(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind client");
        sock.send_to(b"ping", to).expect("send");
    });
    rx.join().expect("udp receiver")
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn nat_guest_reaches_upstream_from_the_uplink_address_and_foreign_table_survives() {
    let lab = Lab::new("nat");
    let foreign = "table inet foreign {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 22 accept\n }\n}\n";
    let foreign_file = lab.scratch.file("foreign.nft");
    std::fs::write(&foreign_file, foreign).expect("write foreign.nft");
    lab.host
        .ok(&["nft", "-f", foreign_file.to_str().expect("utf-8 path")]);

    lab.apply();
    assert_eq!(
        lab.host.read("/proc/sys/net/ipv4/ip_forward"),
        "1",
        "nat forwards"
    );
    assert!(lab.host.has_nft_table("inet", "hostagent"));
    assert!(
        lab.host.has_nft_table("inet", "foreign"),
        "apply must not touch other tables"
    );
    lab.attach_guest();

    // TCP: upstream sees the host's uplink address (masquerade), and the reply gets back.
    let listener = tcp_peer(&lab.upstream, at(UPSTREAM, 7001));
    let greeting = tcp_connect(&lab.guest, at(UPSTREAM, 7001)).expect("guest connects upstream");
    assert_eq!(greeting, "hi\n");
    let peer = listener
        .join()
        .expect("listener")
        .expect("connection arrived");
    assert_eq!(
        peer.ip(),
        IpAddr::V4(UPLINK),
        "source rewritten to the uplink address"
    );

    // UDP too.
    let src =
        udp_source(&lab.guest, &lab.upstream, at(UPSTREAM, 7002)).expect("udp datagram arrived");
    assert_eq!(src.ip(), IpAddr::V4(UPLINK));

    // Guest to its gateway: not masqueraded (daddr inside the subnet).
    let listener = tcp_peer(&lab.host, at(GATEWAY, 7003));
    tcp_connect(&lab.guest, at(GATEWAY, 7003)).expect("guest reaches its gateway");
    assert_eq!(
        listener.join().expect("listener").expect("connection").ip(),
        IpAddr::V4(GUEST)
    );

    // A second apply replaces our table in place; the foreign one is still there.
    lab.apply();
    assert!(lab.host.has_nft_table("inet", "foreign"));

    // A rule deleted by hand inside our table is drift: plan wants to repair it, apply does.
    assert_eq!(lab.cli().plan().0, Some(0), "nothing to do after apply");
    let listing = lab.host.ok(&[
        "nft",
        "-a",
        "list",
        "chain",
        "inet",
        "hostagent",
        "postrouting",
    ]);
    let handle = listing
        .lines()
        .find(|l| l.contains("masquerade") && !l.contains("l4proto"))
        .and_then(|l| l.rsplit("# handle ").next())
        .expect("plain masquerade rule listed with its handle")
        .trim()
        .to_string();
    lab.host.ok(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "hostagent",
        "postrouting",
        "handle",
        &handle,
    ]);
    let (code, plan) = lab.cli().plan();
    assert_eq!(code, Some(2), "plan must see the tampered table:\n{plan}");
    lab.apply();
    assert_eq!(lab.cli().plan().0, Some(0), "apply repaired the table");

    lab.cli().ok(&["down"]);
    assert!(
        !lab.host.has_nft_table("inet", "hostagent"),
        "down removes our table"
    );
    let rules = lab.host.ok(&["nft", "list", "table", "inet", "foreign"]);
    assert!(
        rules.contains("tcp dport 22 accept"),
        "foreign table intact after down:\n{rules}"
    );
}

#[test]
fn routed_guest_keeps_its_own_address_both_ways() {
    let lab = Lab::new("routed");
    lab.upstream_routes_back();
    lab.apply();
    assert_eq!(
        lab.host.read("/proc/sys/net/ipv4/ip_forward"),
        "1",
        "routed forwards"
    );
    lab.attach_guest();

    let listener = tcp_peer(&lab.upstream, at(UPSTREAM, 7011));
    tcp_connect(&lab.guest, at(UPSTREAM, 7011)).expect("guest connects upstream");
    let peer = listener
        .join()
        .expect("listener")
        .expect("connection arrived");
    assert_eq!(
        peer.ip(),
        IpAddr::V4(GUEST),
        "routed: no address translation"
    );

    // libvirt's routed mode lets new connections in to the subnet.
    let listener = tcp_peer(&lab.guest, at(GUEST, 7012));
    tcp_connect(&lab.upstream, at(GUEST, 7012)).expect("upstream connects to the guest");
    let peer = listener
        .join()
        .expect("listener")
        .expect("connection arrived");
    assert_eq!(peer.ip(), IpAddr::V4(UPSTREAM));
}

#[test]
fn isolated_guest_reaches_only_the_host() {
    let lab = Lab::new("isolated");
    lab.upstream_routes_back();
    lab.apply();
    // Forwarding on anyway (another network, or the admin, may need it): only our rules may stop it.
    lab.host
        .ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    lab.attach_guest();

    // The host's own address on the bridge is reachable.
    let listener = tcp_peer(&lab.host, at(GATEWAY, 7021));
    assert_eq!(
        tcp_connect(&lab.guest, at(GATEWAY, 7021)).expect("guest reaches the host"),
        "hi\n"
    );
    listener
        .join()
        .expect("listener")
        .expect("connection arrived");

    // Out: rejected by the forward chain (port unreachable => refused at once, as libvirt).
    let listener = tcp_peer(&lab.upstream, at(UPSTREAM, 7022));
    let err =
        tcp_connect(&lab.guest, at(UPSTREAM, 7022)).expect_err("isolated guest must not get out");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        listener.join().expect("listener"),
        None,
        "nothing arrived upstream"
    );
    assert_eq!(
        udp_source(&lab.guest, &lab.upstream, at(UPSTREAM, 7023)),
        None,
        "no udp out either"
    );

    // In: rejected too, even though upstream has a route to the subnet.
    let listener = tcp_peer(&lab.guest, at(GUEST, 7024));
    let err = tcp_connect(&lab.upstream, at(GUEST, 7024)).expect_err("nothing gets in");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(listener.join().expect("listener"), None);
}
