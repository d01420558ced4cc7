//! The DHCPv6 handler on a real pool and journal, socket-free: each message kind of RFC 8415
//! with the options it must carry, static hosts, rapid commit, PXE over IPv6, and durability
//! (what a Reply promised is in the journal a new pool reads).

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v6::{
    Architecture, DhcpOption, IAAddr, Message, MessageType, OptionCode, Status, UnknownOption,
    IANA, ORO,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use pxe::config::{BootConfig, Dhcp6Config, Host6Id, Mac, StaticHost6};
use pxe::dhcp6::guard::Drop6;
use pxe::dhcp6::handler::Handler6;
use pxe::dhcp6::pool::Pool6;
use pxe::dhcp6::server::answer_batch;
use pxe::dhcp6::stats::Dhcp6Stats;
use pxe::leases::v6::Duid;

const NOW: u64 = 1_800_000_000;

fn gw() -> Ipv6Addr {
    "fd00:122::1".parse().unwrap()
}

fn config(dir: &Path, rapid_commit: bool) -> Dhcp6Config {
    Dhcp6Config {
        network: "lab".into(),
        interface: "br0".into(),
        server: "fd00:122::1/64".parse().unwrap(),
        range: Some((
            "fd00:122::100".parse().unwrap(),
            "fd00:122::1ff".parse().unwrap(),
        )),
        lease_time: Duration::from_secs(3600),
        rapid_commit,
        dns: vec![gw()],
        domain_search: vec!["lab.test".into()],
        hosts: vec![
            StaticHost6 {
                id: Host6Id::Duid(
                    Duid::parse("00:04:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99").unwrap(),
                ),
                ip: "fd00:122::10".parse().unwrap(),
                name: Some("bastion".into()),
            },
            StaticHost6 {
                id: Host6Id::Mac(Mac([0x52, 0x54, 0, 0, 0, 0x20])),
                ip: "fd00:122::20".parse().unwrap(),
                name: Some("bymac".into()),
            },
        ],
        boot: Some(BootConfig {
            root: dir.join("boot"),
            bios: None,
            uefi: Some("ipxe.efi".into()),
            arm64: None,
            script: None,
            http_port: Some(8069),
            pxelinux: Default::default(),
        }),
        lease_file: dir.join("lab.leases6"),
        duid_file: dir.join("server-duid"),
    }
}

fn server_duid() -> Duid {
    Duid::parse("00:04:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10").unwrap()
}

fn handler(cfg: Dhcp6Config) -> Handler6 {
    let (pool, _) = Pool6::open(&cfg).expect("pool");
    Handler6::new(cfg, pool, server_duid(), Arc::new(Dhcp6Stats::default()))
}

/// A client with a DUID-LL of MAC 52:54:00:00:01:`n`, sending from its EUI-64 link-local.
struct Client {
    duid: Vec<u8>,
    from: SocketAddrV6,
}

impl Client {
    fn new(n: u16) -> Client {
        let mac = [0x52, 0x54, 0, 0, (n >> 8) as u8 + 0x10, n as u8];
        let duid = [&[0, 3, 0, 1][..], &mac].concat();
        let ll = Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
            u16::from_be_bytes([mac[2], 0xff]),
            u16::from_be_bytes([0xfe, mac[3]]),
            u16::from_be_bytes([mac[4], mac[5]]),
        );
        Client {
            duid,
            from: SocketAddrV6::new(ll, 546, 0, 7),
        }
    }

    fn msg(&self, kind: MessageType, server: bool, ia: Option<Option<Ipv6Addr>>) -> Message {
        let mut m = Message::new_with_id(kind, [1, 2, 3]);
        m.opts_mut().insert(DhcpOption::ClientId(self.duid.clone()));
        if server {
            m.opts_mut()
                .insert(DhcpOption::ServerId(server_duid().as_bytes().to_vec()));
        }
        m.opts_mut().insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList],
        }));
        if let Some(addr) = ia {
            let mut ia = IANA {
                id: 1,
                t1: 0,
                t2: 0,
                opts: Default::default(),
            };
            if let Some(a) = addr {
                ia.opts.insert(DhcpOption::IAAddr(IAAddr {
                    addr: a,
                    preferred_life: 0,
                    valid_life: 0,
                    opts: Default::default(),
                }));
            }
            m.opts_mut().insert(DhcpOption::IANA(ia));
        }
        m
    }
}

fn bytes(m: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

/// Sends `m` as one batch (one flush) and decodes the reply, if any.
fn ask(h: &mut Handler6, c: &Client, m: &Message) -> Option<Message> {
    let b = bytes(m);
    let out = answer_batch(h, &[(&b, c.from)], NOW);
    assert!(out.len() <= 1);
    let r = out.into_iter().next()?;
    assert_eq!(
        r.dest, c.from,
        "replies go back to the client's address and port"
    );
    Some(Message::decode(&mut Decoder::new(&r.bytes)).unwrap())
}

fn address(m: &Message) -> Option<(Ipv6Addr, u32, u32, u32)> {
    match m.opts().get(OptionCode::IANA)? {
        DhcpOption::IANA(ia) => match ia.opts.get(OptionCode::IAAddr)? {
            DhcpOption::IAAddr(a) => Some((a.addr, a.valid_life, ia.t1, ia.t2)),
            _ => None,
        },
        _ => None,
    }
}

fn status(m: &Message) -> Option<Status> {
    match m.opts().get(OptionCode::StatusCode)? {
        DhcpOption::StatusCode(s) => Some(s.status),
        _ => None,
    }
}

fn in_range(ip: Ipv6Addr) -> bool {
    let v = u128::from(ip);
    (u128::from(Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x100))
        ..=u128::from(Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x1ff)))
        .contains(&v)
}

#[test]
fn solicit_request_renew_rebind_release_with_lifetimes_dns_and_search_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(1);

    let adv = ask(&mut h, &c, &c.msg(MessageType::Solicit, false, Some(None))).unwrap();
    assert_eq!(adv.msg_type(), MessageType::Advertise);
    assert_eq!(adv.xid(), [1, 2, 3]);
    assert!(matches!(
        adv.opts().get(OptionCode::Preference),
        Some(DhcpOption::Preference(255))
    ));
    assert!(
        matches!(adv.opts().get(OptionCode::ServerId), Some(DhcpOption::ServerId(id)) if id == server_duid().as_bytes())
    );
    assert!(
        matches!(adv.opts().get(OptionCode::ClientId), Some(DhcpOption::ClientId(id)) if *id == c.duid)
    );
    let (offered, ..) = address(&adv).unwrap();
    assert!(in_range(offered), "{offered}");
    assert!(
        h.pool().store().index().by_ip(offered).is_none(),
        "an Advertise binds nothing"
    );

    let reply = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Request, true, Some(Some(offered))),
    )
    .unwrap();
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(address(&reply), Some((offered, 3600, 1800, 2880)));
    assert!(
        matches!(reply.opts().get(OptionCode::DomainNameServers), Some(DhcpOption::DomainNameServers(d)) if *d == vec![gw()])
    );
    match reply.opts().get(OptionCode::DomainSearchList) {
        Some(DhcpOption::DomainSearchList(names)) => {
            assert_eq!(names[0].to_ascii(), "lab.test.")
        }
        other => panic!("no search list: {other:?}"),
    }

    // What the Reply promised is on disk: a new pool over the same journal has it.
    let (reopened, report) = Pool6::open(&config(dir.path(), false)).unwrap();
    assert_eq!(report.records, 1);
    let duid = Duid::new(&c.duid).unwrap();
    let lease = reopened
        .store()
        .index()
        .by_binding(&duid, 1)
        .unwrap()
        .clone();
    assert_eq!((lease.ip, lease.expires), (offered, NOW + 3600));
    assert_eq!(lease.mac, Some(Mac([0x52, 0x54, 0, 0, 0x10, 1])));

    for kind in [MessageType::Renew, MessageType::Rebind] {
        let server = kind == MessageType::Renew;
        let r = ask(&mut h, &c, &c.msg(kind, server, Some(Some(offered)))).unwrap();
        assert_eq!(address(&r).map(|a| a.0), Some(offered), "{kind:?}");
    }
    // A Renew that names no server, or another, is not ours to answer.
    assert!(ask(
        &mut h,
        &c,
        &c.msg(MessageType::Renew, false, Some(Some(offered)))
    )
    .is_none());
    assert_eq!(
        h.stats().snapshot().dropped.get("missing_or_wrong_ids"),
        Some(&1)
    );

    let r = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Release, true, Some(Some(offered))),
    )
    .unwrap();
    assert_eq!(status(&r), Some(Status::Success));
    assert!(h.pool().store().index().by_ip(offered).is_none());
    let (reopened, _) = Pool6::open(&config(dir.path(), false)).unwrap();
    assert!(
        reopened.store().index().by_ip(offered).is_none(),
        "the release is durable"
    );

    // After the release a Renew finds no binding, but the address is free: bound again.
    let r = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Renew, true, Some(Some(offered))),
    )
    .unwrap();
    assert_eq!(address(&r).map(|a| a.0), Some(offered));
}

#[test]
fn rapid_commit_is_a_committed_reply_only_where_the_network_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new(2);
    let mut solicit = c.msg(MessageType::Solicit, false, Some(None));
    solicit.opts_mut().insert(DhcpOption::RapidCommit);

    let mut off = handler(config(dir.path(), false));
    let r = ask(&mut off, &c, &solicit).unwrap();
    assert_eq!(r.msg_type(), MessageType::Advertise);
    assert!(r.opts().get(OptionCode::RapidCommit).is_none());
    drop(off);

    let mut on = handler(config(dir.path(), true));
    let r = ask(&mut on, &c, &solicit).unwrap();
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert!(r.opts().get(OptionCode::RapidCommit).is_some());
    let (ip, ..) = address(&r).unwrap();
    assert!(on.pool().store().index().by_ip(ip).is_some());
    assert_eq!(on.stats().snapshot().rapid_commits, 1);
}

#[test]
fn static_hosts_by_duid_and_by_mac_get_their_addresses_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let mut bastion = Client::new(3);
    bastion.duid = Duid::parse("00:04:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99")
        .unwrap()
        .as_bytes()
        .to_vec();
    let r = ask(
        &mut h,
        &bastion,
        &bastion.msg(MessageType::Request, true, Some(None)),
    )
    .unwrap();
    assert_eq!(
        address(&r).map(|a| a.0),
        Some("fd00:122::10".parse().unwrap())
    );

    // MAC 52:54:00:00:00:20 through the EUI-64 link-local source; its DUID is a DUID-UUID.
    let bymac = Client {
        duid: vec![0, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9],
        from: SocketAddrV6::new("fe80::5054:ff:fe00:20".parse().unwrap(), 546, 0, 7),
    };
    let r = ask(
        &mut h,
        &bymac,
        &bymac.msg(MessageType::Request, true, Some(None)),
    )
    .unwrap();
    assert_eq!(
        address(&r).map(|a| a.0),
        Some("fd00:122::20".parse().unwrap())
    );
    let names: Vec<_> = h
        .pool()
        .leases_at(NOW)
        .into_iter()
        .map(|l| l.hostname.unwrap_or_default())
        .collect();
    assert_eq!(names, ["bastion", "bymac"]);

    // A dynamic client asking for a static host's address does not get it.
    let other = Client::new(4);
    let r = ask(
        &mut h,
        &other,
        &other.msg(
            MessageType::Request,
            true,
            Some(Some("fd00:122::10".parse().unwrap())),
        ),
    )
    .unwrap();
    let (ip, ..) = address(&r).unwrap();
    assert!(in_range(ip), "{ip}");
}

#[test]
fn information_request_gets_dns_and_search_list_and_no_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(5);
    let r = ask(
        &mut h,
        &c,
        &c.msg(MessageType::InformationRequest, false, None),
    )
    .unwrap();
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert!(r.opts().get(OptionCode::IANA).is_none());
    assert!(r.opts().get(OptionCode::DomainNameServers).is_some());
    assert!(r.opts().get(OptionCode::DomainSearchList).is_some());
    assert_eq!(h.pool().leases_at(NOW).len(), 0);
    assert_eq!(h.stats().snapshot().information, 1);
}

#[test]
fn the_client_fqdn_is_kept_in_the_lease_and_answered_with_the_s_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(6);
    let mut req = c.msg(MessageType::Request, true, Some(None));
    req.opts_mut()
        .insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::ClientFqdn,
            vec![0, 4, b'W', b'e', b'b', b'6', 0],
        )));
    let r = ask(&mut h, &c, &req).unwrap();
    match r.opts().get(OptionCode::ClientFqdn) {
        Some(DhcpOption::Unknown(u)) => assert_eq!(u.data(), [1, 4, b'w', b'e', b'b', b'6', 0]),
        other => panic!("no FQDN back: {other:?}"),
    }
    assert_eq!(h.pool().leases_at(NOW)[0].hostname.as_deref(), Some("web6"));
    // A renewal without the option keeps the name.
    let (ip, ..) = address(&r).unwrap();
    ask(&mut h, &c, &c.msg(MessageType::Renew, true, Some(Some(ip)))).unwrap();
    assert_eq!(h.pool().leases_at(NOW)[0].hostname.as_deref(), Some("web6"));
}

#[test]
fn decline_quarantines_and_confirm_checks_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(7);
    let r = ask(&mut h, &c, &c.msg(MessageType::Request, true, Some(None))).unwrap();
    let (ip, ..) = address(&r).unwrap();
    let r = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Decline, true, Some(Some(ip))),
    )
    .unwrap();
    assert_eq!(status(&r), Some(Status::Success));
    assert!(h.pool().store().index().quarantined_until(ip).is_some());
    let r = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Request, true, Some(Some(ip))),
    )
    .unwrap();
    assert_ne!(
        address(&r).map(|a| a.0),
        Some(ip),
        "a declined address is not handed out"
    );

    let on = ask(
        &mut h,
        &c,
        &c.msg(MessageType::Confirm, false, Some(Some(ip))),
    )
    .unwrap();
    assert_eq!(status(&on), Some(Status::Success));
    let off = ask(
        &mut h,
        &c,
        &c.msg(
            MessageType::Confirm,
            false,
            Some(Some("2001:db8::5".parse().unwrap())),
        ),
    )
    .unwrap();
    assert_eq!(status(&off), Some(Status::NotOnLink));
}

#[test]
fn pxe_clients_get_a_boot_file_url_for_their_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(8);
    let url = |m: &Message| match m.opts().get(OptionCode::OptBootfileUrl) {
        Some(DhcpOption::Unknown(u)) => Some(String::from_utf8(u.data().to_vec()).unwrap()),
        _ => None,
    };
    let mut pxe = c.msg(MessageType::Solicit, false, Some(None));
    pxe.opts_mut()
        .insert(DhcpOption::ClientArchType(vec![Architecture(7)]));
    let r = ask(&mut h, &c, &pxe).unwrap();
    assert_eq!(url(&r).as_deref(), Some("tftp://[fd00:122::1]/ipxe.efi"));
    let mut http = c.msg(MessageType::Solicit, false, Some(None));
    http.opts_mut()
        .insert(DhcpOption::ClientArchType(vec![Architecture(16)]));
    let r = ask(&mut h, &c, &http).unwrap();
    assert_eq!(
        url(&r).as_deref(),
        Some("http://[fd00:122::1]:8069/ipxe.efi")
    );
    match r.opts().get(OptionCode::VendorClass) {
        Some(DhcpOption::VendorClass(v)) => assert_eq!(v.data, vec![b"HTTPClient".to_vec()]),
        other => panic!("no vendor class: {other:?}"),
    }
    let plain = ask(&mut h, &c, &c.msg(MessageType::Solicit, false, Some(None))).unwrap();
    assert_eq!(url(&plain), None);
}

#[test]
fn malformed_and_foreign_packets_are_dropped_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let c = Client::new(9);
    let good = bytes(&c.msg(MessageType::Solicit, false, Some(None)));
    let mut cut = good.clone();
    cut.truncate(good.len() - 3);
    let mut foreign = c.msg(MessageType::Request, false, Some(None));
    foreign.opts_mut().insert(DhcpOption::ServerId(vec![
        0, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ]));
    let foreign = bytes(&foreign);
    let advertise = {
        let mut b = good.clone();
        b[0] = 2;
        b
    };
    let out = answer_batch(
        &mut h,
        &[
            (&cut, c.from),
            (&foreign, c.from),
            (&advertise, c.from),
            (&[1, 2][..], c.from),
            (&good, c.from),
        ],
        NOW,
    );
    assert_eq!(out.len(), 1, "only the good Solicit is answered");
    let dropped = h.stats().snapshot().dropped;
    for reason in [
        Drop6::OptionOverflow,
        Drop6::NotForUs,
        Drop6::NotClientMessage,
        Drop6::Short,
    ] {
        assert_eq!(dropped.get(reason.as_str()), Some(&1), "{reason:?}");
    }
}

#[test]
fn a_storm_of_clients_gets_distinct_addresses_until_the_range_is_full_and_all_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(config(dir.path(), false));
    let clients: Vec<Client> = (100..400).map(Client::new).collect();
    let requests: Vec<Vec<u8>> = clients
        .iter()
        .map(|c| bytes(&c.msg(MessageType::Request, true, Some(None))))
        .collect();
    let mut got = Vec::new();
    for chunk in clients.iter().zip(&requests).collect::<Vec<_>>().chunks(64) {
        let batch: Vec<(&[u8], SocketAddrV6)> =
            chunk.iter().map(|(c, b)| (b.as_slice(), c.from)).collect();
        for r in answer_batch(&mut h, &batch, NOW) {
            let m = Message::decode(&mut Decoder::new(&r.bytes)).unwrap();
            if let Some((ip, ..)) = address(&m) {
                got.push(ip);
            }
        }
    }
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no address twice");
    assert_eq!(
        got.len(),
        256,
        "the range has 256 addresses, all handed out"
    );
    assert!(got.iter().all(|ip| in_range(*ip)));
    assert_eq!(h.stats().snapshot().exhausted, 44);
    let (reopened, _) = Pool6::open(&config(dir.path(), false)).unwrap();
    assert_eq!(reopened.leases_at(NOW).len(), 256);
}
