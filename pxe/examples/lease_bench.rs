//! Rough throughput of the lease path the DHCP server drives: offer + request per client, one
//! `flush` (write + fdatasync) per batch of 64, then a restart (journal replay).
//!
//! `cargo run --release -p pxe --example lease_bench -- [clients] [dir]`
//! (dir defaults to a temp dir; point it at the disk state_dir lives on to measure that disk).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pxe::dhcp::pool::{Pool, PoolConfig};

const BATCH: usize = 64;
const NOW: u64 = 1_800_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let clients: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000)
        .min(65_000);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let journal = dir.join("bench.leases");
    let _ = std::fs::remove_file(&journal);
    let cfg = PoolConfig {
        network: "bench".into(),
        server_ip: Ipv4Addr::new(10, 30, 0, 1),
        subnet: "10.30.0.0/16".parse()?,
        range_start: Ipv4Addr::new(10, 30, 0, 2),
        range_end: Ipv4Addr::new(10, 30, 255, 254),
        lease_time: Duration::from_secs(3600),
        reservations: Vec::new(),
        journal: journal.clone(),
    };
    let mut pool = Pool::open(cfg.clone())?;
    let start = Instant::now();
    let mut flushes = 0u32;
    for n in 0..clients {
        let mac = pxe::config::Mac([0x52, 0x54, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let ip = pool.offer(mac, None, NOW).ok_or("pool exhausted")?;
        pool.request(mac, ip, Some("bench-guest"), NOW)?;
        if (n as usize + 1).is_multiple_of(BATCH) {
            pool.flush()?;
            flushes += 1;
        }
    }
    pool.flush()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{clients} leases in {secs:.3} s: {:.0} leases/s, {flushes} flushes ({:.0} fdatasync/s), journal {} bytes",
        clients as f64 / secs,
        flushes as f64 / secs,
        pool.journal_len()
    );
    drop(pool);
    let start = Instant::now();
    let pool = Pool::open(cfg)?;
    println!(
        "reopen: {} leases replayed in {:.3} s",
        pool.leases_at(NOW).len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
