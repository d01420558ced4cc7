//! The wire protocol without a socket: what the server accepts and writes, what the client reads
//! back, and that every reply writes a MAC the same way.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hwaddr::Mac;
use serde_json::{json, Value};

use super::*;
use crate::control::client::decode;
use crate::control::server::parse_request;
use crate::guests::LeaseView;

const MAC: Mac = Mac::new([0x52, 0x54, 0, 0xab, 0xcd, 0x01]);

fn lease() -> Lease {
    Lease {
        mac: MAC,
        ip: Ipv4Addr::new(10, 77, 0, 3),
        expires: 1_700_000_000,
        hostname: Some("node-1".into()),
        client_id: None,
        agent: None,
    }
}

fn row(lease: Option<LeaseView>) -> GuestRow {
    GuestRow {
        name: "node-1".into(),
        host: "kvm2".into(),
        state: "running".into(),
        mac: Some(MAC),
        network: "lab".into(),
        ip: "10.77.0.3".into(),
        lease,
        stage: "os booted".into(),
        console: "/var/lib/hostagent/guests/console/node-1.log".into(),
    }
}

fn wire(r: &Response) -> String {
    serde_json::to_string(r).expect("a reply serializes")
}

#[test]
fn requests_are_one_known_command_and_nothing_else() {
    for (line, cmd) in [
        ("{\"cmd\":\"status\"}\n", Command::Status),
        (" {\"cmd\":\"leases\"} ", Command::Leases),
        ("{\"cmd\":\"guests\"}", Command::Guests),
    ] {
        assert_eq!(parse_request(line), Ok(Request { cmd }), "{line:?}");
    }
    // What the client sends is what the server reads.
    let sent = serde_json::to_string(&Request {
        cmd: StatusReply::COMMAND,
    })
    .expect("request");
    assert_eq!(sent, "{\"cmd\":\"status\"}");
    for garbage in [
        "hello",
        "{\"cmd\":\"reboot\"}",
        "{\"cmd\":\"status\",\"x\":1}",
        "{}",
        "\u{0}\u{1}",
        "",
    ] {
        let Err(ErrorReply { error }) = parse_request(garbage) else {
            panic!("{garbage:?} accepted");
        };
        assert!(
            error.starts_with("bad request: ") && error.contains("{\"cmd\":\"status\"}"),
            "{garbage:?} → {error}"
        );
    }
}

#[test]
fn each_reply_reads_back_as_the_type_the_client_asked_for() {
    let status = StatusReply {
        config: "/etc/hostagent/hostagent.toml".into(),
        uptime_seconds: 7,
        agent: "kvm1".into(),
        lease_backend: "postgres".into(),
        networks: vec![NetworkInfo {
            name: "lab".into(),
            mode: "nat".into(),
            bridge: "br-lab".into(),
            address: Some("10.77.0.1/24".parse().expect("net")),
            address6: Some("fd00:122::1/64".parse().expect("net")),
        }],
        servers: vec![ServerStatus {
            network: "lab".into(),
            dhcp: Some(DhcpStatus {
                interface: "br-lab".into(),
                store: Some(pxe::dhcp::store::StoreStatus {
                    backend: "postgres".into(),
                    location: "postgresql:///hostagent?host=/run/postgresql".into(),
                    available: false,
                    since: 1_800_000_000,
                    last_error: Some("lease database unreachable".into()),
                    failures: 3,
                }),
                leases_by_agent: BTreeMap::from([("kvm1".to_string(), 2), ("kvm2".to_string(), 1)]),
                counters: DhcpStatsSnapshot {
                    received: 4,
                    offers: 1,
                    acks: 1,
                    naks: 0,
                    releases: 0,
                    declines: 0,
                    informs: 0,
                    ignored: 0,
                    dropped_malformed: BTreeMap::from([("too_short".to_string(), 2)]),
                    exhausted: 0,
                    rate_limited: 0,
                    flush_errors: 0,
                    acks_withheld: 0,
                    send_errors: 0,
                    store_failures: 3,
                },
            }),
            tftp: Some(FileServerStatus {
                listen: "10.77.0.1:69".parse().expect("addr"),
                counters: TftpStatsSnapshot {
                    requests: 3,
                    completed: 2,
                    refused: 0,
                    not_found: 0,
                    errors: 1,
                    bytes_sent: 4096,
                    client_aborts: 1,
                    timeouts: 0,
                    busy: 0,
                    retransmits: 0,
                    active: 0,
                },
            }),
            http: None,
            dhcp6: None,
            tftp6: None,
            http6: None,
            ra: Some(RaStatus {
                interface: "br-lab".into(),
                counters: ra::RaStatsSnapshot {
                    advertising: true,
                    multicast_sent: 4,
                    solicitations: 2,
                    unicast_sent: 2,
                    ..Default::default()
                },
            }),
            dns: Some(DnsStatus {
                listen: vec!["10.77.0.1:53".parse().expect("addr")],
                domain: "lab".into(),
                upstreams: vec!["192.0.2.53:53".parse().expect("addr")],
                names: 3,
                counters: dns::CountersSnapshot {
                    queries: 9,
                    answered_local: 5,
                    forwarded: 2,
                    cache_hits: 1,
                    ..Default::default()
                },
            }),
        }],
    };
    let line = wire(&Response::Status(status.clone()));
    // The shape scripts read: counters and the server's place side by side, no wrapper.
    let v: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["servers"][0]["dhcp"]["interface"], "br-lab");
    assert_eq!(v["servers"][0]["dhcp"]["acks"], 1);
    assert_eq!(v["servers"][0]["dhcp"]["dropped_malformed"]["too_short"], 2);
    assert_eq!(v["servers"][0]["tftp"]["listen"], "10.77.0.1:69");
    assert_eq!(v["servers"][0]["tftp"]["bytes_sent"], 4096);
    assert_eq!(v["networks"][0]["address"], "10.77.0.1/24");
    assert_eq!(v["servers"][0]["dns"]["listen"][0], "10.77.0.1:53");
    assert_eq!(v["servers"][0]["dns"]["answered_local"], 5);
    assert_eq!(v["servers"][0]["dns"]["domain"], "lab");
    assert_eq!(decode::<StatusReply>(&line).expect("status"), status);

    let leases = LeasesReply {
        leases: vec![NetworkLeases {
            network: "lab".into(),
            leases: vec![lease()],
            leases6: Vec::new(),
        }],
    };
    let line = wire(&Response::Leases(leases.clone()));
    assert_eq!(decode::<LeasesReply>(&line).expect("leases"), leases);

    let guests = GuestsReply {
        guests: vec![row(Some(LeaseView::from(&lease())))],
    };
    let line = wire(&Response::Guests(guests.clone()));
    assert_eq!(decode::<GuestsReply>(&line).expect("guests"), guests);
}

#[test]
fn an_error_reply_is_an_error_for_every_client_and_garbage_is_malformed() {
    let line = wire(&Response::error("guests: libvirt is not running"));
    assert_eq!(line, "{\"error\":\"guests: libvirt is not running\"}");
    let e = decode::<GuestsReply>(&line).expect_err("error reply");
    assert_eq!(e.to_string(), "daemon: guests: libvirt is not running");
    let e = decode::<StatusReply>("{\"leases\":[]}").expect_err("wrong reply");
    assert!(e.to_string().contains("malformed"), "{e:#}");
    assert!(decode::<LeasesReply>("").is_err());
}

/// `leases --json` prints `LeasesReply::leases`, `guests --json` the rows of `GuestsReply`: both
/// write a MAC as "aa:bb:cc:dd:ee:ff" (`leases --json` once wrote six numbers).
#[test]
fn leases_and_guests_write_a_mac_the_same_way() {
    let leases = serde_json::to_value(
        LeasesReply {
            leases: vec![NetworkLeases {
                network: "lab".into(),
                leases: vec![lease()],
                leases6: Vec::new(),
            }],
        }
        .leases,
    )
    .expect("leases json");
    let rows = serde_json::to_value(vec![row(Some(LeaseView::from(&lease())))]).expect("rows");
    let text = json!("52:54:00:ab:cd:01");
    assert_eq!(leases[0]["leases"][0]["mac"], text, "{leases}");
    assert_eq!(rows[0]["mac"], text, "{rows}");
    assert_eq!(rows[0]["lease"]["mac"], text, "{rows}");
}
