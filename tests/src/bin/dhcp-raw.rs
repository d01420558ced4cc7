//! Sends arbitrary bytes to a DHCP server as a hostile client would: each HEX argument is one
//! UDP datagram to 255.255.255.255:67, leaving through IFACE only (SO_BINDTODEVICE). Nothing is
//! checked or answered; the test reads the server's counters afterwards.
//!
//! usage: dhcp-raw IFACE [--repeat N] [--sport PORT] HEX...
//!   --repeat N   send the whole list N times (for rate-limit tests)
//!   --sport P    source port (default: an ephemeral one, so it never collides with a client on 68)

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::exit;

use testkit::dhcp::{client_socket, from_hex};

fn usage() -> ! {
    eprintln!("usage: dhcp-raw IFACE [--repeat N] [--sport PORT] HEX...");
    exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(iface) = args.next() else { usage() };
    let (mut repeat, mut sport, mut packets) = (1u32, 0u16, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--sport" => {
                sport = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            h => packets.push(from_hex(h).unwrap_or_else(|| {
                eprintln!("dhcp-raw: not hex: {h}");
                exit(2)
            })),
        }
    }
    if packets.is_empty() {
        usage();
    }
    let sock = client_socket(&iface, sport, false).unwrap_or_else(|e| {
        eprintln!("dhcp-raw: a UDP socket on {iface}, port {sport}: {e}");
        exit(1)
    });
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut sent = 0u64;
    for _ in 0..repeat {
        for p in &packets {
            match sock.send_to(p, dest) {
                Ok(_) => sent += 1,
                // A full socket buffer under --repeat: wait a little, the test counts what left.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => {
                    eprintln!("dhcp-raw: send {} bytes: {e}", p.len());
                    exit(1);
                }
            }
        }
    }
    println!("sent {sent}");
}
