//! DHCP rate limits against the real `hostagent run` in network namespaces.
//!
//! Per MAC (the DHCP server's token buckets, pxe::dhcp::server::ratelimit): one MAC spamming
//! DISCOVERs is answered at most burst + rate × t times while another client on the same port
//! gets its lease. Per port (the kernel: `bridge hostagent`, netcfg::nft::bridge): a port flooding
//! thousands of random MACs gets no more than the meter lets through to the server, while a
//! reserved client on another port still gets its address.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Network};
use hostagent_tests::daemon::{dhcp_flood_bin, Daemon};
use hostagent_tests::{helper_bin, Scratch};
use testkit::dhcp_client::udhcpc_once;
use testkit::Netns;

/// pxe::dhcp::server::ratelimit::{MAC_BURST, MAC_REFILL_PER_SEC}.
const MAC_BURST: u64 = 8;
const MAC_PER_SEC: f64 = 2.0;
/// netcfg::nft::bridge::{PORT_BURST, PORT_RATE_PER_SEC}: the defaults, which `config` keeps by
/// leaving `[dhcp] port_rate_limit` out (burst = twice the rate).
const PORT_BURST: u64 = 200;
const PORT_PER_SEC: f64 = 100.0;
const RESERVED_MAC: &str = "52:54:00:00:00:10";

fn config(bridge: &str, net: &str) -> Config {
    Config::new("/state").network(
        Network::nat("lab", bridge, &format!("{net}.1/24")).dhcp(
            Dhcp::new(&format!("{net}.100-{net}.149"))
                .lease_time("1h")
                .host(RESERVED_MAC, &format!("{net}.10"), Some("bastion")),
        ),
    )
}

/// One of the `lab` server's DHCP counters from `hostagent status --json`.
fn dhcp_counter(cli: &Cli, name: &str) -> u64 {
    counter(&cli.server("lab"), &["dhcp", name])
}

fn spawn(ns: &Netns, argv: &[&str]) -> Child {
    ns.cmd(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Wait for a child started by `spawn`; its stdout (panics if it fails).
fn finish(mut child: Child) -> String {
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    assert!(status.success(), "{status}: {out}\n{err}");
    out
}

fn field(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn one_mac_spamming_is_limited_while_another_client_on_the_same_port_gets_a_lease() {
    let host = Netns::new("rlm");
    let s = Scratch::new();
    let cfg = s.config(config("br-rlm", "10.61.0"));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let guest = host.plug("br-rlm", "vrlm0");

    // 200 DISCOVERs for one MAC over 4 s: 50/s, under the per-port meter, far over the per-MAC
    // rate. The spammer's MAC is only in chaddr: the frames leave from eth0 like the good
    // client's, through the same bridge port.
    let spam_bin = helper_bin("dhcp-spam");
    let spammer = spawn(
        &guest,
        &[
            spam_bin.to_str().expect("utf-8"),
            "eth0",
            "02:77:00:00:00:01",
            "200",
            "20",
            "1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = udhcpc_once(&guest, s.root(), "same-port", None);
    let out = finish(spammer);
    let got = got.unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", d.log_text()));
    assert!(got.starts_with("10.61.0.1"), "good client got {got:?}");

    let (sent, offers, secs) = (
        field(&out, "SENT") as u64,
        field(&out, "OFFERS") as u64,
        field(&out, "SECONDS"),
    );
    assert_eq!(sent, 200, "{out}");
    let ceiling = MAC_BURST + (MAC_PER_SEC * secs).ceil() as u64 + 1;
    assert!(
        (MAC_BURST..=ceiling).contains(&offers),
        "one MAC got {offers} offers for {sent} DISCOVERs in {secs} s (allowed {MAC_BURST}..={ceiling})"
    );
    let limited = dhcp_counter(&cli, "rate_limited");
    assert!(
        limited >= sent - ceiling,
        "rate_limited {limited} for {sent} sent: {}",
        cli.server("lab")
    );
    assert!(
        d.log_text().contains("over its rate limit"),
        "no rate-limit warning in the log:\n{}",
        d.log_text()
    );
}

/// The per-port drop rule's packet counter in `bridge hostagent`.
fn port_drops(host: &Netns) -> u64 {
    let table = host.nft_json(&["list", "table", "bridge", "hostagent"]);
    table
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["comment"] == "dhcp per-port limit")
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .find_map(|e| e["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no per-port drop rule with a counter: {table:?}"))
}

#[test]
fn a_port_flooding_random_macs_is_capped_by_the_kernel_and_another_port_is_served() {
    let host = Netns::new("rlp");
    let s = Scratch::new();
    let cfg = s.config(config("br-rlp", "10.62.0"));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let cli = Cli::new(&host, &s, &cfg);
    let flooder = host.plug("br-rlp", "vrlp0");
    let other = host.plug("br-rlp", "vrlp1");
    assert_eq!(port_drops(&host), 0);
    let before = dhcp_counter(&cli, "received");

    // 20,000 MACs, 1,024 in flight, each retried every second: ~1,000 packets/s from one port,
    // for at most 8 s.
    let started = Instant::now();
    let flood = spawn(
        &flooder,
        &[
            dhcp_flood_bin().to_str().expect("utf-8"),
            "eth0",
            "20000",
            "91",
            "1024",
            "8",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    // The reservation, on another port, in the middle of the flood.
    let got = udhcpc_once(&other, s.root(), "other-port", Some(RESERVED_MAC));
    let _ = finish(flood);
    let secs = started.elapsed().as_secs_f64();
    let got = got.unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", d.log_text()));
    assert_eq!(got, "10.62.0.10");

    let drops = port_drops(&host);
    assert!(
        drops > 1000,
        "the kernel meter dropped only {drops} packets"
    );
    std::thread::sleep(Duration::from_millis(500));
    let st = cli.server("lab")["dhcp"].clone();
    let received = counter(&st, &["received"]) - before;
    // What the meter lets through from the flooding port, plus the other port's few packets.
    let ceiling = PORT_BURST + (PORT_PER_SEC * (secs + 1.0)) as u64 + 20;
    assert!(
        received <= ceiling,
        "server received {received} packets in {secs:.1} s (ceiling {ceiling}), kernel dropped {drops}: {st}"
    );
    assert!(
        counter(&st, &["exhausted"]) > 0 || counter(&st, &["acks"]) >= 50,
        "the flood reached the server at all: {st}"
    );

    // Counters and the set's per-port entries count traffic, not configuration: no drift.
    let (code, plan) = cli.plan();
    assert_eq!(code, Some(0), "plan after the flood: {plan}");
}
