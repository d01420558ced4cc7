//! One client MAC in a loop: sends DHCPDISCOVERs for the same chaddr at a fixed pace and counts
//! the OFFERs that come back for it, to test the server's per-MAC rate limit.
//!
//! usage: dhcp-spam IFACE MAC COUNT INTERVAL_MS [LISTEN_AFTER_MS]
//!   MAC          aa:bb:cc:dd:ee:ff, put in chaddr and option 61 (the Ethernet source stays IFACE's)
//!   COUNT        DISCOVERs to send (at most 100,000)
//!   INTERVAL_MS  pause between two sends (at least 1)
//!   LISTEN_AFTER_MS  keep counting replies this long after the last send (default 1000)
//!
//! Prints `SENT <n>`, `OFFERS <n>` and `SECONDS <elapsed>` on stdout. Replies arrive broadcast to
//! :68; the socket uses SO_REUSEADDR so a client with a raw socket (busybox udhcpc) can run on the
//! same interface at the same time.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::exit;
use std::time::{Duration, Instant};

use testkit::dhcp::{client_socket, msg, parse_mac, Packet, Reply, BOOTREPLY};

const MAX_COUNT: u32 = 100_000;

fn usage() -> ! {
    eprintln!("usage: dhcp-spam IFACE MAC COUNT INTERVAL_MS [LISTEN_AFTER_MS]");
    exit(2)
}

/// Is `buf` an OFFER (BOOTREPLY, message type 2) for `mac`?
fn is_offer_for(buf: &[u8], mac: &[u8; 6]) -> bool {
    Reply::parse(buf)
        .is_some_and(|r| r.op == BOOTREPLY && r.chaddr == *mac && r.msg_type() == Some(msg::OFFER))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let iface = &args[0];
    let mac = parse_mac(&args[1]).unwrap_or_else(|| usage());
    let count: u32 = args[2].parse().unwrap_or_else(|_| usage());
    let interval: u64 = args[3].parse().unwrap_or_else(|_| usage());
    let listen_after: u64 = args
        .get(4)
        .map(|s| s.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(1000);
    if count > MAX_COUNT || interval == 0 {
        usage();
    }

    let sock = client_socket(iface, 68, true).unwrap_or_else(|e| {
        eprintln!("dhcp-spam: a DHCP client socket on {iface}, port 68: {e}");
        exit(1)
    });
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let started = Instant::now();
    let mut next_send = started;
    let mut last_send = started;
    let (mut sent, mut offers) = (0u32, 0u32);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if sent < count && now >= next_send {
            let xid = 0x5a00_0000 | sent;
            if sock
                .send_to(&Packet::simulated(msg::DISCOVER, mac, xid).bytes(), dest)
                .is_ok()
            {
                sent += 1;
            }
            last_send = now;
            next_send += Duration::from_millis(interval);
            continue;
        }
        let stop_at = last_send + Duration::from_millis(listen_after);
        if sent >= count && now >= stop_at {
            break;
        }
        let until = if sent < count { next_send } else { stop_at };
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        let _ = sock.set_read_timeout(Some(wait));
        if let Ok(n) = sock.recv(&mut buf) {
            if is_offer_for(&buf[..n], &mac) {
                offers += 1;
            }
        }
    }
    println!("SENT {sent}");
    println!("OFFERS {offers}");
    println!("SECONDS {:.3}", started.elapsed().as_secs_f64());
}
