//! A minimal DHCP client fleet for tests and benchmarks: many simulated clients (distinct MACs) do
//! the DISCOVER/OFFER/REQUEST/ACK exchange with the broadcast flag set, and every ACK is printed
//! (`ACK <mac> <ip>`) and flushed the moment it arrives — so a test that kills the server knows
//! exactly which leases were promised.
//!
//! usage: dhcp-flood IFACE COUNT [MAC_PREFIX_BYTE] [WINDOW] [SECONDS]

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use testkit::dhcp::{client_socket, mac_text, msg, opt, Packet, Reply, BOOTREPLY};

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Discovering,
    Requesting { ip: Ipv4Addr, server: Ipv4Addr },
}

struct Client {
    mac: [u8; 6],
    stage: Stage,
    sent: Instant,
    tries: u32,
}

fn packet(mac: &[u8; 6], xid: u32, stage: Stage) -> Vec<u8> {
    match stage {
        Stage::Discovering => Packet::simulated(msg::DISCOVER, *mac, xid),
        Stage::Requesting { ip, server } => {
            Packet::simulated(msg::REQUEST, *mac, xid).selecting(ip, server)
        }
    }
    .bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: dhcp-flood IFACE COUNT [MAC_PREFIX_BYTE] [WINDOW] [SECONDS]");
        std::process::exit(2);
    }
    let iface = &args[1];
    let count: u32 = args[2].parse().expect("COUNT");
    let prefix: u8 = args
        .get(3)
        .map(|s| s.parse().expect("MAC_PREFIX_BYTE"))
        .unwrap_or(0x10);
    let window: usize = args
        .get(4)
        .map(|s| s.parse().expect("WINDOW"))
        .unwrap_or(32);
    let seconds: u64 = args
        .get(5)
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(60);

    let sock = client_socket(iface, 68, false)
        .unwrap_or_else(|e| panic!("a DHCP client socket on {iface}, port 68: {e}"));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut next = 0u32;
    let mut inflight: HashMap<u32, Client> = HashMap::new();
    let (mut acked, mut failed) = (0u32, 0u32);
    let out = std::io::stdout();
    let mut buf = [0u8; 1500];
    while (next < count || !inflight.is_empty()) && Instant::now() < deadline {
        while next < count && inflight.len() < window {
            let mut mac = [0x02, prefix, 0, 0, 0, 0];
            mac[2..6].copy_from_slice(&next.to_be_bytes());
            let xid = 0x4000_0000 | (u32::from(prefix) << 20) ^ next;
            let _ = sock.send_to(&packet(&mac, xid, Stage::Discovering), dest);
            inflight.insert(
                xid,
                Client {
                    mac,
                    stage: Stage::Discovering,
                    sent: Instant::now(),
                    tries: 1,
                },
            );
            next += 1;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            let reply = Reply::parse(&buf[..n]).filter(|r| r.op == BOOTREPLY);
            if let Some(r) = reply {
                let (xid, yiaddr) = (r.xid, r.yiaddr);
                if let Some(c) = inflight.get_mut(&xid) {
                    match (c.stage, r.msg_type().unwrap_or(0)) {
                        (Stage::Discovering, msg::OFFER) => {
                            let server = r.ip(opt::SERVER_ID).unwrap_or(Ipv4Addr::UNSPECIFIED);
                            c.stage = Stage::Requesting { ip: yiaddr, server };
                            c.sent = Instant::now();
                            c.tries = 1;
                            let _ = sock.send_to(&packet(&c.mac, xid, c.stage), dest);
                        }
                        (Stage::Requesting { ip, .. }, msg::ACK) if ip == yiaddr => {
                            let mut o = out.lock();
                            let _ = writeln!(o, "ACK {} {yiaddr}", mac_text(&c.mac));
                            let _ = o.flush();
                            inflight.remove(&xid);
                            acked += 1;
                        }
                        (Stage::Requesting { .. }, msg::NAK) => {
                            inflight.remove(&xid);
                            failed += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        // Retransmit what got no answer within a second; give up after 4 tries.
        let now = Instant::now();
        let mut give_up = vec![];
        for (xid, c) in inflight.iter_mut() {
            if now.duration_since(c.sent) > Duration::from_secs(1) {
                if c.tries >= 4 {
                    give_up.push(*xid);
                    continue;
                }
                c.tries += 1;
                c.sent = now;
                let _ = sock.send_to(&packet(&c.mac, *xid, c.stage), dest);
            }
        }
        for x in give_up {
            inflight.remove(&x);
            failed += 1;
        }
    }
    eprintln!(
        "dhcp-flood: {acked} acked, {failed} failed, {} unfinished",
        count - acked - failed
    );
}
