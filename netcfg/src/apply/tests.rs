//! The executor against the recording fake: what runs, in which order, on success and after a
//! failure at every step. (The root integration tests, tests/tests/netcfg_safety.rs, check the
//! same on the real kernel.)

use std::collections::BTreeMap;

use hwaddr::Mac;

use super::*;
use crate::hostops::fake::FakeHost;
use crate::link::{Addr, BridgeInfo};
use crate::model::{Desired, Mode, NetworkSpec};
use crate::plan::plan_with;

const OWNED: &str = "/r/var/lib/hostagent/owned.json";
const WRITE_OWNED: &str = "write_file /r/var/lib/hostagent/owned.json";
const OLD_TABLES: &str = "table inet hostagent { # the previous rules }\n";

fn host() -> Host {
    Host::new("/r", "/var/lib/hostagent")
}

fn link(index: u32, name: &str, kind: &str, alias: Option<&str>, mac: u8, up: bool) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(Mac([0x52, 0x54, 0, 0, 0, mac])),
        mtu: 1500,
        up,
        alias: alias.map(String::from),
        kind: Some(kind.into()),
        controller: None,
        bridge: (kind == "bridge").then_some(BridgeInfo {
            stp: false,
            forward_delay: 0,
        }),
    }
}

/// A host hostagent applied an older config to: it owns br-old (ifindex 5, with an address) and
/// its firewall; eth1 is a free port, down.
fn previously_applied() -> FakeHost {
    let mut f = FakeHost::new();
    f.state.links.push(link(3, "eth1", "veth", None, 3, false));
    f.state
        .links
        .push(link(5, "br-old", "bridge", Some("hostagent:old"), 5, true));
    f.state.addrs.push(Addr {
        index: 5,
        net: "10.66.0.1/24".parse().unwrap(),
    });
    f.state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    f.state.sysctls.insert("vm.swappiness".into(), "60".into());
    let mut owned = Owned::default();
    owned.record_bridge(OwnedBridge {
        network: "old".into(),
        name: "br-old".into(),
        ifindex: 5,
        mac: Some(Mac([0x52, 0x54, 0, 0, 0, 5])),
    });
    f.state.files.insert(OWNED.into(), owned.to_json());
    f.state.nft = Some(OLD_TABLES.into());
    f
}

fn net(name: &str, mode: Mode, mac: u8) -> NetworkSpec {
    NetworkSpec {
        mac: Mac([0x52, 0x54, 0, 0, 0, mac]),
        ..NetworkSpec::test(name, mode, &format!("br-{name}"))
    }
}

/// A nat network with an address, a bridge-mode network with a port, one `[sysctl]` key; br-old
/// is no longer configured.
fn desired() -> Desired {
    let mut lab = net("lab", Mode::Nat, 1);
    lab.address = Some("10.77.0.1/24".parse().unwrap());
    lab.mtu = Some(1500);
    let mut prov = net("prov", Mode::Bridge, 2);
    prov.interfaces = vec!["eth1".into()];
    Desired {
        networks: vec![lab, prov],
        sysctls: BTreeMap::from([("vm.swappiness".to_string(), "10".to_string())]),
        ..Desired::default()
    }
}

/// One plan step: the changes performing it makes, then its undos in the order they are
/// recorded, each undo as the changes it makes.
struct Step {
    does: Vec<String>,
    undoes: Vec<Vec<String>>,
}

fn step(does: &[&str], undoes: &[&[&str]]) -> Step {
    Step {
        does: does.iter().map(|s| s.to_string()).collect(),
        undoes: undoes
            .iter()
            .map(|u| u.iter().map(|s| s.to_string()).collect())
            .collect(),
    }
}

/// The plan for `desired()` on `previously_applied()`, step by step. This table is the spec the
/// tests check the log against.
fn expected_steps() -> Vec<Step> {
    let restore = format!("nft_load restore {OLD_TABLES}");
    vec![
        step(
            &[
                "create_bridge br-lab mac 52:54:00:00:00:01 mtu 1500 stp off delay 0",
                "set_alias 20 hostagent:lab",
                WRITE_OWNED,
            ],
            &[&["delete_link 20"]],
        ),
        step(
            &["add_addr 20 10.77.0.1/24"],
            &[&["del_addr 20 10.77.0.1/24"]],
        ),
        step(&["set_up 20 up"], &[&["set_up 20 down"]]),
        step(
            &[
                "create_bridge br-prov mac 52:54:00:00:00:02 mtu default stp off delay 0",
                "set_alias 21 hostagent:prov",
                WRITE_OWNED,
            ],
            &[&["delete_link 21"]],
        ),
        step(
            &["set_controller 3 21", "set_up 3 up"],
            &[&["set_controller 3 0"], &["set_up 3 down"]],
        ),
        step(&["set_up 21 up"], &[&["set_up 21 down"]]),
        step(
            &["write_sysctl net.ipv4.ip_forward 1", WRITE_OWNED],
            &[&["write_sysctl net.ipv4.ip_forward 0"]],
        ),
        step(
            &["write_sysctl vm.swappiness 10", WRITE_OWNED],
            &[&["write_sysctl vm.swappiness 60"]],
        ),
        step(
            &["write_file /r/etc/sysctl.d/90-hostagent.conf"],
            &[&["remove_file /r/etc/sysctl.d/90-hostagent.conf"]],
        ),
        step(&["nft_load"], &[&[restore.as_str()]]),
        step(
            &["delete_link 5", WRITE_OWNED],
            &[&[
                "create_bridge br-old mac 52:54:00:00:00:05 mtu 1500 stp off delay 0",
                "set_alias 22 hostagent:old",
                "add_addr 22 10.66.0.1/24",
                "set_up 22 up",
            ]],
        ),
    ]
}

/// The undos of `steps`, in the order a rollback must run them: last step first, and within a
/// step its last recorded undo first.
fn rollback_of(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .rev()
        .flat_map(|s| s.undoes.iter().rev().flatten().cloned())
        .collect()
}

async fn planned() -> (FakeHost, Plan) {
    let mut f = previously_applied();
    let plan = plan_with(&mut f, &host(), &desired()).await.expect("plan");
    f.log.clear();
    (f, plan)
}

#[tokio::test]
async fn the_plan_is_the_one_the_step_table_describes() {
    let (_, plan) = planned().await;
    let shown: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        shown,
        [
            "create bridge br-lab for network lab (mac 52:54:00:00:00:01, mtu 1500, stp off, forward delay 0 s)",
            "add address 10.77.0.1/24 to br-lab",
            "set link br-lab up",
            "create bridge br-prov for network prov (mac 52:54:00:00:00:02, mtu default, stp off, forward delay 0 s)",
            "add port eth1 to bridge br-prov and set it up",
            "set link br-prov up",
            "set net.ipv4.ip_forward 0 → 1 (for forwarding networks; `down` restores it)",
            "set vm.swappiness 60 → 10 (`down` restores it)",
            "write /etc/sysctl.d/90-hostagent.conf (1 key)",
            "replace nftables table inet hostagent (2 networks)",
            "delete bridge br-old (hostagent's, for network old, no longer configured)",
        ]
    );
    assert_eq!(plan.actions.len(), expected_steps().len());
}

#[tokio::test]
async fn a_successful_apply_observes_once_performs_every_step_in_order_and_records_the_bridges() {
    let mut f = previously_applied();
    let plan = plan_with(&mut f, &host(), &desired()).await.expect("plan");
    assert_eq!(f.observations, 1, "plan observes once");
    let report = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect("apply");
    assert_eq!(f.observations, 2, "apply observes once more, to read back");
    assert_eq!(report.steps.len(), plan.actions.len());
    let performed: Vec<String> = expected_steps().into_iter().flat_map(|s| s.does).collect();
    assert_eq!(f.log, performed);

    let owned = f.owned(&host()).expect("owned.json");
    let recorded: Vec<(&str, u32, Option<Mac>)> = owned
        .bridges
        .iter()
        .map(|b| (b.name.as_str(), b.ifindex, b.mac))
        .collect();
    assert_eq!(
        recorded,
        [
            ("br-lab", 20, Some(Mac([0x52, 0x54, 0, 0, 0, 1]))),
            ("br-prov", 21, Some(Mac([0x52, 0x54, 0, 0, 0, 2])))
        ]
    );
    assert_eq!(owned.sysctl("net.ipv4.ip_forward").unwrap().previous, "0");
    assert_eq!(
        f.state.nft.as_deref(),
        Some(crate::nft::render(&desired()).as_str())
    );
    // The host converged: the next plan is empty.
    let again = plan_with(&mut f, &host(), &desired()).await.unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[tokio::test]
async fn a_failure_at_any_step_undoes_every_performed_step_in_exact_reverse_order() {
    let steps = expected_steps();
    for k in 0..steps.len() {
        let (mut f, plan) = planned().await;
        let before = f.snapshot();
        f.fail = vec![steps[k].does[0].clone()];
        let err = apply_with(&mut f, &host(), &plan, None)
            .await
            .expect_err("the cued change fails");
        assert_eq!(err.step, plan.actions[k].to_string());
        assert!(err.undo_errors.is_empty(), "step {k}: {err}");

        let mut want: Vec<String> = steps[..k].iter().flat_map(|s| s.does.clone()).collect();
        want.push(format!("FAILED {}", steps[k].does[0]));
        want.extend(rollback_of(&steps[..k]));
        want.push(WRITE_OWNED.into());
        assert_eq!(f.log, want, "failure at step {k}");
        assert_eq!(f.snapshot(), before, "host after a failure at step {k}");
    }
}

#[tokio::test]
async fn a_failure_inside_a_step_undoes_the_part_of_it_already_done() {
    let steps = expected_steps();
    // (step, its change that fails): the bridge is made but its alias fails, the port is
    // enslaved but will not come up.
    for (k, j) in [(0, 1), (4, 1)] {
        let (mut f, plan) = planned().await;
        let before = f.snapshot();
        f.fail = vec![steps[k].does[j].clone()];
        apply_with(&mut f, &host(), &plan, None)
            .await
            .expect_err("fails");
        let mut want: Vec<String> = steps[..k].iter().flat_map(|s| s.does.clone()).collect();
        want.extend(steps[k].does[..j].iter().cloned());
        want.push(format!("FAILED {}", steps[k].does[j]));
        // What this step recorded before failing, then the earlier steps'.
        let partial = Step {
            does: vec![],
            undoes: steps[k].undoes[..j].to_vec(),
        };
        want.extend(rollback_of(std::slice::from_ref(&partial)));
        want.extend(rollback_of(&steps[..k]));
        want.push(WRITE_OWNED.into());
        assert_eq!(f.log, want, "failure in step {k} at change {j}");
        assert_eq!(f.snapshot(), before);
    }
}

#[tokio::test]
async fn a_failed_read_back_undoes_everything_and_records_the_recreated_bridge_new_ifindex() {
    let (mut f, plan) = planned().await;
    let before = f.snapshot();
    f.fail = vec!["observe".into()];
    let err = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("read back fails");
    assert_eq!(err.step, "read back");
    assert!(err.undo_errors.is_empty(), "{err}");
    let steps = expected_steps();
    let mut want: Vec<String> = steps.iter().flat_map(|s| s.does.clone()).collect();
    want.extend(rollback_of(&steps));
    want.push(WRITE_OWNED.into());
    assert_eq!(f.log, want);

    // br-old is back as it was, under a new ifindex (22), and owned.json points at that.
    let old = f
        .state
        .links
        .iter()
        .find(|l| l.name == "br-old")
        .expect("br-old recreated");
    assert_eq!(old.index, 22);
    assert_eq!(old.alias.as_deref(), Some("hostagent:old"));
    assert_eq!(old.mac, Some(Mac([0x52, 0x54, 0, 0, 0, 5])));
    assert!(old.up);
    assert!(f.state.addrs.contains(&Addr {
        index: 22,
        net: "10.66.0.1/24".parse().unwrap()
    }));
    let owned = f.owned(&host()).expect("owned.json");
    assert_eq!(owned.bridges.len(), 1);
    assert_eq!(
        (owned.bridges[0].name.as_str(), owned.bridges[0].ifindex),
        ("br-old", 22)
    );
    // Everything else is as before.
    let after = f.snapshot();
    assert_eq!((after.sysctls, after.nft), (before.sysctls, before.nft));
    assert_eq!(after.links.len(), before.links.len());
}

#[tokio::test]
async fn a_read_back_that_still_differs_is_rolled_back() {
    let (mut f, mut plan) = planned().await;
    let before = f.snapshot();
    // A plan that leaves the firewall out cannot converge.
    plan.actions
        .retain(|a| !matches!(a, Action::ReplaceFirewall { .. }));
    let err = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("read back differs");
    assert_eq!(err.step, "read back");
    assert!(
        matches!(&err.cause, Error::ReadBack(left) if left == &["replace nftables table inet hostagent (2 networks)"]),
        "{err}"
    );
    // br-old was recreated with a new ifindex; the rest is exactly as before.
    let after = f.snapshot();
    assert_eq!((after.sysctls, after.nft), (before.sysctls, before.nft));
    assert_eq!(
        after.links.iter().map(|l| &l.name).collect::<Vec<_>>(),
        ["eth1", "br-old"]
    );
    assert_eq!(after.addrs.len(), 1);
    assert_eq!(after.files.len(), 1, "only owned.json: {:?}", after.files);
}

#[tokio::test]
async fn every_undo_error_is_collected_and_the_other_undos_still_run() {
    let (mut f, plan) = planned().await;
    f.fail = vec![
        "observe".into(),
        "del_addr 20 10.77.0.1/24".into(),
        "set_controller 3 0".into(),
    ];
    let err = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("fails");
    assert_eq!(err.undo_errors.len(), 2, "{err}");
    assert!(err.undo_errors[0].contains("set_controller 3 0"), "{err}");
    assert!(err.undo_errors[1].contains("del_addr 20"), "{err}");
    assert!(
        err.to_string().contains("undo also failed (2 error(s))"),
        "{err}"
    );
    // The undos after each failure still ran, down to the first step's, then owned.json.
    let tail: Vec<&str> = f.log.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            WRITE_OWNED,
            "delete_link 20",
            "FAILED del_addr 20 10.77.0.1/24"
        ]
    );
    assert!(f.log.contains(&"set_up 3 down".to_string()));
}

#[tokio::test]
async fn a_failed_nft_listing_fails_the_step_instead_of_counting_as_no_table() {
    let (mut f, plan) = planned().await;
    f.fail = vec!["nft_saved".into()];
    let err = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("fails");
    assert_eq!(
        err.step,
        "replace nftables table inet hostagent (2 networks)"
    );
    assert!(
        !f.log.iter().any(|l| l.starts_with("nft_")),
        "neither loaded nor deleted: {:?}",
        f.log
    );
    assert_eq!(
        f.state.nft.as_deref(),
        Some(OLD_TABLES),
        "the previous tables stay"
    );
}

#[tokio::test]
async fn a_bridge_replaced_between_plan_and_apply_is_not_deleted() {
    let (mut f, plan) = planned().await;
    // Someone deletes br-old and makes their own under the same name.
    f.state.links.retain(|l| l.name != "br-old");
    f.state
        .links
        .push(link(9, "br-old", "bridge", None, 9, true));
    let before = f.snapshot();
    let err = apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("stale");
    assert!(
        matches!(&err.cause, Error::Stale { name, .. } if name == "br-old"),
        "{err}"
    );
    assert!(!f.log.iter().any(|l| l == "delete_link 9"), "{:?}", f.log);
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn mark_owned_records_a_marked_but_unrecorded_bridge_and_rollback_forgets_it_again() {
    let mut f = FakeHost::new();
    f.state
        .links
        .push(link(7, "br-lab", "bridge", Some("hostagent:lab"), 1, true));
    let d = Desired {
        networks: vec![net("lab", Mode::Isolated, 1)],
        ..Desired::default()
    };
    let plan = plan_with(&mut f, &host(), &d).await.unwrap();
    assert_eq!(
        plan.actions[0],
        Action::MarkOwned {
            network: "lab".into(),
            name: "br-lab".into(),
            ifindex: 7
        }
    );
    f.fail = vec!["observe".into()];
    apply_with(&mut f, &host(), &plan, None)
        .await
        .expect_err("read back fails");
    assert_eq!(f.log[0], "set_alias 7 hostagent:lab");
    assert_eq!(f.log[1], WRITE_OWNED);
    assert_eq!(
        f.log.last().map(String::as_str),
        Some(format!("remove_file {OWNED}").as_str())
    );
    assert!(f.state.files.is_empty(), "no owned.json before, none after");

    f.fail.clear();
    apply_with(&mut f, &host(), &plan, None).await.unwrap();
    let owned = f.owned(&host()).expect("owned.json");
    assert_eq!(owned.bridge("br-lab").map(|b| b.ifindex), Some(7));
}

#[tokio::test]
async fn set_bridge_mac_keeps_the_record_current_and_its_undo_restores_the_old_mac() {
    let mut f = FakeHost::new();
    let d = Desired {
        networks: vec![net("lab", Mode::Isolated, 1)],
        ..Desired::default()
    };
    let plan = plan_with(&mut f, &host(), &d).await.unwrap();
    apply_with(&mut f, &host(), &plan, None).await.unwrap();
    // Drift: someone changes the MAC.
    f.state.links[0].mac = Some(Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55]));
    let plan = plan_with(&mut f, &host(), &d).await.unwrap();
    assert_eq!(
        plan.actions,
        [Action::SetBridgeMac {
            name: "br-lab".into(),
            from: Some(Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55])),
            to: Mac([0x52, 0x54, 0, 0, 0, 1]),
        }]
    );
    f.log.clear();
    f.fail = vec!["observe".into()];
    apply_with(&mut f, &host(), &plan, None).await.unwrap_err();
    assert_eq!(
        f.log,
        [
            "set_mac 20 52:54:00:00:00:01",
            WRITE_OWNED,
            "set_mac 20 02:11:22:33:44:55",
            WRITE_OWNED
        ]
    );
}
