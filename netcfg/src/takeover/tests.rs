//! The takeover's order of operations and its rollback, step by step against the recording
//! fake (tests/tests/takeover.rs does the same with the real kernel and live TCP sessions).

use std::collections::BTreeMap;

use hwaddr::Mac;

use crate::apply::apply_with;
use crate::hostops::fake::FakeHost;
use crate::link::{Addr, AddrDetail, Link, Route};
use crate::model::{Desired, Host, Mode, NetworkSpec, Services};
use crate::plan::{plan_with, Action};
use crate::teardown::teardown_with;

const ETH0_MAC: Mac = Mac([0x02, 0xaa, 0, 0, 0, 5]);

fn host() -> Host {
    Host::new("/r", "/var/lib/hostagent")
}

fn uplink(stp: bool) -> Desired {
    Desired {
        networks: vec![NetworkSpec {
            name: "uplink".into(),
            mode: Mode::Bridge,
            bridge: "br0".into(),
            address: None,
            stp,
            forward_delay: 0,
            mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
            mtu: None,
            interfaces: vec!["eth0".into()],
            services: Services::default(),
            ipv6: None,
        }],
        sysctls: BTreeMap::new(),
        ..Desired::default()
    }
}

fn default_route() -> Route {
    Route {
        table: 254,
        dst: "0.0.0.0/0".parse().unwrap(),
        gateway: Some("10.0.0.1".parse().unwrap()),
        oif: Some(2),
        metric: Some(100),
        protocol: 4,
        scope: 0,
        kind: 1,
        prefsrc: None,
        onlink: false,
        tos: 0,
        mtu: None,
        advmss: None,
        unmovable: None,
    }
}

/// A host whose only uplink eth0 (ifindex 2) has 10.0.0.5/24 (with broadcast) and
/// 10.0.0.6/24, and the default route through it.
fn one_nic_host() -> FakeHost {
    let mut f = FakeHost::new();
    f.state.links.push(Link {
        index: 2,
        name: "eth0".into(),
        mac: Some(ETH0_MAC),
        mtu: 1500,
        up: true,
        alias: None,
        kind: Some("veth".into()),
        controller: None,
        bridge: None,
    });
    for net in ["10.0.0.5/24", "10.0.0.6/24"] {
        f.state.addrs.push(Addr {
            index: 2,
            net: net.parse().unwrap(),
        });
    }
    f.state.details.push(AddrDetail {
        index: 2,
        net: "10.0.0.5/24".parse().unwrap(),
        broadcast: Some("10.0.0.255".parse().unwrap()),
        label_suffix: None,
        noprefixroute: false,
        permanent: true,
        valid_secs: u32::MAX,
    });
    f.state.routes.push(default_route());
    f
}

#[tokio::test]
async fn the_bridge_comes_up_with_the_port_mac_before_the_port_joins_then_addresses_routes_and_port_cleared(
) {
    let mut f = one_nic_host();
    let plan = plan_with(&mut f, &host(), &uplink(false)).await.unwrap();
    let shown: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        shown[..7],
        [
            "create bridge br0 for network uplink (mac 02:aa:00:00:00:05, mtu default, stp off, forward delay 0 s)",
            "set link br0 up",
            "add port eth0 to bridge br0 and set it up",
            "move 10.0.0.5/24 from eth0 to br0",
            "move 10.0.0.6/24 from eth0 to br0",
            "move default via 10.0.0.1 dev eth0 proto static metric 100 → dev br0",
            "remove 10.0.0.5/24, 10.0.0.6/24 from eth0 (on br0 now; eth0's own subnet routes go with it)",
        ]
    );
    f.log.clear();
    apply_with(&mut f, &host(), &plan, None).await.unwrap();
    let changes: Vec<&str> = f
        .log
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("write_file") && !l.starts_with("nft"))
        .collect();
    assert_eq!(
        changes,
        [
            "create_bridge br0 mac 02:aa:00:00:00:05 mtu default stp off delay 0",
            "set_alias 20 hostagent:uplink",
            "set_up 20 up",
            "set_controller 2 20",
            "add_addr 20 10.0.0.5/24",
            "add_addr 20 10.0.0.6/24",
            "replace_route default via 10.0.0.1 dev - proto static metric 100 20",
            // Secondary first: removing a primary takes its secondaries with it.
            "del_addr 2 10.0.0.6/24",
            "del_addr 2 10.0.0.5/24",
        ]
    );
    let owned = f.owned(&host()).unwrap();
    let t = &owned.takeovers[0];
    assert_eq!((t.port.as_str(), t.port_mac), ("eth0", Some(ETH0_MAC)));
    assert_eq!(
        t.addresses[0].broadcast,
        Some("10.0.0.255".parse().unwrap())
    );
    assert_eq!(t.routes.len(), 1);
    // Converged: the read-back passed, and the next plan is empty.
    assert!(plan_with(&mut f, &host(), &uplink(false))
        .await
        .unwrap()
        .actions
        .is_empty());

    // down: addresses back on the port, the route switched back, then off the bridge.
    f.log.clear();
    teardown_with(&mut f, &host()).await.unwrap();
    let changes: Vec<&str> = f
        .log
        .iter()
        .map(String::as_str)
        .filter(|l| {
            !l.starts_with("write_file") && !l.starts_with("nft") && !l.starts_with("remove_file")
        })
        .collect();
    assert_eq!(
        changes,
        [
            "add_addr 2 10.0.0.5/24",
            "add_addr 2 10.0.0.6/24",
            "replace_route default via 10.0.0.1 dev - proto static metric 100 2",
            "del_addr 20 10.0.0.6/24",
            "del_addr 20 10.0.0.5/24",
            "delete_link 20",
        ]
    );
    let mut fresh = one_nic_host().snapshot();
    fresh.nft = None;
    assert_eq!(f.snapshot(), fresh, "eth0 exactly as before");
}

#[tokio::test]
async fn a_failure_at_any_step_of_a_takeover_undoes_it_in_reverse_and_the_port_is_as_before() {
    let mut probe = one_nic_host();
    let plan = plan_with(&mut probe, &host(), &uplink(false))
        .await
        .unwrap();
    for k in 0..plan.actions.len() {
        let mut f = one_nic_host();
        let before = f.snapshot();
        let err = apply_with(&mut f, &host(), &plan, Some(k))
            .await
            .unwrap_err();
        assert!(err.undo_errors.is_empty(), "step {k}: {err}");
        assert_eq!(
            f.snapshot(),
            before,
            "after a failure at step {k} ({})",
            plan.actions[k]
        );
        assert!(f.owned(&host()).is_none(), "step {k}: no record left");
    }
    // A failure in the middle of clearing the port re-adds what was already removed.
    let mut f = one_nic_host();
    let before = f.snapshot();
    f.fail = vec!["del_addr 2 10.0.0.5/24".into()];
    apply_with(&mut f, &host(), &plan, None).await.unwrap_err();
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn stp_a_dynamic_address_or_an_unmovable_route_is_refused_before_anything_changes() {
    let mut f = one_nic_host();
    let err = plan_with(&mut f, &host(), &uplink(true)).await.unwrap_err();
    assert!(err.to_string().contains("needs stp = false"), "{err}");

    let mut f = one_nic_host();
    f.state.details[0].permanent = false;
    f.state.details[0].valid_secs = 3400;
    let err = plan_with(&mut f, &host(), &uplink(false))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("10.0.0.5/24 on eth0 is dynamic (3400 s left"),
        "{err}"
    );

    let mut f = one_nic_host();
    f.state.routes[0].unmovable = Some("it has several next hops".into());
    let err = plan_with(&mut f, &host(), &uplink(false))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot be moved to br0: it has several next hops"),
        "{err}"
    );
    assert!(f.log.is_empty(), "nothing was changed: {:?}", f.log);
}

#[tokio::test]
async fn a_port_without_addresses_is_only_enslaved_and_the_bridge_keeps_its_configured_mac() {
    let mut f = one_nic_host();
    f.state.addrs.clear();
    f.state.details.clear();
    f.state.routes.clear();
    let plan = plan_with(&mut f, &host(), &uplink(true)).await.unwrap();
    assert!(plan.actions.iter().all(|a| !matches!(
        a,
        Action::MoveAddress { .. } | Action::MoveRoute { .. } | Action::ClearPort { .. }
    )));
    assert!(plan.actions[0]
        .to_string()
        .contains("mac 52:54:00:00:00:01"));
}
