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

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::exit;
use std::time::{Duration, Instant};

const COOKIE: [u8; 4] = [99, 130, 83, 99];
const MAX_COUNT: u32 = 100_000;

fn usage() -> ! {
    eprintln!("usage: dhcp-spam IFACE MAC COUNT INTERVAL_MS [LISTEN_AFTER_MS]");
    exit(2)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

fn discover(mac: &[u8; 6], xid: u32) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag: replies come to 255.255.255.255:68
    p[28..34].copy_from_slice(mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, 1]);
    p.extend_from_slice(&[61, 7, 1]);
    p.extend_from_slice(mac);
    p.extend_from_slice(&[55, 3, 1, 3, 51, 255]);
    p
}

/// Is `buf` an OFFER (BOOTREPLY, message type 2) for `mac`?
fn is_offer_for(buf: &[u8], mac: &[u8; 6]) -> bool {
    if buf.len() < 240 || buf[0] != 2 || buf[236..240] != COOKIE || &buf[28..34] != mac {
        return false;
    }
    let mut i = 240;
    while i + 1 < buf.len() {
        match buf[i] {
            255 => return false,
            0 => i += 1,
            code => {
                let len = buf[i + 1] as usize;
                if code == 53 && len == 1 {
                    return buf.get(i + 2) == Some(&2);
                }
                i += 2 + len;
            }
        }
    }
    false
}

fn socket(iface: &str) -> UdpSocket {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned by the UdpSocket built from it below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        eprintln!("dhcp-spam: socket: {}", std::io::Error::last_os_error());
        exit(1);
    }
    // SAFETY: fd was just created and is not owned by anything else.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let name = std::ffi::CString::new(iface).unwrap_or_else(|_| usage());
    // SAFETY: setsockopt on a valid fd with pointers to live values of the given lengths.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.as_bytes_with_nul().len() as libc::socklen_t,
            ) == 0
    };
    if !ok {
        eprintln!(
            "dhcp-spam: setsockopt on {iface}: {}",
            std::io::Error::last_os_error()
        );
        exit(1);
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 68u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: bind with a valid sockaddr_in and its size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!("dhcp-spam: bind :68: {}", std::io::Error::last_os_error());
        exit(1);
    }
    if let Err(e) = sock.set_broadcast(true) {
        eprintln!("dhcp-spam: SO_BROADCAST: {e}");
        exit(1);
    }
    sock
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

    let sock = socket(iface);
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
            if sock.send_to(&discover(&mac, xid), dest).is_ok() {
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
