//! The local zone through real sockets, asked by real `dig`: names, reverse names, NXDOMAIN
//! that never reaches the upstream, live updates, refusal, rate limits, ANY, malformed input.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use dns::{HostRecord, RateLimit, Source, Upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_names_resolve_bare_and_qualified_with_aa_over_udp_and_tcp() {
    let b = Block(1);
    let (server, _records) = start(&b, Upstreams::none(), limits()).await;
    let at = server.local_addrs()[0];
    for name in ["bastion", "bastion.default", "BaStIoN.Default."] {
        let d = dig(b.client(), at, &[name, "A"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.text);
        assert!(d.has_flag("aa"), "{}", d.text);
        assert_eq!(d.data(), ["192.168.122.10"], "{}", d.text);
    }
    let d = dig(b.client(), at, &["+tcp", "web.default", "A"]).await;
    assert_eq!(d.data(), ["192.168.122.20"], "{}", d.text);
    let d = dig(b.client(), at, &["web.default", "AAAA"]).await;
    assert_eq!(d.data(), ["fd00:122::20"], "{}", d.text);
    let d = dig(b.client(), at, &["-x", "192.168.122.10"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.has_flag("aa"));
    assert_eq!(d.data(), ["bastion.default."], "{}", d.text);
    let d = dig(b.client(), at, &["+tcp", "-x", "fd00:122::20"]).await;
    assert_eq!(d.data(), ["web.default."], "{}", d.text);
    // The zone apex has a SOA; a known name without the asked type is NODATA with it.
    let d = dig(b.client(), at, &["default", "SOA"]).await;
    assert_eq!(d.types(), ["SOA"], "{}", d.text);
    let d = dig(b.client(), at, &["bastion.default", "MX"]).await;
    assert_eq!(d.status, "NOERROR");
    assert!(d.answers.is_empty());
    assert_eq!(d.authority[0][3], "SOA", "{}", d.text);
    let c = server.counters();
    assert_eq!(c.answered_local, 9);
    assert_eq!(c.forwarded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_misses_are_nxdomain_with_soa_and_never_reach_the_upstream() {
    let b = Block(2);
    let up = upstream(
        SocketAddr::new(b.upstream().into(), free_port(b.upstream())),
        &[],
    );
    let (server, _records) = start(&b, Upstreams::explicit([up.addr]), limits()).await;
    let at = server.local_addrs()[0];
    for args in [
        &["nobody.default", "A"][..],
        &["deep.nobody.default", "AAAA"],
        &["-x", "192.168.122.99"],
        &["junk.99.122.168.192.in-addr.arpa", "PTR"],
        &["-x", "fd00:122::99"],
    ] {
        let d = dig(b.client(), at, args).await;
        assert_eq!(d.status, "NXDOMAIN", "{args:?}: {}", d.text);
        assert!(d.has_flag("aa"), "{}", d.text);
        assert_eq!(d.authority.len(), 1, "{}", d.text);
        assert_eq!(d.authority[0][3], "SOA", "{}", d.text);
    }
    // A name outside the zone does reach dnsmasq: the upstream is live, and it logs queries.
    let d = dig(b.client(), at, &["upstream.test", "A"]).await;
    assert_eq!(d.data(), ["10.9.9.9"], "{}", d.text);
    assert_eq!(
        up.queries(),
        1,
        "only the foreign name was forwarded:\n{}",
        up.log_text()
    );
    assert_eq!(up.queries_for("upstream.test"), 1);
    let c = server.counters();
    assert_eq!(c.nxdomain, 5);
    assert_eq!(c.forwarded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_added_and_removed_resolve_and_stop_at_once() {
    let b = Block(3);
    let (server, records) = start(&b, Upstreams::none(), limits()).await;
    let at = server.local_addrs()[0];
    let ip = "192.168.122.77".parse().unwrap();
    assert_eq!(
        dig(b.client(), at, &["newguest.default"]).await.status,
        "NXDOMAIN"
    );
    records
        .upsert(HostRecord::new("newguest", ip, Source::Lease))
        .unwrap();
    let d = dig(b.client(), at, &["newguest.default"]).await;
    assert_eq!(d.data(), ["192.168.122.77"], "{}", d.text);
    assert_eq!(
        dig(b.client(), at, &["-x", "192.168.122.77"]).await.data(),
        ["newguest.default."]
    );
    // A client's garbage name is skipped and counted; the good names keep resolving.
    assert!(records
        .upsert(HostRecord::new("bad_name!", ip, Source::Lease))
        .is_err());
    assert_eq!(records.rejected(), 1);
    assert!(records.remove_addr(Source::Lease, ip));
    assert_eq!(
        dig(b.client(), at, &["newguest.default"]).await.status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig(b.client(), at, &["-x", "192.168.122.77"]).await.status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig(b.client(), at, &["bastion"]).await.data(),
        ["192.168.122.10"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allowed_nets_are_refused() {
    let b = Block(4);
    let (server, _records) = start(&b, Upstreams::none(), limits()).await;
    let at = server.local_addrs()[0];
    let d = dig(b.outsider(), at, &["bastion.default"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.text);
    assert!(d.answers.is_empty());
    let d = dig(b.outsider(), at, &["+tcp", "bastion.default"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.text);
    assert_eq!(
        dig(b.client(), at, &["bastion.default"]).await.status,
        "NOERROR"
    );
    // Zone transfers are refused to everyone.
    let d = dig(b.client(), at, &["default", "AXFR"]).await;
    assert!(
        d.text.contains("REFUSED") || d.text.contains("Transfer failed"),
        "{}",
        d.text
    );
    let c = server.counters();
    assert_eq!(c.refused, 3);
    assert_eq!(c.answered_local, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_exactly_the_burst_then_drops() {
    let b = Block(5);
    let limits = dns::Limits {
        // No refill worth speaking of during the test: the count is exact.
        rate: Some(RateLimit {
            per_second: 0.001,
            burst: 10,
            max_clients: 64,
        }),
        ..limits()
    };
    let (server, _records) = start(&b, Upstreams::none(), limits).await;
    let at = server.local_addrs()[0];
    let sock = UdpSocket::bind((b.client(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let query = a_query("bastion.default.");
    for _ in 0..30 {
        sock.send_to(&query, at).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert_eq!(answered, 10);
    let c = server.counters();
    assert_eq!(c.rate_limited, 20);
    // Another client has its own bucket.
    let d = dig(b.ip(3), at, &["bastion.default"]).await;
    assert_eq!(d.data(), ["192.168.122.10"], "{}", d.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_queries_get_a_minimal_answer_and_are_never_forwarded() {
    let b = Block(6);
    let up = upstream(
        SocketAddr::new(b.upstream().into(), free_port(b.upstream())),
        &[],
    );
    let (server, _records) = start(&b, Upstreams::explicit([up.addr]), limits()).await;
    let at = server.local_addrs()[0];
    let d = dig(b.client(), at, &["upstream.test", "ANY"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(d.types(), ["HINFO"], "{}", d.text);
    assert!(d.data()[0].contains("RFC8482"), "{}", d.text);
    let d = dig(b.client(), at, &["web.default", "ANY"]).await;
    let mut types = d.types();
    types.sort();
    assert_eq!(types, ["A", "AAAA"], "{}", d.text);
    assert_eq!(up.queries(), 0, "{}", up.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_the_server_keeps_answering() {
    let b = Block(7);
    let (server, _records) = start(&b, Upstreams::none(), limits()).await;
    let at = server.local_addrs()[0];
    let sock = UdpSocket::bind((b.client(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut truncated_name = a_query("bastion.default.");
    truncated_name.truncate(20);
    let mut pointer_loop = a_query("x.");
    pointer_loop.splice(12..15, [0xc0, 12, 0]);
    let mut response = a_query("bastion.default.");
    response[2] |= 0x80;
    for junk in [
        &b"\x00"[..],
        &[0xff; 11],
        &truncated_name,
        &pointer_loop,
        &response,
        &[0u8; 3000],
    ] {
        sock.send_to(junk, at).unwrap();
    }
    let mut buf = [0u8; 512];
    let mut replies = Vec::new();
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        replies.push(buf[..n].to_vec());
    }
    // Readable headers get FORMERR (the 3000 zero bytes: a query with no question); the short
    // ones and the response get nothing.
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(
        replies.iter().all(|r| r.len() == 12 && r[3] & 0x0f == 1),
        "{replies:?}"
    );
    let c = server.counters();
    assert_eq!(c.malformed, 6, "{c:?}");
    assert_eq!(
        dig(b.client(), at, &["bastion"]).await.data(),
        ["192.168.122.10"]
    );
    // The TCP side too: a bad frame closes the connection, the next one is served.
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(at).unwrap();
    tcp.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    drop(tcp);
    assert_eq!(
        dig(b.client(), at, &["+tcp", "bastion"]).await.data(),
        ["192.168.122.10"]
    );
}

/// A plain A query (ID 0x1234, RD) for a test's own socket.
fn a_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
