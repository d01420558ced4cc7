//! An open-loop DHCP load generator for the benchmarks: DISCOVERs at a fixed rate, as a relay
//! agent would forward them (giaddr = this host's address, unicast to the server's port 67, the
//! answers unicast back to port 67 here), a REQUEST the moment each OFFER arrives, and the time
//! from DISCOVER to ACK recorded per exchange.
//!
//! Why not only perfdhcp: perfdhcp spends ~140 µs of CPU per exchange, so on 2 vCPUs it runs out
//! of CPU near 8,000 exchanges/s, before the server does (BENCHMARKS.md, DHCP). This one does
//! two sends and two receives per exchange and nothing else, so several of them, from separate
//! namespaces, can find a server's ceiling. Like perfdhcp it never retransmits: an exchange with
//! no ACK within DROP_MS of its DISCOVER is lost.
//!
//! usage: dhcp-load BIND_IP SERVER_IP RATE SECONDS MAC_PREFIX_BYTE LATENCY_FILE [CLIENTS [DROP_MS]]
//!
//! CLIENTS (default: one per exchange) bounds the distinct MACs, as perfdhcp's `-R`: past it the
//! same clients come back and get their own addresses again, so a long run does not exhaust the
//! pool.
//!
//! Prints one line: `sent S acked A late L naks N rate R` (R = ACKs in time ÷ SECONDS) and writes
//! every in-time exchange's latency in microseconds, one per line, to LATENCY_FILE.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use testkit::dhcp::{msg, opt, Packet, Reply, BOOTREPLY};

/// DISCOVERs are sent in bursts at most this far apart.
const TICK: Duration = Duration::from_micros(500);

struct Exchange {
    mac: [u8; 6],
    started: Instant,
    requested: bool,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("dhcp-load: bad or missing {what}");
            eprintln!("usage: dhcp-load BIND_IP SERVER_IP RATE SECONDS MAC_PREFIX_BYTE LATENCY_FILE [CLIENTS [DROP_MS]]");
            std::process::exit(2)
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let relay: Ipv4Addr = arg(&args, 1, "BIND_IP");
    let server: Ipv4Addr = arg(&args, 2, "SERVER_IP");
    let rate: u64 = arg(&args, 3, "RATE");
    let seconds: u64 = arg(&args, 4, "SECONDS");
    let prefix: u8 = arg(&args, 5, "MAC_PREFIX_BYTE");
    let latency_file: String = arg(&args, 6, "LATENCY_FILE");
    let clients: u64 = args.get(7).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    let drop_after =
        Duration::from_millis(args.get(8).and_then(|s| s.parse().ok()).unwrap_or(1000));

    let sock = UdpSocket::bind(SocketAddrV4::new(relay, 67))
        .unwrap_or_else(|e| panic!("bind {relay}:67: {e}"));
    sock.set_nonblocking(true).expect("non-blocking");
    deep_receive_queue(&sock);
    let dest = SocketAddrV4::new(server, 67);
    let total = rate * seconds;
    let mut inflight: HashMap<u32, Exchange> = HashMap::with_capacity(total as usize);
    let mut latencies: Vec<u32> = Vec::with_capacity(total as usize);
    let (mut sent, mut late, mut naks) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    let stop_sending = start + Duration::from_secs(seconds);
    let end = stop_sending + drop_after;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Open loop: however the server keeps up, DISCOVERs leave on schedule.
        let due = if now < stop_sending {
            (now.duration_since(start).as_micros() as u64 * rate / 1_000_000).min(total)
        } else {
            total
        };
        while sent < due {
            let i = sent as u32;
            let mut mac = [0x02, prefix, 0, 0, 0, 0];
            mac[2..6].copy_from_slice(&((sent % clients.max(1)) as u32).to_be_bytes());
            let xid = (u32::from(prefix) << 24) ^ i;
            let p = Packet::new(msg::DISCOVER, mac)
                .xid(xid)
                .giaddr(relay)
                .client_id()
                .option(opt::PARAMETER_REQUEST_LIST, &[1, 3, 51]);
            let _ = sock.send_to(&p.bytes(), dest);
            inflight.insert(
                xid,
                Exchange {
                    mac,
                    started: Instant::now(),
                    requested: false,
                },
            );
            sent += 1;
        }
        // Answers until the next tick.
        let next_tick = Instant::now() + TICK;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => answer(
                    &sock,
                    dest,
                    relay,
                    &buf[..n],
                    &mut inflight,
                    &mut latencies,
                    &mut late,
                    &mut naks,
                    drop_after,
                ),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= next_tick {
                        break;
                    }
                    wait_readable(&sock, next_tick);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("receive: {e}"),
            }
            if Instant::now() >= next_tick {
                break;
            }
        }
    }
    let acked = latencies.len() as u64;
    let mut f =
        std::fs::File::create(&latency_file).unwrap_or_else(|e| panic!("{latency_file}: {e}"));
    let text: String = latencies.iter().map(|l| format!("{l}\n")).collect();
    f.write_all(text.as_bytes()).expect("write latencies");
    println!(
        "sent {sent} acked {acked} late {late} naks {naks} rate {:.1}",
        acked as f64 / seconds as f64
    );
}

#[allow(clippy::too_many_arguments)]
fn answer(
    sock: &UdpSocket,
    dest: SocketAddrV4,
    relay: Ipv4Addr,
    pkt: &[u8],
    inflight: &mut HashMap<u32, Exchange>,
    latencies: &mut Vec<u32>,
    late: &mut u64,
    naks: &mut u64,
    drop_after: Duration,
) {
    let Some(r) = Reply::parse(pkt).filter(|r| r.op == BOOTREPLY) else {
        return;
    };
    let Some(x) = inflight.get_mut(&r.xid) else {
        return;
    };
    match (x.requested, r.msg_type().unwrap_or(0)) {
        (false, msg::OFFER) => {
            let server = r.ip(opt::SERVER_ID).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let p = Packet::new(msg::REQUEST, x.mac)
                .xid(r.xid)
                .giaddr(relay)
                .client_id()
                .selecting(r.yiaddr, server)
                .option(opt::PARAMETER_REQUEST_LIST, &[1, 3, 51]);
            let _ = sock.send_to(&p.bytes(), dest);
            x.requested = true;
        }
        (true, msg::ACK) => {
            let took = x.started.elapsed();
            inflight.remove(&r.xid);
            if took > drop_after {
                *late += 1;
            } else {
                latencies.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
        (true, msg::NAK) => {
            inflight.remove(&r.xid);
            *naks += 1;
        }
        _ => {}
    }
}

/// Sleeps until the socket is readable or `until` passes.
fn wait_readable(sock: &UdpSocket, until: Instant) {
    use std::os::fd::AsRawFd;
    let left = until.saturating_duration_since(Instant::now());
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = left.as_micros().div_ceil(1000) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, ms) };
}

/// A receive queue deep enough for the server's reply bursts (hostagent sends a batch's ACKs
/// together after one fsync) while this process is descheduled: without it the drops counted
/// would be this generator's, not the server's. SO_RCVBUFFORCE needs CAP_NET_ADMIN (the bench
/// runs as root); without it the namespace's rmem_default stays.
fn deep_receive_queue(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 32 << 20;
    // SAFETY: a valid socket and a c_int option value of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
