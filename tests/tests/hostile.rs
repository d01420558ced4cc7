//! Hostile clients against the real `hostagent run` in a network namespace: malformed DHCP,
//! DHCP starvation, TFTP and HTTP abuse. Each test checks that the daemon keeps serving a good
//! client afterwards and that its memory and file descriptors stay bounded (read from
//! /proc/PID of the daemon, not from its own counters).
//!
//! TFTP/HTTP clients run on a thread that entered the daemon's namespace (setns), talking to
//! the bridge address; DHCP clients run in a guest namespace plugged into the bridge.
//! Leases on a bad disk (truncation at every byte, a corrupt byte, ENOSPC, kill -9) are covered
//! by pxe/tests/leases.rs and tests/tests/daemon.rs, and fuzzed by fuzz/ (dhcp_server replays
//! every journal it writes).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::{dhcp_raw, flood, Daemon};
use hostagent_tests::{hostagent_bin, Scratch};
use testkit::dhcp::{msg, to_hex, Packet};
use testkit::dhcp_client::udhcpc_once;
use testkit::http::{get, Response};
use testkit::tftp::{self, Client};
use testkit::{stderr, wait_for, Netns};

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-BOOT-ROOT";
const HTTP_PORT: u16 = 8069;
/// The daemon's defaults (pxe::config::TftpLimits, pxe::http): what the clamps must respect.
const MAX_BLKSIZE: usize = 8192;
const MAX_WINDOWSIZE: usize = 64;
const MAX_TRANSFERS: usize = 512;
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One network with DHCP (10 dynamic addresses + one reservation), TFTP and HTTP boot.
fn config(bridge: &str, net: &str) -> Config {
    Config::new("/state").network(
        Network::nat("lab", bridge, &format!("{net}.1/24"))
            .dhcp(
                Dhcp::new(&format!("{net}.100-{net}.109"))
                    .lease_time("1h")
                    .host("52:54:00:00:00:10", &format!("{net}.10"), Some("bastion")),
            )
            .pxe(Pxe::ipxe("/srv/boot").http_port(HTTP_PORT)),
    )
}

/// The boot root under the scratch --root, with symlinks out of it and a secret next to it.
/// Returns the content of `undionly.kpxe` (1 MiB, position-dependent bytes).
fn boot_tree(s: &Scratch) -> Vec<u8> {
    use std::os::unix::fs::symlink;
    let srv = s.file("srv");
    let root = srv.join("boot");
    std::fs::create_dir_all(root.join("sub")).expect("boot root");
    std::fs::write(srv.join("secret"), SECRET).expect("secret");
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("undionly.kpxe"), &big).expect("file");
    std::fs::write(root.join("ipxe.efi"), b"EFI").expect("file");
    std::fs::write(root.join("boot.ipxe"), b"#!ipxe\nboot\n").expect("file");
    symlink("../secret", root.join("link-out")).expect("symlink");
    symlink(srv.join("secret"), root.join("abs-out")).expect("symlink");
    symlink("../../secret", root.join("sub/up")).expect("symlink");
    symlink("..", root.join("dir-out")).expect("symlink");
    big
}

/// Every spelling of "the file next to the root" a client might try.
fn traversal_names(s: &Scratch) -> Vec<String> {
    let abs = s.file("srv/secret").to_str().expect("utf-8").to_string();
    vec![
        "../secret".into(),
        "/../secret".into(),
        "//../secret".into(),
        "sub/../../secret".into(),
        "./../secret".into(),
        "..\\secret".into(),
        "sub\\..\\..\\secret".into(),
        "..//secret".into(),
        "../secret/".into(),
        "link-out".into(),
        "abs-out".into(),
        "sub/up".into(),
        "dir-out/secret".into(),
        "/dir-out/secret".into(),
        abs.clone(),
        format!("/{abs}"),
        "%2e%2e/secret".into(),
        "．．/secret".into(),
        "..%00/secret".into(),
        "../secret\u{0}undionly.kpxe".into(),
    ]
}

/// Open descriptors of a process (counted in /proc, independent of the daemon's own stats).
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("read /proc/PID/fd")
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The hostagent process itself (`ip netns exec` execs it, so the child pid is the daemon).
fn daemon_pid(d: &Daemon) -> i32 {
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).expect("daemon exe");
    assert_eq!(
        exe.file_name(),
        hostagent_bin().file_name(),
        "child {} is not hostagent",
        d.pid()
    );
    d.pid()
}

/// A DHCPDISCOVER from `mac`, broadcast flag set.
fn discover(mac: [u8; 6]) -> Vec<u8> {
    Packet::new(msg::DISCOVER, mac)
        .xid(0x5eed_0001)
        .broadcast()
        .bytes()
}

#[test]
fn malformed_dhcp_is_dropped_and_counted_and_a_good_client_is_served_afterwards() {
    let host = Netns::new("hmal");
    let s = Scratch::new();
    boot_tree(&s);
    let cfg = s.config(config("br-hmal", "10.94.0"));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let guest = host.plug("br-hmal", "vhmal0");

    let mac = [0x02, 0xba, 0xd0, 0, 0, 1];
    let good = discover(mac);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    let mut overflowing = good.clone();
    overflowing.pop();
    overflowing.extend_from_slice(&[60, 200, b'a', b'b']);
    // 1,500 bytes of options whose last one claims more than is left.
    let mut blob_overflow = good[..243].to_vec();
    for _ in 0..5 {
        blob_overflow.push(43);
        blob_overflow.push(255);
        blob_overflow.extend_from_slice(&[0x41; 255]);
    }
    blob_overflow.extend_from_slice(&[43, 250, 1, 2, 3]);
    // 1,500 bytes of well-formed options and no message type.
    let mut blob_no_type = good[..240].to_vec();
    while blob_no_type.len() < 1740 {
        blob_no_type.extend_from_slice(&[1, 1, 1]);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad_hardware", with(&|p| p[2] = 17)),
        ("bad_hardware", with(&|p| p[2] = 255)),
        ("too_short", good[..200].to_vec()),
        ("too_short", good[..239].to_vec()),
        (
            "bad_cookie",
            with(&|p| p[236..240].copy_from_slice(&[0, 0, 0, 0])),
        ),
        ("bad_option", overflowing),
        ("bad_option", blob_overflow),
        (
            "bad_option",
            with(
                &|p| p.insert(243, 57), /* 57 with a 1-byte length runs past */
            ),
        ),
        ("bad_message_type", blob_no_type),
        ("bad_message_type", with(&|p| p[242] = 99)),
        ("server_message", with(&|p| p[242] = 2)),
        ("not_request", with(&|p| p[0] = 2)),
    ];
    let hex: Vec<String> = cases.iter().map(|(_, p)| to_hex(p)).collect();
    let args: Vec<&str> = hex.iter().map(String::as_str).collect();
    dhcp_raw(&guest, &args);

    let mut expected: std::collections::BTreeMap<&str, u64> = Default::default();
    for (reason, _) in &cases {
        *expected.entry(reason).or_default() += 1;
    }
    let counted = wait_for(10, || {
        let st = cli.server("lab");
        let dropped = &st["dhcp"]["dropped_malformed"];
        expected
            .iter()
            .all(|(r, n)| dropped[*r].as_u64() == Some(*n))
            .then_some(st)
    });
    let st = cli.server("lab");
    assert!(
        counted.is_some(),
        "drops not counted as {expected:?}: {}",
        st["dhcp"]
    );
    assert_eq!(
        counter(&st, &["dhcp", "offers"]),
        0,
        "a malformed packet was answered: {}",
        st["dhcp"]
    );
    d.assert_alive();

    // A well-behaved client right after is served normally.
    let acks = flood(&guest, 1, 0x44, 1, 15);
    assert_eq!(
        acks.len(),
        1,
        "good client not served after malformed packets; log:\n{}",
        d.log_text()
    );
    d.assert_alive();
}

#[test]
fn dhcp_starvation_exhausts_the_pool_but_reservations_are_still_served() {
    let host = Netns::new("hsta");
    let s = Scratch::new();
    boot_tree(&s);
    let cfg = s.config(config("br-hsta", "10.95.0"));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let pid = daemon_pid(&d);
    let guest = host.plug("br-hsta", "vhsta0");
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));

    // 2,000 clients with distinct MACs race for 10 addresses.
    // Window 32 keeps the flood under the per-port kernel limit (tests/tests/ratelimit.rs covers that).
    let acks = flood(&guest, 2000, 0x5a, 32, 25);
    assert_eq!(
        acks.len(),
        10,
        "every dynamic address handed out exactly once: {acks:?}"
    );
    let mut ips: Vec<&str> = acks.iter().map(|(_, ip)| ip.as_str()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 10, "an address was ACKed twice: {acks:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.95.0.10")), "{ips:?}");
    let st = cli.server("lab");
    assert!(
        counter(&st, &["dhcp", "exhausted"]) > 0,
        "exhaustion not counted: {}",
        st["dhcp"]
    );
    d.assert_alive();

    // The reserved guest still gets its address: a real client (busybox udhcpc).
    let reserved = host.plug("br-hsta", "vhsta1");
    let got = udhcpc_once(&reserved, s.root(), "reserved", Some("52:54:00:00:00:10"))
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()));
    assert_eq!(got, "10.95.0.10");

    // Bounded: nothing per refused client is kept open or grows without bound.
    // (A status request or a transfer may still be closing: give fds a few seconds to settle.)
    assert!(
        wait_for(5, || (fd_count(pid) <= fds0 + 2).then_some(())).is_some(),
        "fds {} → {}",
        fds0,
        fd_count(pid)
    );
    assert!(
        rss_kib(pid) <= rss0 + 32 * 1024,
        "VmRSS {rss0} KiB → {} KiB",
        rss_kib(pid)
    );
}

/// Per-MAC and per-port rate limits: one MAC sending 1,000 DISCOVERs gets at most a handful of
/// answers, and one bridge port sending DISCOVERs for 1,000 MACs cannot take more than its share.
#[test]
fn dhcp_rate_limits_hold_per_mac_and_per_port() {
    let host = Netns::new("hrat");
    let s = Scratch::new();
    boot_tree(&s);
    let cfg = s.config(config("br-hrat", "10.96.0"));
    let _d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let guest = host.plug("br-hrat", "vhrat0");

    let one = to_hex(&discover([0x02, 0x77, 0, 0, 0, 1]));
    let started = Instant::now();
    dhcp_raw(&guest, &["--repeat", "1000", &one]);
    let secs = started.elapsed().as_secs() + 1;
    std::thread::sleep(Duration::from_secs(1));
    let st = cli.server("lab");
    let offers = counter(&st, &["dhcp", "offers"]);
    assert!(
        offers <= 10 * secs,
        "one MAC got {offers} offers in ~{secs} s: {}",
        st["dhcp"]
    );

    let many: Vec<String> = (0..1000u32)
        .map(|i| {
            let b = i.to_be_bytes();
            to_hex(&discover([0x02, 0x78, b[0], b[1], b[2], b[3]]))
        })
        .collect();
    let args: Vec<&str> = many.iter().map(String::as_str).collect();
    let started = Instant::now();
    dhcp_raw(&guest, &args);
    let secs = started.elapsed().as_secs() + 1;
    std::thread::sleep(Duration::from_secs(1));
    let st = cli.server("lab");
    let answered = counter(&st, &["dhcp", "offers"]) - offers;
    assert!(
        answered <= 100 * secs,
        "one port got {answered} answers in ~{secs} s: {}",
        st["dhcp"]
    );
}

// ---------------------------------------------------------------------------------------------
// TFTP

/// A whole file over TFTP with a real client (curl), as the good client after an attack.
fn curl_tftp(host: &Netns, server: &str, name: &str) -> Vec<u8> {
    let out = host.run(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        &format!("tftp://{server}/{name}"),
    ]);
    assert!(out.status.success(), "curl tftp {name}: {}", stderr(&out));
    out.stdout
}

#[test]
fn tftp_abuse_is_refused_clamped_timed_out_and_bounded() {
    let host = Netns::new("htftp");
    let s = Scratch::new();
    let big = boot_tree(&s);
    let names = traversal_names(&s);
    let cfg = s.config(config("br-htftp", "10.97.0"));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let pid = daemon_pid(&d);
    let server: SocketAddr = "10.97.0.1:69".parse().expect("addr");
    assert!(
        wait_for(15, || cli.server("lab")["tftp"]["listen"]
            .is_string()
            .then_some(()))
        .is_some(),
        "TFTP not serving; log:\n{}",
        d.log_text()
    );

    // 1. Traversal in every spelling: an ERROR, never a byte of DATA.
    host.enter(move || {
        for name in names {
            let mut c = Client::new(server);
            c.rrq(name.as_bytes(), "octet", &[]);
            match c.recv(Duration::from_secs(3)) {
                Some(tftp::Packet::Error(code, text)) => {
                    assert!(
                        // 1 not found / 2 access violation; a NUL ends the name, so what
                        // follows is read as the mode and refused as such (0).
                        matches!(code, 1 | 2) || (name.contains('\0') && code == 0),
                        "{name:?}: error code {code}"
                    );
                    assert!(!text.as_bytes().windows(SECRET.len()).any(|w| w == SECRET));
                }
                None => panic!("no answer to {name:?}"),
                Some(other) => panic!("{name:?} answered with {other:?}"),
            }
        }
    });

    // 2. windowsize 65535 × blksize 65464: clamped in the OACK, and the window honours the clamp.
    host.enter(move || {
        let mut c = Client::new(server);
        let opts = [
            ("blksize", "65464"),
            ("windowsize", "65535"),
            ("tsize", "0"),
        ];
        c.rrq(b"undionly.kpxe", "octet", &opts);
        let oack = c.recv(Duration::from_secs(3)).expect("OACK");
        assert!(
            matches!(oack, tftp::Packet::Oack(_)),
            "expected OACK, got {oack:?}"
        );
        let get = |k: &str| oack.oack_value(k).and_then(|v| v.parse::<usize>().ok());
        let (blk, win) = (
            get("blksize").expect("blksize acked"),
            get("windowsize").expect("windowsize acked"),
        );
        assert!(
            (8..=MAX_BLKSIZE).contains(&blk),
            "blksize {blk} not clamped to ≤ {MAX_BLKSIZE}"
        );
        assert!(
            (1..=MAX_WINDOWSIZE).contains(&win),
            "windowsize {win} not clamped to ≤ {MAX_WINDOWSIZE}"
        );
        assert_eq!(get("tsize"), Some(1 << 20));
        c.ack(0);
        let mut got = 0u16;
        while let Some(p) = c.recv(Duration::from_millis(400)) {
            let tftp::Packet::Data(n, data) = p else {
                panic!("expected DATA, got {p:?}")
            };
            assert!(
                data.len() <= blk,
                "DATA of {} bytes over blksize {blk}",
                data.len()
            );
            if n == got + 1 {
                got += 1;
            }
            if got as usize >= win {
                break;
            }
        }
        assert!(
            got >= 1 && got as usize <= win,
            "{got} blocks for a window of {win}"
        );
        c.error(0, "bye");
    });

    // 3. A client that never ACKs: the server retransmits a bounded number of times, then gives up.
    let never_acked = host.enter(move || {
        let mut c = Client::new(server);
        c.rrq(b"undionly.kpxe", "octet", &[("timeout", "1")]);
        let start = Instant::now();
        let (mut copies, mut gave_up) = (0, false);
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(p) = c.recv(Duration::from_secs(1)) {
                // With an option the first packet is the OACK (RFC 2347); never anything past it
                // but a final ERROR when the server gives up.
                assert!(!gave_up, "packet after the final ERROR: {p:?}");
                match p {
                    tftp::Packet::Oack(_) => copies += 1,
                    tftp::Packet::Error(..) => gave_up = true,
                    other => {
                        panic!("{other:?} sent to a client that never acknowledged the OACK")
                    }
                }
            }
        }
        copies
    });
    assert!(
        (2..=8).contains(&never_acked),
        "OACK sent {never_acked} times to a silent client"
    );
    let st = cli.server("lab");
    assert!(
        counter(&st, &["tftp", "timeouts"]) >= 1,
        "timeout not counted: {}",
        st["tftp"]
    );

    // 4. ERROR mid-transfer: the transfer stops at once (no retransmission afterwards).
    let aborts_before = counter(&cli.server("lab"), &["tftp", "client_aborts"]);
    host.enter(move || {
        let wait = Duration::from_secs(3);
        let mut c = Client::new(server);
        c.rrq(b"undionly.kpxe", "octet", &[]);
        let p = c.recv(wait);
        assert!(matches!(p, Some(tftp::Packet::Data(1, _))), "DATA 1: {p:?}");
        c.ack(1);
        let p = c.recv(wait);
        assert!(matches!(p, Some(tftp::Packet::Data(2, _))), "DATA 2: {p:?}");
        c.error(0, "client gave up");
        // The default timeout is 1 s: an ignored ERROR would show as DATA 2 again within 3 s.
        if let Some(p) = c.recv(wait) {
            panic!("server kept sending after the client's ERROR: {p:?}");
        }
    });
    let st = cli.server("lab");
    assert!(
        counter(&st, &["tftp", "client_aborts"]) > aborts_before,
        "abort not counted: {}",
        st["tftp"]
    );

    // 5. Thousands of half-open requests: bounded transfers, fds and memory; all reclaimed.
    assert!(
        wait_for(20, || (counter(&cli.server("lab"), &["tftp", "active"])
            == 0)
            .then_some(()))
        .is_some()
    );
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));
    host.enter(move || {
        let clients: Vec<Client> = (0..20).map(|_| Client::new(server)).collect();
        for _ in 0..100 {
            for c in &clients {
                c.rrq(
                    b"undionly.kpxe",
                    "octet",
                    &[("timeout", "1"), ("blksize", "8192")],
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Keep the sockets open (never reading, never ACKing) until the server gave up on them.
        std::thread::sleep(Duration::from_secs(2));
        drop(clients);
    });
    let peak_fds = fd_count(pid);
    let peak_rss = rss_kib(pid);
    let st = cli.server("lab");
    assert!(
        peak_fds <= fds0 + 2 * MAX_TRANSFERS + 8,
        "fds {fds0} → {peak_fds} with ≤ {MAX_TRANSFERS} transfers (a socket + a file each)"
    );
    assert!(
        counter(&st, &["tftp", "active"]) as usize <= MAX_TRANSFERS,
        "{}",
        st["tftp"]
    );
    assert!(
        counter(&st, &["tftp", "busy"]) >= 1,
        "2,000 requests never hit max_transfers: {}",
        st["tftp"]
    );
    let drained = wait_for(60, || {
        (counter(&cli.server("lab"), &["tftp", "active"]) == 0).then_some(())
    });
    assert!(
        drained.is_some(),
        "half-open transfers never timed out: {}",
        cli.server("lab")["tftp"]
    );
    assert!(
        wait_for(5, || (fd_count(pid) <= fds0 + 2).then_some(())).is_some(),
        "fds not reclaimed: {fds0} before, {} after",
        fd_count(pid)
    );
    let rss1 = rss_kib(pid);
    assert!(
        peak_rss <= rss0 + 96 * 1024,
        "VmRSS {rss0} KiB → peak {peak_rss} KiB"
    );
    assert!(
        rss1 <= rss0 + 64 * 1024,
        "VmRSS {rss0} KiB → {rss1} KiB after the storm"
    );
    d.assert_alive();

    // And a real client still gets the whole file.
    assert_eq!(
        curl_tftp(&host, "10.97.0.1", "undionly.kpxe"),
        big,
        "file damaged after the abuse"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Whatever the Range header, the answer is consistent with the file: 200 = the whole file,
/// 206 = exactly the slice Content-Range names, 416 = `bytes */len`.
fn check_range_answer(a: &Response, file: &[u8], range: &str) {
    let len = file.len();
    match a.status {
        200 => assert!(
            a.body == file,
            "{range}: 200 with {} bytes of {len}",
            a.body.len()
        ),
        206 => {
            let cr = a
                .header("content-range")
                .unwrap_or_else(|| panic!("{range}: 206 without Content-Range"));
            let spec = cr.strip_prefix("bytes ").expect("bytes unit");
            let (span, total) = spec.split_once('/').expect("a/b");
            let (start, end) = span.split_once('-').expect("s-e");
            let (start, end): (usize, usize) =
                (start.parse().expect("start"), end.parse().expect("end"));
            assert_eq!(total, len.to_string(), "{range}");
            assert!(start <= end && end < len, "{range}: {cr}");
            assert!(
                a.body == file[start..=end],
                "{range}: body is not bytes {start}-{end}"
            );
        }
        416 => assert_eq!(
            a.header("content-range"),
            Some(format!("bytes */{len}").as_str()),
            "{range}"
        ),
        431 | 400 => {}
        other => panic!("{range}: status {other}"),
    }
}

#[test]
fn http_abuse_traversal_absurd_ranges_and_idle_connections() {
    let host = Netns::new("hhttp");
    let s = Scratch::new();
    let big = boot_tree(&s);
    let names = traversal_names(&s);
    let cfg = s.config(config("br-hhttp", "10.98.0"));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let pid = daemon_pid(&d);
    let server: SocketAddr = format!("10.98.0.1:{HTTP_PORT}").parse().expect("addr");
    assert!(
        wait_for(15, || cli.server("lab")["http"]["listen"]
            .is_string()
            .then_some(()))
        .is_some(),
        "HTTP not serving; log:\n{}",
        d.log_text()
    );

    // 1. Traversal, raw and percent-encoded in every spelling.
    host.enter(move || {
        let mut targets: Vec<String> = vec![
            "/%2e%2e/secret".into(),
            "/%2E%2E%2Fsecret".into(),
            "/..%2fsecret".into(),
            "/%2e%2e%5csecret".into(),
            "/sub/%2e%2e/%2e%2e/secret".into(),
            "/%252e%252e/secret".into(),
            "/%c0%ae%c0%ae/secret".into(),
            "/..%00/secret".into(),
            "/%zz/../secret".into(),
            "/sub/up?x=1".into(),
        ];
        targets.extend(
            names
                .iter()
                .map(|n| format!("/{}", n.replace('\u{0}', "%00").replace(' ', "%20"))),
        );
        for t in targets {
            let a = get(server, &t, "");
            assert!(
                matches!(a.status, 400 | 403 | 404),
                "{t}: status {}",
                a.status
            );
            assert!(
                !a.body.windows(SECRET.len()).any(|w| w == SECRET),
                "{t} leaked the secret"
            );
        }
    });

    // 2. Absurd Range headers: never a crash, never bytes outside the file.
    let file = big.clone();
    host.enter(move || {
        let many: String = (0..2000)
            .map(|i| format!("{}-{}", i * 2, i * 2 + 1))
            .collect::<Vec<_>>()
            .join(",");
        let ranges = [
            "bytes=99999999999999999999-".to_string(),
            "bytes=18446744073709551615-".into(),
            "bytes=0-18446744073709551615".into(),
            "bytes=-18446744073709551615".into(),
            "bytes=18446744073709551615-18446744073709551615".into(),
            "bytes=1048575-".into(),
            "bytes=1048576-".into(),
            "bytes=-0".into(),
            "bytes=5-1".into(),
            "bytes=--1".into(),
            "bytes=1--2".into(),
            "bytes=0x10-0x20".into(),
            "bytes= 7 - 9 ".into(),
            "bytes=0-0".into(),
            format!("bytes={many}"),
            format!("bytes=0-{}", "9".repeat(4000)),
        ];
        for r in &ranges {
            let a = get(server, "/undionly.kpxe", &format!("Range: {r}\r\n"));
            check_range_answer(&a, &file, r);
        }
        let a = get(
            server,
            "/undionly.kpxe",
            "Range: bytes=0-18446744073709551615\r\n",
        );
        assert_eq!(a.status, 206, "0-u64::MAX is the whole file as a range");
        let a = get(
            server,
            "/undionly.kpxe",
            "Range: bytes=18446744073709551615-\r\n",
        );
        assert_eq!(a.status, 416);
    });
    d.assert_alive();

    // 3. Slowloris: 200 silent connections and one that dribbles its headers a byte a second
    // are all closed by the server within the idle timeout; the fds come back.
    let fds0 = fd_count(pid);
    let closed_after = host.enter(move || {
        let start = Instant::now();
        let mut conns: Vec<TcpStream> = (0..200)
            .map(|_| {
                let c =
                    TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
                c.set_nonblocking(true).expect("nonblocking");
                c
            })
            .collect();
        let mut dribbler =
            TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        dribbler.set_nonblocking(true).expect("nonblocking");
        std::thread::sleep(Duration::from_millis(500));
        let opened = fd_count(pid);
        assert!(
            opened >= fds0 + 150,
            "the server did not accept the idle connections ({fds0} → {opened} fds)"
        );
        let deadline = HTTP_IDLE_TIMEOUT + Duration::from_secs(8);
        let header = b"GET /undionly.kpxe HTTP/1.1\r\nHost: boot\r\nX-Slow: ";
        let mut dribbled = 0;
        let mut dribbler_closed = None;
        let mut last_close = Duration::ZERO;
        while start.elapsed() < deadline && (!conns.is_empty() || dribbler_closed.is_none()) {
            conns.retain_mut(|c| {
                let mut b = [0u8; 64];
                match c.read(&mut b) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    Err(_) => false,
                }
            });
            if conns.is_empty() && last_close.is_zero() {
                last_close = start.elapsed();
            }
            if dribbler_closed.is_none() {
                let byte = [header.get(dribbled).copied().unwrap_or(b'x')];
                dribbled += 1;
                let mut b = [0u8; 64];
                let gone = match dribbler.write(&byte) {
                    Err(_) => true,
                    Ok(_) => match dribbler.read(&mut b) {
                        Ok(0) => true,
                        // A 408 before the close is fine: the next read sees the EOF.
                        Ok(_) => false,
                        Err(e) => e.kind() != ErrorKind::WouldBlock,
                    },
                };
                if gone {
                    dribbler_closed = Some(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
        assert!(
            conns.is_empty(),
            "{} idle connections still open after {deadline:?}",
            conns.len()
        );
        let dribbler_closed = dribbler_closed.unwrap_or_else(|| {
            panic!("a client dribbling headers was never cut ({dribbled} bytes)")
        });
        (last_close, dribbler_closed)
    });
    assert!(
        closed_after.0 <= HTTP_IDLE_TIMEOUT + Duration::from_secs(8),
        "{closed_after:?}"
    );
    assert!(
        wait_for(5, || (fd_count(pid) <= fds0 + 2).then_some(())).is_some(),
        "fds not back to baseline: {fds0} before, {} after",
        fd_count(pid)
    );
    assert_eq!(counter(&cli.server("lab"), &["http", "connections"]), 0);
    d.assert_alive();

    // A good client is still served the whole file.
    let a = host.enter(move || get(server, "/undionly.kpxe", ""));
    assert_eq!(a.status, 200);
    assert!(a.body == big, "file damaged");
}
