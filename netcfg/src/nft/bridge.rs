//! The agent's bridge-family table (`bridge hostagent`): a per-port limit on DHCP to the host.
//!
//! The DHCP server only sees the bridge device, not the port (tap/veth) a packet came in on, so a
//! guest flooding DHCPDISCOVERs with thousands of random MACs (DHCP starvation) cannot be limited
//! there by port. The bridge family's `input` hook sees frames the bridge delivers to the host with
//! `iifname` = the port, so a dynamic set keyed by the port name, with a `limit` per element,
//! drops what one port sends over its share before it reaches any socket. The server's own
//! per-MAC limit (pxe) then only has to cope with what gets through.
//!
//! Scope: the rule matches `udp dport 67` on every bridge port, not only our bridges' ports.
//! Restricting it with `meta ibrname "<bridge>"` would need the kernel's nft_meta_bridge
//! (CONFIG_NFT_BRIDGE_META), which kernels without it refuse with EOPNOTSUPP. Only packets
//! delivered to the host over the limit are dropped (frames the bridge forwards between ports go
//! through `forward`, untouched), so at worst another local DHCP server on another bridge gets
//! the same protection.
//!
//! The table exists whenever `inet hostagent` does (they are replaced and deleted in the same
//! batch); the rule and its set only when some routed/nat/isolated network serves DHCP and the
//! limit is on (`Desired::dhcp_port_limit`, the config's `[dhcp] port_rate_limit`; 0 turns it off
//! for a port that legitimately carries many clients: a relay, a downstream switch, a benchmark).

use serde_json::{json, Value};

use crate::model::{Desired, Mode, PortLimit};

/// The dynamic set holding one limiter per port.
pub const PORT_SET: &str = "dhcp_ports";
/// Most ports tracked at once; a port idle for `PORT_SET_TIMEOUT_SECS` is forgotten.
pub const PORT_SET_SIZE: u32 = 4096;
pub const PORT_SET_TIMEOUT_SECS: u32 = 60;
/// The rule's comment (also how tests find its counter).
pub const PORT_RULE_COMMENT: &str = "dhcp per-port limit";

/// The per-port DHCP limit the table carries for `desired`: None when the limit is off or no
/// routed/nat/isolated network serves DHCP.
pub fn port_limit(desired: &Desired) -> Option<PortLimit> {
    let serves = desired
        .networks
        .iter()
        .any(|n| n.mode != Mode::Bridge && n.services.dhcp);
    desired.dhcp_port_limit.filter(|_| serves)
}

/// Does the table get the per-port DHCP limit (rule and set)?
pub fn limits_dhcp(desired: &Desired) -> bool {
    port_limit(desired).is_some()
}

/// The body of `table bridge hostagent { ... }` (without the table comment).
pub fn body(desired: &Desired) -> String {
    let mut out = String::new();
    let limit = port_limit(desired);
    if limit.is_some() {
        out.push_str(&format!(
            "\tset {PORT_SET} {{\n\t\ttype ifname\n\t\tsize {PORT_SET_SIZE}\n\t\tflags dynamic,timeout\n\t\ttimeout {PORT_SET_TIMEOUT_SECS}s\n\t}}\n"
        ));
    }
    out.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    if let Some(PortLimit {
        rate_per_sec,
        burst,
    }) = limit
    {
        out.push_str(&format!(
            "\t\tudp dport 67 update @{PORT_SET} {{ iifname limit rate over {rate_per_sec}/second burst {burst} packets }} counter drop comment \"{PORT_RULE_COMMENT}\"\n"
        ));
    }
    out.push_str("\t}\n");
    out
}

/// The rule's `expr` for `limit` as `nft -j list` prints it (counter values zeroed, as observe
/// normalizes).
pub fn rule_json(limit: PortLimit) -> Value {
    json!([
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 67}},
        {"set": {
            "op": "update",
            "elem": {"meta": {"key": "iifname"}},
            "set": format!("@{PORT_SET}"),
            "stmt": [{"limit": {"rate": limit.rate_per_sec, "burst": limit.burst, "per": "second", "inv": true}}]
        }},
        {"counter": {"packets": 0, "bytes": 0}},
        {"drop": null}
    ])
}

/// The set's declaration as observe records it (see `set_signature`).
pub fn set_json() -> Value {
    json!({
        "name": PORT_SET,
        "type": "ifname",
        "size": PORT_SET_SIZE,
        "flags": ["timeout"],
        "timeout": PORT_SET_TIMEOUT_SECS,
    })
}

/// A listed set reduced to its declaration: no handle, table, family or elements (the elements
/// are the live per-port limiters, which change with traffic).
pub fn set_signature(obj: &Value) -> Value {
    let mut sig = serde_json::Map::new();
    for key in [
        "name",
        "type",
        "size",
        "flags",
        "timeout",
        "policy",
        "gc-interval",
    ] {
        if let Some(v) = obj.get(key) {
            sig.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(sig)
}
