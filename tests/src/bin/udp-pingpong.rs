//! The floor of a lock-step transfer, for the benchmarks: the least a server can do per block is
//! one blocking receive (the 4-byte ACK) and one send (a 1472-byte DATA datagram). `srv` does
//! exactly that; `cli` plays the client (send 4 bytes, wait for the answer). Each side prints
//! the CPU time it used per round (user + system, from getrusage of its own thread), which is
//! what the kernel's UDP path, the bridge and veth and the wake-ups cost, with no server logic.
//!
//! usage: udp-pingpong srv BIND_IP PORT ROUNDS | udp-pingpong cli SERVER_IP PORT ROUNDS
//! prints: `srv cpu_us_per_round X` or `cli cpu_us_per_round X wall_us_per_round Y`

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

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
        eprintln!("usage: udp-pingpong srv|cli IP PORT ROUNDS");
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
        _ => usage(),
    }
}
