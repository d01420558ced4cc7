//! TFTP and HTTP boot file services on loopback, driven by real clients (curl, atftp) and by
//! small raw clients where the test needs to see individual packets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pxe::config::TftpLimits;
use pxe::http::{HttpServer, HttpStats};
use pxe::saferoot::SafeRoot;
use pxe::tftp::{TftpServer, TftpStats};
use testkit::http::{exchange, get, header, Response};
use testkit::tftp::{Client, Packet, WRQ};
use testkit::{sha256, wait_until};
use tokio::sync::watch;

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-ROOT";
const BIG: usize = 5 * 1024 * 1024;

/// A boot root with a random 5 MiB file, a small file, a directory, and symlinks that point
/// inside and outside the root; plus a secret file outside it.
struct Tree {
    dir: tempfile::TempDir,
    root: PathBuf,
    big: Vec<u8>,
    mid: Vec<u8>,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).expect("mkdir");
    let mut big = vec![0u8; BIG];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut big))
        .expect("urandom");
    std::fs::write(root.join("big.bin"), &big).expect("write");
    let mid = big[..300_000].to_vec();
    std::fs::write(root.join("mid.bin"), &mid).expect("write");
    std::fs::write(root.join("sub/exact1024.bin"), &big[..1024]).expect("write");
    std::fs::write(dir.path().join("secret"), SECRET).expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc-hostname")).expect("symlink");
    std::os::unix::fs::symlink(dir.path(), root.join("escdir")).expect("symlink");
    std::os::unix::fs::symlink("big.bin", root.join("inside")).expect("symlink");
    Tree {
        dir,
        root,
        big,
        mid,
    }
}

/// A server running on its own runtime thread; stops (and joins) on drop.
struct Running<S> {
    addr: SocketAddr,
    stats: Arc<S>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Server logs go to the test's captured output (`RUST_LOG=pxe=debug` to see more).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pxe=info")),
        )
        .with_test_writer()
        .try_init();
}

fn start_tftp(root: &Path, limits: TftpLimits, timeout: Duration) -> Running<TftpStats> {
    init_logs();
    let root = SafeRoot::new(root).expect("root");
    let (stop, rx) = watch::channel(false);
    let (tx, started) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
            let server = TftpServer::bind(addr, root, limits).await.expect("bind");
            let server = server.with_default_timeout(timeout);
            tx.send((server.local_addr(), server.stats()))
                .expect("send");
            server.run(rx).await;
        });
    });
    let (addr, stats) = started.recv().expect("server started");
    Running {
        addr,
        stats,
        stop,
        thread: Some(thread),
    }
}

fn start_http(root: &Path, idle: Duration) -> Running<HttpStats> {
    init_logs();
    let root = SafeRoot::new(root).expect("root");
    let (stop, rx) = watch::channel(false);
    let (tx, started) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
            let server = HttpServer::bind(addr, root)
                .await
                .expect("bind")
                .with_idle_timeout(idle);
            tx.send((server.local_addr(), server.stats()))
                .expect("send");
            server.run(rx).await;
        });
    });
    let (addr, stats) = started.recv().expect("server started");
    Running {
        addr,
        stats,
        stop,
        thread: Some(thread),
    }
}

fn limits() -> TftpLimits {
    TftpLimits {
        max_blksize: 8192,
        max_windowsize: 64,
        max_transfers: 64,
        retries: 3,
    }
}

/// Wait (polling every 20 ms) until `cond` holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let held = wait_until(limit, Duration::from_millis(20), || cond().then_some(()));
    assert!(held.is_some(), "timed out waiting for {what}");
}

const WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// TFTP with real clients

#[test]
fn tftp_curl_downloads_5mib_intact() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let out = t.dir.path().join("curl.out");
    let url = format!("tftp://{}/big.bin", srv.addr);
    let status = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .expect("curl");
    assert!(status.success(), "curl failed: {status}");
    assert_eq!(sha256(&out), sha256(&t.root.join("big.bin")));
    assert_eq!(std::fs::read(&out).expect("read"), t.big);
    wait_for("completion counted", WAIT, || {
        srv.stats.snapshot().completed == 1
    });
    let s = srv.stats.snapshot();
    assert_eq!(s.bytes_sent, BIG as u64);
    assert_eq!((s.errors, s.refused, s.active), (0, 0, 0));
}

fn atftp_get(addr: SocketAddr, remote: &str, local: &Path, opts: &[&str]) -> std::process::Child {
    let mut cmd = Command::new("atftp");
    for o in opts {
        cmd.args(["--option", o]);
    }
    cmd.args(["--get", "-r", remote, "-l"])
        .arg(local)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().expect("atftp")
}

#[test]
fn tftp_atftp_windowsize16_downloads_5mib_intact() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let out = t.dir.path().join("atftp.out");
    let child = atftp_get(
        srv.addr,
        "big.bin",
        &out,
        &["blksize 1468", "windowsize 16"],
    );
    let res = child.wait_with_output().expect("atftp");
    assert!(
        res.status.success(),
        "atftp: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(sha256(&out), sha256(&t.root.join("big.bin")));
    assert_eq!(std::fs::read(&out).expect("read"), t.big);
    wait_for("completion counted", WAIT, || {
        srv.stats.snapshot().completed == 1
    });
}

#[test]
fn tftp_24_parallel_atftp_clients_all_get_correct_files() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let children: Vec<_> = (0..24)
        .map(|i| {
            let out = t.dir.path().join(format!("par{i}.out"));
            let opts: &[&str] = match i % 3 {
                0 => &["blksize 1468", "windowsize 16"],
                1 => &["blksize 512"],
                _ => &["blksize 8192", "windowsize 4", "tsize 0"],
            };
            (out.clone(), atftp_get(srv.addr, "mid.bin", &out, opts))
        })
        .collect();
    for (out, child) in children {
        let res = child.wait_with_output().expect("atftp");
        assert!(
            res.status.success(),
            "atftp: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(
            std::fs::read(&out).expect("read"),
            t.mid,
            "{}",
            out.display()
        );
    }
    // `active` drops just after `completed` rises: wait for both.
    wait_for("all completions counted", WAIT, || {
        let s = srv.stats.snapshot();
        s.completed == 24 && s.active == 0
    });
    let s = srv.stats.snapshot();
    assert_eq!(s.bytes_sent, 24 * t.mid.len() as u64);
    assert_eq!((s.errors, s.busy, s.active), (0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// TFTP path rules

fn assert_tftp_refused(addr: SocketAddr, name: &[u8], code: u16) {
    let mut c = Client::new(addr);
    c.rrq(name, "octet", &[("tsize", "0")]);
    match c.recv(WAIT) {
        Some(Packet::Error(got, _)) => {
            assert_eq!(got, code, "{:?}", String::from_utf8_lossy(name))
        }
        other => panic!(
            "{:?}: expected ERROR, got {other:?}",
            String::from_utf8_lossy(name)
        ),
    }
    // Nothing else follows: no OACK, no DATA.
    assert_eq!(c.recv(Duration::from_millis(200)), None);
}

#[test]
fn tftp_traversal_and_escaping_symlinks_are_refused() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let long = "a/".repeat(600) + "x";
    let names: Vec<&[u8]> = vec![
        b"../secret",
        b"sub/../../secret",
        b"/../secret",
        b"..\\secret",
        b"..",
        b"escape",
        b"etc-hostname",
        b"escdir/secret",
        long.as_bytes(),
        b"\xff\xfe",
    ];
    for name in &names {
        assert_tftp_refused(srv.addr, name, 2);
    }
    assert_tftp_refused(srv.addr, b"sub", 1);
    assert_tftp_refused(srv.addr, b"missing", 1);
    // Missing names are answered "file not found" and counted apart from refusals.
    wait_for("refusals counted", WAIT, || {
        let s = srv.stats.snapshot();
        s.refused == names.len() as u64 && s.not_found == 2
    });
    let s = srv.stats.snapshot();
    assert_eq!((s.bytes_sent, s.completed), (0, 0));
}

#[test]
fn tftp_serves_symlink_inside_root_and_leading_slash() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    for name in ["inside", "/inside", "/big.bin"] {
        let out = t.dir.path().join("inside.out");
        let url = format!("tftp://{}/{name}", srv.addr);
        let ok = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--tftp-blksize", "8192", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .expect("curl");
        assert!(ok.success(), "{name}");
        assert_eq!(std::fs::read(&out).expect("read"), t.big, "{name}");
    }
}

#[test]
fn tftp_write_requests_and_netascii_are_refused() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.request(WRQ, b"new.bin", "octet", &[]);
    assert!(matches!(c.recv(WAIT), Some(Packet::Error(2, _))));
    let mut c = Client::new(srv.addr);
    c.rrq(b"mid.bin", "netascii", &[]);
    assert!(matches!(c.recv(WAIT), Some(Packet::Error(0, _))));
    assert!(!t.root.join("new.bin").exists());
    assert_eq!(srv.stats.snapshot().refused, 2);
}

// ---------------------------------------------------------------------------------------------
// TFTP protocol behaviour, packet by packet

#[test]
fn tftp_client_error_after_oack_ends_transfer_at_once() {
    let t = tree();
    // Default timeout 1 s: a server that ignored the ERROR would resend its OACK within the
    // 1.5 s we listen.
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.rrq(b"big.bin", "octet", &[("blksize", "1468"), ("tsize", "0")]);
    let oack = c.recv(WAIT).expect("oack");
    assert_eq!(oack.oack_value("tsize"), Some(BIG.to_string().as_str()));
    assert_eq!(srv.stats.snapshot().active, 1);
    c.error(8, "tsize probe");
    assert_eq!(
        c.recv(Duration::from_millis(1500)),
        None,
        "server kept sending after ERROR"
    );
    let s = srv.stats.snapshot();
    assert_eq!(
        (s.client_aborts, s.active, s.completed, s.errors),
        (1, 0, 0, 0)
    );
}

#[test]
fn tftp_client_error_mid_transfer_ends_it_at_once() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.rrq(b"big.bin", "octet", &[("blksize", "1024")]);
    assert_eq!(
        c.recv(WAIT).expect("oack").oack_value("blksize"),
        Some("1024")
    );
    c.ack(0);
    for block in 1..=3u16 {
        match c.recv(WAIT) {
            Some(Packet::Data(n, d)) => {
                assert_eq!(n, block);
                let at = (block as usize - 1) * 1024;
                assert_eq!(d, t.big[at..at + 1024]);
            }
            other => panic!("expected DATA {block}, got {other:?}"),
        }
        if block < 3 {
            c.ack(block);
        }
    }
    c.error(0, "user cancelled");
    assert_eq!(
        c.recv(Duration::from_millis(1500)),
        None,
        "server kept sending after ERROR"
    );
    let s = srv.stats.snapshot();
    assert_eq!((s.client_aborts, s.active), (1, 0));
    assert_eq!(s.bytes_sent, 2048, "only acknowledged blocks count");
}

#[test]
fn tftp_windowsize_sends_a_window_and_resends_after_an_early_ack() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.rrq(
        b"mid.bin",
        "octet",
        &[("windowsize", "4"), ("tsize", "0"), ("blksize", "512")],
    );
    let oack = c.recv(WAIT).expect("oack");
    assert_eq!(oack.oack_value("windowsize"), Some("4"));
    assert_eq!(
        oack.oack_value("tsize"),
        Some(t.mid.len().to_string().as_str())
    );
    c.ack(0);
    let mut got = Vec::new();
    for _ in 0..4 {
        match c.recv(WAIT) {
            Some(Packet::Data(n, _)) => got.push(n),
            other => panic!("expected DATA, got {other:?}"),
        }
    }
    assert_eq!(got, [1, 2, 3, 4], "four blocks before any ACK");
    assert_eq!(
        c.recv(Duration::from_millis(300)),
        None,
        "no fifth block before the ACK"
    );
    // RFC 7440: an ACK for block 2 means 3 and 4 were lost: resend from 3.
    c.ack(2);
    let mut got = Vec::new();
    for _ in 0..4 {
        match c.recv(WAIT) {
            Some(Packet::Data(n, d)) => {
                let at = (n as usize - 1) * 512;
                assert_eq!(d, t.mid[at..at + 512]);
                got.push(n)
            }
            other => panic!("expected DATA, got {other:?}"),
        }
    }
    assert_eq!(got, [3, 4, 5, 6]);
    c.error(0, "done");
}

#[test]
fn tftp_options_are_clamped_to_limits() {
    let t = tree();
    let lim = TftpLimits {
        max_blksize: 1024,
        max_windowsize: 8,
        max_transfers: 8,
        retries: 3,
    };
    let srv = start_tftp(&t.root, lim, Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.rrq(
        b"mid.bin",
        "octet",
        &[("blksize", "1468"), ("windowsize", "64")],
    );
    let oack = c.recv(WAIT).expect("oack");
    assert_eq!(oack.oack_value("blksize"), Some("1024"));
    assert_eq!(oack.oack_value("windowsize"), Some("8"));
    c.ack(0);
    for block in 1..=8u16 {
        match c.recv(WAIT) {
            Some(Packet::Data(n, d)) => assert_eq!((n, d.len()), (block, 1024)),
            other => panic!("expected DATA {block}, got {other:?}"),
        }
    }
    assert_eq!(
        c.recv(Duration::from_millis(300)),
        None,
        "window limited to 8"
    );
    c.error(0, "done");

    let mut c = Client::new(srv.addr);
    c.rrq(
        b"mid.bin",
        "octet",
        &[("blksize", "2"), ("windowsize", "0")],
    );
    let oack = c.recv(WAIT).expect("oack");
    assert_eq!(oack.oack_value("blksize"), Some("8"));
    assert_eq!(oack.oack_value("windowsize"), Some("1"));
    c.ack(0);
    assert_eq!(c.recv(WAIT), Some(Packet::Data(1, t.mid[..8].to_vec())));
    c.error(0, "done");
}

#[test]
fn tftp_without_options_is_lockstep_and_ends_with_an_empty_block() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let mut c = Client::new(srv.addr);
    c.rrq(b"/sub/exact1024.bin", "octet", &[("unknown", "1")]);
    let mut data = Vec::new();
    for block in 1..=3u16 {
        match c.recv(WAIT) {
            Some(Packet::Data(n, d)) => {
                assert_eq!(n, block, "no OACK when no known option was asked");
                data.extend_from_slice(&d);
                c.ack(n);
            }
            other => panic!("expected DATA {block}, got {other:?}"),
        }
    }
    assert_eq!(data, t.big[..1024]);
    wait_for("completion", WAIT, || srv.stats.snapshot().completed == 1);
}

#[test]
fn tftp_block_numbers_roll_over_past_65535() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    // 5 MiB in 64-byte blocks is 81 920 blocks: the 16-bit number wraps to 0 once.
    let mut c = Client::new(srv.addr);
    c.rrq(
        b"big.bin",
        "octet",
        &[("blksize", "64"), ("windowsize", "64")],
    );
    assert!(matches!(c.recv(WAIT), Some(Packet::Oack(_))));
    c.ack(0);
    let mut data = Vec::with_capacity(BIG);
    let mut expect: u16 = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "rollover transfer too slow");
        match c.recv(WAIT) {
            Some(Packet::Data(n, d)) if n == expect => {
                let last = d.len() < 64;
                data.extend_from_slice(&d);
                if last {
                    c.ack(n);
                    break;
                }
                // Ack every full window (and on loss, the last in-order block).
                if expect.is_multiple_of(64) {
                    c.ack(n);
                }
                expect = expect.wrapping_add(1);
            }
            Some(Packet::Data(_, _)) => c.ack(expect.wrapping_sub(1)),
            other => panic!("unexpected {other:?} after {} bytes", data.len()),
        }
    }
    assert_eq!(data.len(), BIG);
    assert!(data == t.big, "content differs");
    wait_for("completion", WAIT, || srv.stats.snapshot().completed == 1);
}

#[test]
fn tftp_client_that_never_acks_is_given_up_after_retries() {
    let t = tree();
    let lim = TftpLimits {
        retries: 2,
        ..limits()
    };
    let srv = start_tftp(&t.root, lim, Duration::from_millis(300));
    let mut c = Client::new(srv.addr);
    let started = Instant::now();
    c.rrq(b"mid.bin", "octet", &[]);
    let mut copies = 0;
    loop {
        match c.recv(WAIT) {
            Some(Packet::Data(1, _)) => copies += 1,
            Some(Packet::Error(0, msg)) => {
                assert!(msg.contains("timed out"), "{msg}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(copies, 3, "first send plus 2 retries");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.recv(Duration::from_millis(700)),
        None,
        "nothing after giving up"
    );
    let s = srv.stats.snapshot();
    assert_eq!((s.timeouts, s.errors, s.active, s.completed), (1, 1, 0, 0));
    assert_eq!(s.retransmits, 2, "each retry is counted");
}

#[test]
fn tftp_refuses_past_max_transfers_with_server_busy() {
    let t = tree();
    let lim = TftpLimits {
        max_transfers: 1,
        ..limits()
    };
    let srv = start_tftp(&t.root, lim, Duration::from_secs(1));
    let mut first = Client::new(srv.addr);
    first.rrq(b"mid.bin", "octet", &[]);
    assert!(matches!(first.recv(WAIT), Some(Packet::Data(1, _))));
    let mut second = Client::new(srv.addr);
    second.rrq(b"mid.bin", "octet", &[]);
    match second.recv(WAIT) {
        Some(Packet::Error(0, msg)) => assert!(msg.contains("busy"), "{msg}"),
        other => panic!("expected busy, got {other:?}"),
    }
    first.error(0, "done");
    wait_for("slot freed", WAIT, || srv.stats.snapshot().active == 0);
    let mut third = Client::new(srv.addr);
    third.rrq(b"mid.bin", "octet", &[]);
    assert!(
        matches!(third.recv(WAIT), Some(Packet::Data(1, _))),
        "slot reusable"
    );
    third.error(0, "done");
    assert_eq!(srv.stats.snapshot().busy, 1);
}

#[test]
fn tftp_stops_listening_on_shutdown() {
    let t = tree();
    let srv = start_tftp(&t.root, limits(), Duration::from_secs(1));
    let addr = srv.addr;
    drop(srv); // flips the watch and joins the server thread: run() returned
    let mut c = Client::new(addr);
    c.rrq(b"mid.bin", "octet", &[]);
    assert_eq!(c.recv(Duration::from_millis(500)), None);
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .arg("-sS")
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

#[test]
fn http_curl_full_range_and_head() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(10));
    let url = format!("http://{}/big.bin", srv.addr);
    let out = t.dir.path().join("http.out");
    curl(&["-f", "-o", out.to_str().expect("utf8"), &url]);
    assert_eq!(sha256(&out), sha256(&t.root.join("big.bin")));
    assert_eq!(std::fs::read(&out).expect("read"), t.big);

    let (_, part) = curl(&["-f", "-r", "100-199", &url]);
    assert_eq!(part, t.big[100..200]);
    let r = exchange(
        srv.addr,
        "GET /big.bin HTTP/1.1\r\nHost: b\r\nRange: bytes=100-199\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes 100-199/{BIG}"))
    );
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.body, t.big[100..200]);
    let (_, tail) = curl(&["-f", "-r", "-10", &url]);
    assert_eq!(tail, t.big[BIG - 10..]);

    let (_, head) = curl(&["-f", "-I", &url]);
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), Some(&*BIG.to_string()));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );

    wait_for("completions", WAIT, || srv.stats.snapshot().completed == 5);
    let s = srv.stats.snapshot();
    assert_eq!(s.bytes_sent, BIG as u64 + 100 + 100 + 10);
    assert_eq!((s.refused, s.errors), (0, 0));
}

#[test]
fn http_traversal_and_escaping_symlinks_are_refused() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(10));
    let long = format!("/{}", "a/".repeat(600));
    let refused = [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E%2Fsecret",
        "/sub/%2e%2e/%2e%2e/secret",
        "/..%5Csecret",
        "/..\\secret",
        "/big.bin%00",
        "/escape",
        "/etc-hostname",
        "/escdir/secret",
        "/%ff",
        "/%zz",
        long.as_str(),
    ];
    let hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    for path in refused {
        let Response { status, body, .. } = get(srv.addr, path, "");
        assert!(matches!(status, 400 | 403), "{path}: {status}");
        assert!(
            !body.windows(SECRET.len()).any(|w| w == SECRET),
            "{path} leaked"
        );
        if hostname.len() > 3 {
            assert!(
                !body.windows(hostname.len()).any(|w| w == &hostname[..]),
                "{path} leaked"
            );
        }
    }
    let r = get(srv.addr, "/inside", "");
    assert_eq!(r.status, 200);
    assert!(r.body == t.big);
    let s = srv.stats.snapshot();
    assert_eq!(s.refused, refused.len() as u64);
}

#[test]
fn http_status_codes_for_bad_requests() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(10));
    let r = exchange(
        srv.addr,
        "POST /big.bin HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    for dir in ["/sub", "/sub/", "/"] {
        assert_eq!(get(srv.addr, dir, "").status, 404, "{dir}");
    }
    assert_eq!(get(srv.addr, "/missing", "").status, 404);

    let r = get(srv.addr, "/big.bin", "Range: bytes=99999999999-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(&*format!("bytes */{BIG}")));

    // Several ranges: answered with the whole file.
    let r = get(srv.addr, "/mid.bin", "Range: bytes=0-1,5-6\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*t.mid.len().to_string()));
    assert!(r.body == t.mid);
}

#[test]
fn http_idle_connection_is_closed_after_the_timeout() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(1));
    // Sends nothing at all.
    let mut silent = TcpStream::connect(srv.addr).expect("connect");
    // Sends half a request line, then stalls (slowloris).
    let mut partial = TcpStream::connect(srv.addr).expect("connect");
    partial
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost:")
        .expect("write");
    let started = Instant::now();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = Vec::new();
        let res = s.read_to_end(&mut buf);
        assert!(res.is_ok(), "expected the server to close, got {res:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
    wait_for("connections gone", WAIT, || {
        srv.stats.snapshot().connections == 0
    });

    // A keep-alive connection that goes quiet after a request is closed too.
    let mut ka = TcpStream::connect(srv.addr).expect("connect");
    ka.write_all(b"GET /sub/exact1024.bin HTTP/1.1\r\nHost: b\r\n\r\n")
        .expect("write");
    ka.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let started = Instant::now();
    assert!(ka.read_to_end(&mut buf).is_ok());
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn http_client_that_stops_reading_is_dropped_after_the_timeout() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(1));
    // A tiny receive window so the 5 MiB response cannot sit in kernel buffers.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&srv.addr.into()).expect("connect");
    let mut stalled: TcpStream = sock.into();
    stalled
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: b\r\n\r\n")
        .expect("write");
    // Never read: the server's writes stall, and the idle timer must end the connection.
    wait_for("stalled body cut", Duration::from_secs(6), || {
        let s = srv.stats.snapshot();
        s.errors == 1 && s.connections == 0
    });
    let s = srv.stats.snapshot();
    assert!(s.bytes_sent < BIG as u64, "all of it was sent: {s:?}");
    assert_eq!(s.completed, 0);
}

#[test]
fn http_stops_listening_on_shutdown() {
    let t = tree();
    let srv = start_http(&t.root, Duration::from_secs(10));
    let addr = srv.addr;
    assert_eq!(get(addr, "/sub/exact1024.bin", "").status, 200);
    drop(srv);
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after shutdown"
    );
}
