//! `down` against the recording fake (error collection, what is kept for a later try), then on
//! the real kernel in a namespace (the ownership rule and a real nft failure).

use std::path::Path;

use hwaddr::Mac;

use super::*;
use crate::hostops::fake::FakeHost;
use crate::link::{BridgeInfo, Link};
use crate::owned::{OwnedBridge, SysctlChange};

const OWNED: &str = "/r/var/lib/hostagent/owned.json";
const DROPIN: &str = "/r/etc/sysctl.d/90-hostagent.conf";

fn host() -> Host {
    Host::new("/r", "/var/lib/hostagent")
}

fn bridge(index: u32, name: &str, alias: &str) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(Mac([0x52, 0x54, 0, 0, 0, index as u8])),
        mtu: 1500,
        up: true,
        alias: Some(alias.into()),
        kind: Some("bridge".into()),
        controller: None,
        bridge: Some(BridgeInfo {
            stp: false,
            forward_delay: 0,
        }),
    }
}

fn record(network: &str, name: &str, ifindex: u32) -> OwnedBridge {
    OwnedBridge {
        network: network.into(),
        name: name.into(),
        ifindex,
        mac: Some(Mac([0x52, 0x54, 0, 0, 0, ifindex as u8])),
    }
}

/// Two bridges, the table, a drop-in and ip_forward, all the agent's.
fn applied() -> FakeHost {
    let mut f = FakeHost::new();
    f.state.links.push(bridge(5, "br-a", "hostagent:a"));
    f.state.links.push(bridge(6, "br-b", "hostagent:b"));
    f.state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    f.state.files.insert(
        DROPIN.into(),
        crate::files::render_sysctl_dropin(
            &[("vm.swappiness".to_string(), "10".to_string())].into(),
        )
        .unwrap(),
    );
    let mut owned = Owned::default();
    owned.record_bridge(record("a", "br-a", 5));
    owned.record_bridge(record("b", "br-b", 6));
    owned.record_sysctl(SysctlChange {
        key: "net.ipv4.ip_forward".into(),
        previous: "0".into(),
        set: "1".into(),
    });
    f.state.files.insert(OWNED.into(), owned.to_json());
    f.state.nft = Some("table inet hostagent {}\n".into());
    f
}

#[tokio::test]
async fn everything_recorded_and_still_ours_is_removed_and_the_record_cleared() {
    let mut f = applied();
    let report = teardown_with(&mut f, &host()).await.expect("down");
    assert_eq!(
        report.removed,
        [
            "bridge br-a (network a)",
            "bridge br-b (network b)",
            "nftables table inet hostagent",
            "/etc/sysctl.d/90-hostagent.conf",
            "net.ipv4.ip_forward = 1 (restored the previous value 0)",
        ]
    );
    assert!(f.state.links.is_empty() && f.state.nft.is_none() && f.state.files.is_empty());
    assert_eq!(f.state.sysctls["net.ipv4.ip_forward"], "0");
}

#[tokio::test]
async fn every_error_is_collected_the_rest_still_runs_and_what_failed_stays_recorded() {
    let mut f = applied();
    f.fail = vec![
        "delete_link 5".into(),
        "nft_delete".into(),
        format!("remove_file {DROPIN}"),
    ];
    let err = teardown_with(&mut f, &host())
        .await
        .expect_err("three failures");
    assert_eq!(err.errors.len(), 3, "{err}");
    assert_eq!(
        err.report.removed,
        [
            "bridge br-b (network b)",
            "net.ipv4.ip_forward = 1 (restored the previous value 0)"
        ]
    );
    // The bridge that could not be deleted keeps its record for the next `down`.
    let owned = f.owned(&host()).expect("owned.json kept");
    assert_eq!(owned.bridges, [record("a", "br-a", 5)]);
    assert!(owned.sysctls.is_empty());
    assert!(f.state.links.iter().any(|l| l.name == "br-a"));
}

#[tokio::test]
async fn without_the_link_dump_no_bridge_record_is_dropped() {
    let mut f = applied();
    f.fail = vec!["links".into()];
    let err = teardown_with(&mut f, &host())
        .await
        .expect_err("links fail");
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        !err.report
            .left_alone
            .iter()
            .any(|l| l.contains("already gone")),
        "{:?}",
        err.report.left_alone
    );
    let owned = f.owned(&host()).expect("owned.json kept");
    assert_eq!(owned.bridges.len(), 2, "both bridges still recorded");
    assert!(f.state.nft.is_none(), "the rest still ran");
}

#[tokio::test]
async fn a_failed_nft_listing_is_an_error_not_nothing_to_remove() {
    let mut f = applied();
    f.fail = vec!["nft_saved".into()];
    let err = teardown_with(&mut f, &host())
        .await
        .expect_err("listing fails");
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        f.state.nft.is_some(),
        "the table is still there, and down says so"
    );
}

#[tokio::test]
async fn a_corrupt_owned_json_is_reported_and_left_in_place() {
    let mut f = applied();
    f.state.files.insert(OWNED.into(), "{not json".into());
    let err = teardown_with(&mut f, &host()).await.expect_err("corrupt");
    assert!(err.errors[0].contains("corrupt state file"), "{err}");
    assert_eq!(f.state.files[Path::new(OWNED)], "{not json");
    assert_eq!(f.state.links.len(), 2, "no record, no bridge removed");
}

#[tokio::test]
async fn only_bridges_that_are_still_ours_are_removed() {
    let mut f = applied();
    // br-a: MAC changed by hand (still ours); br-b: alias changed (taken over); br-c: recorded,
    // but the device of that name is another one (ifindex 9).
    f.state.links[0].mac = Some(Mac([2, 0, 0, 0, 0, 0x77]));
    f.state.links[1].alias = Some("mine-now".into());
    f.state.links.push(bridge(9, "br-c", "hostagent:c"));
    let mut owned = f.owned(&host()).unwrap();
    owned.record_bridge(record("c", "br-c", 7));
    f.state.files.insert(OWNED.into(), owned.to_json());

    let report = teardown_with(&mut f, &host()).await.expect("down");
    assert!(report
        .removed
        .contains(&"bridge br-a (network a)".to_string()));
    let names: Vec<&str> = f.state.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["br-b", "br-c"]);
    assert!(
        report.left_alone[0]
            .starts_with("br-b: hostagent made it, but its alias is no longer hostagent:b"),
        "{:?}",
        report.left_alone
    );
    assert!(
        report.left_alone[1].contains("records ifindex 7")
            && report.left_alone[1].contains("ifindex 9"),
        "{:?}",
        report.left_alone
    );
    assert!(
        f.owned(&host()).is_none(),
        "records of what is left alone are dropped: it is no longer hostagent's"
    );
}

/// The real kernel and the real `nft`.
mod root {
    use super::*;
    use crate::model::{Desired, Mode, NetworkSpec, Services};
    use testkit::{Entered, Netns};

    /// CAP_NET_ADMIN: what `nft` needs.
    const CAP_NET_ADMIN: u32 = 12;

    fn lab(bridge: &str) -> Desired {
        Desired {
            networks: vec![NetworkSpec {
                name: "lab".into(),
                mode: Mode::Nat,
                bridge: bridge.into(),
                address: Some("10.77.0.1/24".parse().unwrap()),
                stp: false,
                forward_delay: 0,
                mac: Mac([0x52, 0x54, 0, 0xaa, 0, 1]),
                mtu: None,
                interfaces: vec![],
                services: Services::default(),
                ipv6: None,
            }],
            ..Desired::default()
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A fresh namespace this thread is in, and a root prefix for files (kept until drop).
    fn scene(tag: &str) -> (Entered, Netns, tempfile::TempDir, Host) {
        let ns = Netns::new(tag);
        let entered = ns.enter_here();
        let root = tempfile::tempdir().expect("tempdir");
        let host = Host::new(root.path(), "/var/lib/hostagent");
        (entered, ns, root, host)
    }

    /// `down` succeeds and reports `what` among what it removed.
    fn down_removes(host: &Host, what: &str) {
        let report = runtime().block_on(teardown(host)).expect("down");
        assert!(report.removed.iter().any(|r| r == what), "{report}");
    }

    async fn apply_lab(host: &Host, bridge: &str) {
        let plan = crate::plan::plan(host, &lab(bridge)).await.expect("plan");
        crate::apply::apply(host, &plan).await.expect("apply");
    }

    #[test]
    fn down_without_nft_rights_reports_the_failure_and_keeps_the_table() {
        let (_in, ns, _root, host) = scene("dnr");
        runtime().block_on(apply_lab(&host, "br-dnr"));

        let err = ns
            .enter_with_children_lacking(CAP_NET_ADMIN, || runtime().block_on(teardown(&host)))
            .expect_err("down must not say all is well when nft cannot even list");
        assert!(
            err.errors
                .iter()
                .any(|e| e.contains("nft list table") && e.contains("Operation not permitted")),
            "{err}"
        );
        // The bridge went (netlink still works); the table is still there.
        assert!(
            err.report.removed.iter().any(|r| r.contains("br-dnr")),
            "{err}"
        );
        assert!(ns
            .ok(&["nft", "list", "tables"])
            .contains("table inet hostagent"));

        // With the rights back, down finishes the job.
        down_removes(&host, "nftables table inet hostagent");
        assert!(!ns.ok(&["nft", "list", "tables"]).contains("hostagent"));
    }

    #[test]
    fn saved_tables_tells_absent_from_failed() {
        let ns = Netns::new("sav");
        let _in = ns.enter_here();
        assert_eq!(
            crate::nft::saved_tables().expect("absent is not an error"),
            None
        );
        crate::nft::replace(&lab("br-sav")).expect("replace");
        let saved = crate::nft::saved_tables().expect("list").expect("present");
        assert!(
            saved.contains("table bridge hostagent") && saved.contains("table inet hostagent"),
            "{saved}"
        );
        let err = ns
            .enter_with_children_lacking(CAP_NET_ADMIN, crate::nft::saved_tables)
            .expect_err("a failed listing is not an absent table");
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }

    #[test]
    fn down_removes_our_bridge_after_its_mac_was_changed() {
        let (_in, ns, _root, host) = scene("dmac");
        runtime().block_on(apply_lab(&host, "br-dmac"));
        ns.ok(&[
            "ip",
            "link",
            "set",
            "br-dmac",
            "address",
            "02:11:22:33:44:55",
        ]);
        down_removes(&host, "bridge br-dmac (network lab)");
        assert!(!ns.ok(&["ip", "-o", "link"]).contains("br-dmac"));
    }

    #[test]
    fn a_bridge_marked_for_another_network_is_not_adopted() {
        let (_in, ns, _root, host) = scene("oth");
        ns.ok(&["ip", "link", "add", "br-oth", "type", "bridge"]);
        ns.ok(&["ip", "link", "set", "br-oth", "alias", "hostagent:other"]);
        let err = runtime()
            .block_on(crate::plan::plan(&host, &lab("br-oth")))
            .expect_err("not ours");
        assert!(matches!(err, crate::Error::ForeignBridge { .. }), "{err}");
        assert!(err.to_string().contains("\"hostagent:other\""), "{err}");
    }
}
