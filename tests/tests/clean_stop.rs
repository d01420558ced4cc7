//! Clean stops: SIGTERM in the middle of a DHCP lease storm and of TFTP and HTTP downloads loses
//! no ACKed lease, leaves no half-written (`*.tmp`) file, and exits 0 promptly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hostagent_tests::daemon::{dhcp_flood_bin, leases, parse_acks, plug_guest, Daemon};
use hostagent_tests::{Netns, Scratch};

const BIG: usize = 24 << 20;

fn config() -> String {
    "state_dir = \"/state\"\n[[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"br-cs\"\n\
     address = \"10.93.0.1/20\"\n[network.dhcp]\nrange = \"10.93.1.0-10.93.15.250\"\nlease_time = \"1h\"\n\
     [network.pxe]\nroot = \"/srv/boot\"\nbios = \"undionly.kpxe\"\nuefi = \"ipxe.efi\"\nscript = \"boot.ipxe\"\n\
     http_port = 8069\n"
        .to_string()
}

/// Every file below `dir` whose name ends in `.tmp` (or contains `.tmp.`).
fn tmp_files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tmp_files(&p));
        } else {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.contains(".tmp.") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn sigterm_during_lease_storm_and_downloads_loses_nothing_and_exits_0() {
    let host = Netns::new("cstop");
    let s = Scratch::new();
    let boot = s.file("srv/boot");
    std::fs::create_dir_all(&boot).expect("boot root");
    for (name, body) in [
        ("undionly.kpxe", "bios"),
        ("ipxe.efi", "uefi"),
        ("boot.ipxe", "#!ipxe\n"),
    ] {
        std::fs::write(boot.join(name), body).expect("boot file");
    }
    std::fs::write(boot.join("big.img"), vec![0x5au8; BIG]).expect("big file");
    let cfg = s.config(&config());
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = plug_guest(&host, "br-cs", "vcs0");
    guest.ok(&["ip", "addr", "add", "10.93.0.50/20", "dev", "eth0"]);

    // Slow downloads (rate-limited) so both are mid-transfer when SIGTERM comes.
    let mut http = guest
        .cmd(&[
            "curl",
            "-sS",
            "--limit-rate",
            "1M",
            "-o",
            "/dev/null",
            "http://10.93.0.1:8069/big.img",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl http");
    let mut tftp = guest
        .cmd(&[
            "curl",
            "-sS",
            "--limit-rate",
            "1M",
            "-o",
            "/dev/null",
            "tftp://10.93.0.1/big.img",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl tftp");

    let bin = dhcp_flood_bin();
    let mut storm = guest
        .cmd(&[
            bin.to_str().expect("utf-8"),
            "eth0",
            "1500",
            "71",
            "64",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flood");
    let reader = BufReader::new(storm.stdout.take().expect("stdout"));
    let mut acked = vec![];
    let mut stopped_at: Option<Instant> = None;
    for line in reader.lines() {
        acked.extend(parse_acks(&line.expect("line")));
        if stopped_at.is_none() && acked.len() >= 150 {
            assert!(
                http.try_wait().expect("http").is_none(),
                "HTTP download ended before SIGTERM"
            );
            assert!(
                tftp.try_wait().expect("tftp").is_none(),
                "TFTP download ended before SIGTERM"
            );
            d.signal(libc::SIGTERM);
            stopped_at = Some(Instant::now());
        }
    }
    let _ = storm.wait();
    let stopped_at = stopped_at
        .unwrap_or_else(|| panic!("the storm never reached 150 ACKs; log:\n{}", d.log_text()));
    assert!(acked.len() < 1500, "SIGTERM did not land mid-storm");

    let code = d
        .wait_exit(15)
        .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM; log:\n{}", d.log_text()));
    assert_eq!(code, Some(0), "clean stop exits 0; log:\n{}", d.log_text());
    let took = stopped_at.elapsed();
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    // The downloads were cut, not waited for (each has 24 s of data at 1 MB/s).
    let _ = http.kill();
    let _ = tftp.kill();
    let _ = http.wait();
    let _ = tftp.wait();

    let left = tmp_files(s.root());
    assert!(
        left.is_empty(),
        "half-written files after the stop: {left:?}"
    );

    // Restart on the same state: every ACKed lease, also those ACKed while stopping, is back.
    let _d2 = Daemon::start(&host, &s, &cfg, &[]);
    let leased = leases(&host, &s, &cfg);
    let by_mac: HashMap<&str, &str> = leased
        .iter()
        .map(|(_, m, i)| (m.as_str(), i.as_str()))
        .collect();
    for (mac, ip) in &acked {
        assert_eq!(
            by_mac.get(mac.as_str()),
            Some(&ip.as_str()),
            "ACKed lease {mac} {ip} lost across SIGTERM"
        );
    }
}
