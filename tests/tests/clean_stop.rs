//! Clean stops: SIGTERM in the middle of a DHCP lease storm and of TFTP and HTTP downloads loses
//! no ACKed lease, leaves no half-written (`*.tmp`) file, and exits 0 promptly.

use std::process::Stdio;

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::{assert_kept, Daemon, Storm};
use hostagent_tests::Scratch;
use testkit::Netns;

const BIG: usize = 24 << 20;

fn config() -> Config {
    Config::new("/state").network(
        Network::nat("lab", "br-cs", "10.93.0.1/20")
            .dhcp(Dhcp::new("10.93.1.0-10.93.15.250").lease_time("1h"))
            .pxe(Pxe::ipxe("/srv/boot").http_port(8069)),
    )
}

#[test]
fn sigterm_during_lease_storm_and_downloads_loses_nothing_and_exits_0() {
    let host = Netns::new("cstop");
    let s = Scratch::new();
    for (name, body) in [
        ("undionly.kpxe", "bios"),
        ("ipxe.efi", "uefi"),
        ("boot.ipxe", "#!ipxe\n"),
    ] {
        s.write(&format!("srv/boot/{name}"), body);
    }
    s.write("srv/boot/big.img", vec![0x5au8; BIG]);
    let cfg = s.config(config());
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-cs", "vcs0");
    guest.ok(&["ip", "addr", "add", "10.93.0.50/20", "dev", "eth0"]);

    // Slow downloads so both are mid-transfer when SIGTERM comes.
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
    // curl's --limit-rate does not slow TFTP (its lock-step exchange runs outside the transfer
    // loop the limit applies to): the smallest blocks do, 24 MiB in 8-byte blocks being 3
    // million round trips.
    let mut tftp = guest
        .cmd(&[
            "curl",
            "-sS",
            "--tftp-blksize",
            "8",
            "-o",
            "/dev/null",
            "tftp://10.93.0.1/big.img",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl tftp");

    let mut storm = Storm::start(&guest, 1500, 71, 64, 10);
    let mut acked = storm.first(150, &d);
    assert!(
        http.try_wait().expect("http").is_none(),
        "HTTP download ended before SIGTERM"
    );
    assert!(
        tftp.try_wait().expect("tftp").is_none(),
        "TFTP download ended before SIGTERM"
    );
    d.signal(libc::SIGTERM);
    // The downloads are cut, not waited for (the HTTP one has 24 s of data at 1 MB/s, the
    // TFTP one 3 million round trips).
    let code = d
        .wait_exit(15)
        .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM; log:\n{}", d.log_text()));
    assert_eq!(code, Some(0), "clean stop exits 0; log:\n{}", d.log_text());
    // The rest of the storm's ACKs (the pipe kept them): also those sent while stopping.
    acked.extend(storm.finish());
    assert!(acked.len() < 1500, "SIGTERM did not land mid-storm");
    let _ = http.kill();
    let _ = tftp.kill();
    let _ = http.wait();
    let _ = tftp.wait();

    let left: Vec<String> = s
        .files()
        .into_keys()
        .filter(|name| name.ends_with(".tmp") || name.contains(".tmp."))
        .collect();
    assert!(
        left.is_empty(),
        "half-written files after the stop: {left:?}"
    );

    // Restart on the same state: every ACKed lease, also those ACKed while stopping, is back.
    let _d2 = Daemon::start(&host, &s, &cfg, &[]);
    let leased = Cli::new(&host, &s, &cfg).leases();
    assert_kept(&leased, &acked, "across SIGTERM");
}
