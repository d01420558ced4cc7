//! Forwarding to a real dnsmasq upstream: answers, the cache, TCP fallback on truncation, a
//! silent upstream, all upstreams down, and upstream discovery under a temp root.

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::*;
use dns::{UpstreamSource, Upstreams};

fn dnsmasq(b: &Block, extra: &[&str]) -> Dnsmasq {
    upstream(
        SocketAddr::new(b.upstream().into(), free_port(b.upstream())),
        extra,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_names_are_answered_then_served_from_the_cache_within_their_ttl() {
    let b = Block(20);
    let up = dnsmasq(&b, &[]);
    let (server, _records) = start(&b, Upstreams::explicit([up.addr]), limits()).await;
    let at = server.local_addrs()[0];
    let first = dig(b.client(), at, &["upstream.test", "A"]).await;
    assert_eq!(first.status, "NOERROR", "{}", first.text);
    assert_eq!(first.data(), ["10.9.9.9"]);
    assert!(
        !first.has_flag("aa"),
        "a forwarded answer is not ours: {}",
        first.text
    );
    assert!(first.has_flag("ra"));
    // Same question in another letter case, over UDP and TCP: the cache answers.
    let again = dig(b.client(), at, &["UpStream.TEST", "A"]).await;
    assert_eq!(again.data(), ["10.9.9.9"], "{}", again.text);
    assert_eq!(
        again.answers[0][0], "UpStream.TEST.",
        "the client's case comes back"
    );
    let ttl: u32 = again.answers[0][1].parse().unwrap();
    assert!(
        (290..=300).contains(&ttl),
        "TTL counts down from dnsmasq's 300: {ttl}"
    );
    let tcp = dig(b.client(), at, &["+tcp", "upstream.test", "A"]).await;
    assert_eq!(tcp.data(), ["10.9.9.9"], "{}", tcp.text);
    assert_eq!(up.queries_for("upstream.test"), 1, "{}", up.log_text());
    let c = server.counters();
    assert_eq!((c.forwarded, c.cache_hits), (1, 2), "{c:?}");
    // Another type is another question.
    dig(b.client(), at, &["upstream.test", "AAAA"]).await;
    assert_eq!(up.queries_for("upstream.test"), 2, "{}", up.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_answers_are_fetched_over_tcp_and_truncated_again_for_small_clients() {
    let b = Block(21);
    let txt: Vec<String> = (0..24)
        .map(|i| {
            format!(
                "--txt-record=big.upstream.test,record-{i:02}-{}",
                "x".repeat(40)
            )
        })
        .collect();
    let mut extra: Vec<&str> = txt.iter().map(String::as_str).collect();
    // dnsmasq answers UDP with at most 512 bytes, so our EDNS query gets TC back.
    extra.push("--edns-packet-max=512");
    let up = dnsmasq(&b, &extra);
    let (server, _records) = start(&b, Upstreams::explicit([up.addr]), limits()).await;
    let at = server.local_addrs()[0];
    // dig without EDNS: 512 bytes at most, so our answer is TC and dig asks again over TCP.
    let d = dig(b.client(), at, &["+noedns", "big.upstream.test", "TXT"]).await;
    assert!(
        d.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        d.text
    );
    assert_eq!(d.answers.len(), 24, "{}", d.text);
    let c = server.counters();
    assert_eq!(c.truncated, 1, "{c:?}");
    // One question upstream (UDP, truncated, then TCP); the client's TCP retry hit the cache.
    assert_eq!(
        up.queries_for("big.upstream.test"),
        2,
        "UDP then TCP:\n{}",
        up.log_text()
    );
    assert_eq!((c.forwarded, c.cache_hits), (1, 1), "{c:?}");
    // With EDNS 1232 the full answer (~1.3 KB) still does not fit: TC again, TCP again.
    let d = dig(
        b.client(),
        at,
        &["+bufsize=1232", "big.upstream.test", "TXT"],
    )
    .await;
    assert_eq!(d.answers.len(), 24, "{}", d.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_and_the_next_one_answers() {
    let b = Block(22);
    let silent = UdpSocket::bind((b.ip(4), 0)).unwrap();
    let up = dnsmasq(&b, &[]);
    let (server, _records) = start(
        &b,
        Upstreams::explicit([silent.local_addr().unwrap(), up.addr]),
        limits(),
    )
    .await;
    let at = server.local_addrs()[0];
    let d = dig(b.client(), at, &["upstream.test"]).await;
    assert_eq!(d.data(), ["10.9.9.9"], "{}", d.text);
    let mut buf = [0u8; 512];
    silent.set_nonblocking(true).unwrap();
    assert!(
        silent.recv_from(&mut buf).is_ok(),
        "the first upstream was asked first"
    );
    assert_eq!(server.counters().upstream_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_upstreams_down_is_servfail_and_local_names_still_answer() {
    let b = Block(23);
    // Nothing listens on these two: one refuses (ICMP), one never answers.
    let closed = SocketAddr::new(b.ip(4).into(), free_port(b.ip(4)));
    let silent = UdpSocket::bind((b.ip(5), 0)).unwrap();
    let (server, _records) = start(
        &b,
        Upstreams::explicit([closed, silent.local_addr().unwrap()]),
        limits(),
    )
    .await;
    let at = server.local_addrs()[0];
    let d = dig(b.client(), at, &["upstream.test"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    let d = dig(b.client(), at, &["+tcp", "upstream.test"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert_eq!(server.counters().upstream_failures, 2);
    assert_eq!(
        dig(b.client(), at, &["bastion"]).await.data(),
        ["192.168.122.10"]
    );
    // No upstream at all: SERVFAIL at once.
    let b2 = Block(24);
    let (none, _r) = start(&b2, Upstreams::none(), limits()).await;
    let d = dig(b2.client(), none.local_addrs()[0], &["upstream.test"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
}

/// systemd-resolved hosts: /etc/resolv.conf has only its stub 127.0.0.53; the real upstreams are
/// in /run/systemd/resolve/resolv.conf. Both files live under a temp root. resolv.conf has no
/// port syntax, so this upstream dnsmasq listens on port 53 of its own loopback address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolv_conf_with_only_the_systemd_stub_forwards_to_resolveds_upstream() {
    let b = Block(25);
    let root = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: String| {
        let p = root.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "etc/resolv.conf",
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n".into(),
    );
    write(
        "run/systemd/resolve/resolv.conf",
        format!("# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).\nnameserver {}\n", b.upstream()),
    );
    let upstreams = Upstreams::discover(root.path(), &[]).unwrap();
    assert!(matches!(
        upstreams.source(),
        UpstreamSource::SystemdResolved(_)
    ));
    let up = upstream(SocketAddr::new(b.upstream().into(), 53), &[]);
    assert_eq!(upstreams.servers(), [up.addr]);
    let (server, _records) = start(&b, upstreams, limits()).await;
    let d = dig(b.client(), server.local_addrs()[0], &["upstream.test"]).await;
    assert_eq!(d.data(), ["10.9.9.9"], "{}", d.text);
    assert_eq!(up.queries_for("upstream.test"), 1);
}
