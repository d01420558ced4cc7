//! The floor of a lock-step transfer, for the benchmarks: the least a server can do per block is
//! one blocking receive (the 4-byte ACK) and one send (a 1472-byte DATA datagram). `srv` does
//! exactly that; `cli` plays the client (send 4 bytes, wait for the answer). Each side prints
//! the CPU time it used per round (user + system, from getrusage of its own thread), which is
//! what the kernel's UDP path, the bridge and veth and the wake-ups cost, with no server logic.
//!
//! `tftp` is the same floor for a real client (atftp): a TFTP read server that does nothing but
//! the protocol. It takes one RRQ (any filename), answers blksize and tsize (SIZE) in an OACK if
//! asked (other options ignored), then sends SIZE bytes of a fixed pattern (byte i is i % 251)
//! from memory, one DATA block per ACK, from a new socket connected to the client (RFC 1350),
//! block numbers wrapping 65535 → 0, the last block shorter than blksize. One transfer, then it
//! exits. A malformed packet or a client's ERROR ends it with a message and exit status 1.
//!
//! usage: udp-pingpong srv BIND_IP PORT ROUNDS | udp-pingpong cli SERVER_IP PORT ROUNDS |
//!        udp-pingpong tftp BIND_IP PORT SIZE
//! prints: `srv cpu_us_per_round X`, `cli cpu_us_per_round X wall_us_per_round Y` or
//!         `tftp cpu_us_per_block X`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn thread_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid, and getrusage fills it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-parameter.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: udp-pingpong srv|cli IP PORT ROUNDS | udp-pingpong tftp IP PORT SIZE");
        std::process::exit(2)
    };
    if args.len() != 5 {
        usage();
    }
    let addr: SocketAddr = format!("{}:{}", args[2], args[3])
        .parse()
        .unwrap_or_else(|_| usage());
    let rounds: u64 = args[4].parse().unwrap_or_else(|_| usage());
    let mut buf = [7u8; 2048];
    match args[1].as_str() {
        "srv" => {
            let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            // Bounded: a lost datagram ends the run with an error instead of hanging it.
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .expect("timeout");
            let (_, peer) = s.recv_from(&mut buf).expect("first datagram");
            s.connect(peer).expect("connect");
            let c0 = thread_cpu();
            s.send(&buf[..1472]).expect("send");
            for _ in 1..rounds {
                s.recv(&mut buf).expect("recv");
                s.send(&buf[..1472]).expect("send");
            }
            println!(
                "srv cpu_us_per_round {:.2}",
                (thread_cpu() - c0) * 1e6 / rounds as f64
            );
        }
        "cli" => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(addr).expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
            let (t0, c0) = (Instant::now(), thread_cpu());
            for _ in 0..rounds {
                s.send(&buf[..4]).expect("send");
                s.recv(&mut buf).expect("recv");
            }
            let wall = t0.elapsed().as_secs_f64();
            println!(
                "cli cpu_us_per_round {:.2} wall_us_per_round {:.2}",
                (thread_cpu() - c0) * 1e6 / rounds as f64,
                wall * 1e6 / rounds as f64
            );
        }
        "tftp" => match tftp(addr, rounds) {
            Ok(us) => println!("tftp cpu_us_per_block {us:.2}"),
            Err(e) => {
                eprintln!("udp-pingpong tftp: {e}");
                std::process::exit(1)
            }
        },
        _ => usage(),
    }
}

/// One TFTP read transfer of `size` bytes; returns the CPU µs per block from the RRQ on.
fn tftp(addr: SocketAddr, size: u64) -> Result<f64, String> {
    let size = usize::try_from(size).map_err(|_| "SIZE too large")?;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let l = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    l.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (n, peer) = l.recv_from(&mut buf).map_err(|e| format!("RRQ: {e}"))?;
    let c0 = thread_cpu();
    // RRQ: 0 1, filename NUL, mode NUL, then option NUL value NUL pairs (RFC 2347).
    let fields: Vec<&[u8]> = match buf[..n] {
        [0, 1, ref rest @ .., 0] => rest.split(|&b| b == 0).collect(),
        _ => return Err(format!("not an RRQ: {:?}", &buf[..n.min(32)])),
    };
    if fields.len() < 2 || !fields.len().is_multiple_of(2) {
        return Err(format!("malformed RRQ: {} fields", fields.len()));
    }
    let (mut blksize, mut oack) = (512usize, vec![0u8, 6]);
    for kv in fields[2..].chunks(2) {
        let name = String::from_utf8_lossy(kv[0]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(kv[1]);
        let answer = match name.as_str() {
            "blksize" => {
                let asked: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("blksize {value:?}"))?;
                blksize = asked.clamp(8, 65464);
                blksize.to_string()
            }
            "tsize" => size.to_string(),
            _ => continue,
        };
        for part in [name.as_bytes(), answer.as_bytes()] {
            oack.extend_from_slice(part);
            oack.push(0);
        }
    }
    let s = UdpSocket::bind((addr.ip(), 0)).map_err(|e| format!("bind: {e}"))?;
    s.connect(peer)
        .map_err(|e| format!("connect {peer}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // `k` is the DATA block last sent (0: the OACK); its wire number is k mod 65536.
    let blocks = size / blksize + 1;
    let mut k = 0usize;
    let mut pkt = Vec::with_capacity(4 + blksize);
    if oack.len() > 2 {
        pkt.extend_from_slice(&oack);
    } else {
        k = 1;
        data_block(&mut pkt, &data, blksize, k);
    }
    loop {
        s.send(&pkt).map_err(|e| format!("send: {e}"))?;
        // Wait for this packet's ACK: a duplicate of an older one is ignored (no resend: RFC 1123
        // 4.2.3.1, the Sorcerer's Apprentice), a silence of 1 s resends, 5 of them end it.
        let mut silences = 0;
        loop {
            let n = match s.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    silences += 1;
                    if silences == 5 {
                        return Err(format!("no ACK for block {k}"));
                    }
                    s.send(&pkt).map_err(|e| format!("send: {e}"))?;
                    continue;
                }
                Err(e) => return Err(format!("recv: {e}")),
            };
            match buf[..n] {
                [0, 4, hi, lo] if u16::from_be_bytes([hi, lo]) == k as u16 => break,
                [0, 4, _, _] => continue,
                [0, 5, _, _, ref msg @ ..] => {
                    let msg = msg.split(|&b| b == 0).next().unwrap_or_default();
                    return Err(format!("client's ERROR: {}", String::from_utf8_lossy(msg)));
                }
                _ => return Err(format!("not an ACK: {:?}", &buf[..n.min(32)])),
            }
        }
        if k == blocks {
            break;
        }
        k += 1;
        data_block(&mut pkt, &data, blksize, k);
    }
    Ok((thread_cpu() - c0) * 1e6 / blocks as f64)
}

/// DATA block `k` (1-based) of `data` into `pkt`.
fn data_block(pkt: &mut Vec<u8>, data: &[u8], blksize: usize, k: usize) {
    let lo = (k - 1) * blksize;
    pkt.clear();
    pkt.extend_from_slice(&[0, 3]);
    pkt.extend_from_slice(&(k as u16).to_be_bytes());
    pkt.extend_from_slice(&data[lo..(lo + blksize).min(data.len())]);
}
