//! A minimal DHCP client fleet for tests and benchmarks: many simulated clients (distinct MACs) do
//! the DISCOVER/OFFER/REQUEST/ACK exchange with the broadcast flag set, and every ACK is printed
//! (`ACK <mac> <ip>`) and flushed the moment it arrives — so a test that kills the server knows
//! exactly which leases were promised.
//!
//! usage: dhcp-flood IFACE COUNT [MAC_PREFIX_BYTE] [WINDOW] [SECONDS]

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const COOKIE: [u8; 4] = [99, 130, 83, 99];

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

fn packet(mac: &[u8; 6], xid: u32, msg: u8, req: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag: replies come to 255.255.255.255:68
    p[28..34].copy_from_slice(mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, msg]);
    p.extend_from_slice(&[61, 7, 1]);
    p.extend_from_slice(mac);
    if let Some((ip, server)) = req {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[55, 3, 1, 3, 51, 255]);
    p
}

/// (xid, yiaddr, message type, server id) of a reply; None for anything malformed.
fn parse(buf: &[u8]) -> Option<(u32, Ipv4Addr, u8, Option<Ipv4Addr>)> {
    if buf.len() < 240 || buf[0] != 2 || buf[236..240] != COOKIE {
        return None;
    }
    let xid = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let yiaddr = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
    let (mut msg, mut server, mut i) = (0u8, None, 240usize);
    while i < buf.len() {
        let code = buf[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *buf.get(i + 1)? as usize;
        let val = buf.get(i + 2..i + 2 + len)?;
        match code {
            53 if len == 1 => msg = val[0],
            54 if len == 4 => server = Some(Ipv4Addr::new(val[0], val[1], val[2], val[3])),
            _ => {}
        }
        i += 2 + len;
    }
    Some((xid, yiaddr, msg, server))
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

    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).expect("bind :68");
    sock.set_broadcast(true).expect("SO_BROADCAST");
    let name = std::ffi::CString::new(iface.as_str()).expect("iface");
    // SAFETY: setsockopt with a valid fd and a NUL-terminated name of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.as_bytes_with_nul().len() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_BINDTODEVICE {iface}: {}",
        std::io::Error::last_os_error()
    );
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
            let _ = sock.send_to(&packet(&mac, xid, 1, None), dest);
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
            if let Some((xid, yiaddr, msg, server)) = parse(&buf[..n]) {
                if let Some(c) = inflight.get_mut(&xid) {
                    match (c.stage, msg) {
                        (Stage::Discovering, 2) => {
                            let server = server.unwrap_or(Ipv4Addr::UNSPECIFIED);
                            c.stage = Stage::Requesting { ip: yiaddr, server };
                            c.sent = Instant::now();
                            c.tries = 1;
                            let _ =
                                sock.send_to(&packet(&c.mac, xid, 3, Some((yiaddr, server))), dest);
                        }
                        (Stage::Requesting { ip, .. }, 5) if ip == yiaddr => {
                            let m = c.mac;
                            let mut o = out.lock();
                            let _ = writeln!(
                                o,
                                "ACK {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {yiaddr}",
                                m[0], m[1], m[2], m[3], m[4], m[5]
                            );
                            let _ = o.flush();
                            inflight.remove(&xid);
                            acked += 1;
                        }
                        (Stage::Requesting { .. }, 6) => {
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
                let pkt = match c.stage {
                    Stage::Discovering => packet(&c.mac, *xid, 1, None),
                    Stage::Requesting { ip, server } => packet(&c.mac, *xid, 3, Some((ip, server))),
                };
                let _ = sock.send_to(&pkt, dest);
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
