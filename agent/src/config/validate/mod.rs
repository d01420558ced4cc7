//! Wire → model. Every check runs and every problem is collected, so one run of `check` shows the
//! whole list. Nothing on the host is touched here.

mod across;
mod dhcp;
mod dhcp6;
mod dns;
mod firewall;
mod forward;
mod guest;
mod guest_macs;
mod ipv6;
mod leases;
mod network;
mod pxe_options;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::checks::{self, Bad};
use super::error::{line_column, Problem};
use super::model::{
    DhcpDefaults, Model, DEFAULT_PORT_RATE_LIMIT, DEFAULT_STATE_DIR, PORT_RATE_LIMIT_RANGE,
};
use super::wire::{self, SysctlValue, S};

/// Collects problems; helpers return `None` for a bad value so checking can go on.
pub(super) struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, span: Range<usize>, bad: Bad) {
        self.problems
            .push(Problem::new(span, bad.message).hint(bad.hint));
    }

    pub(super) fn check<T>(&mut self, span: Range<usize>, result: Result<T, Bad>) -> Option<T> {
        result.map_err(|b| self.report(span, b)).ok()
    }

    /// "line N" of a byte offset, for hints that point at an earlier definition.
    pub(super) fn line_of(&self, span: &Range<usize>) -> usize {
        line_column(self.text, span.start).0
    }
}

pub(crate) fn validate(file: wire::File, text: &str, source: &Path) -> Result<Model, Vec<Problem>> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };

    let state_dir = match &file.state_dir {
        Some(s) => c.check(
            s.span(),
            checks::absolute_dir("state_dir", s.get_ref(), DEFAULT_STATE_DIR),
        ),
        None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let sysctl = sysctls(&mut c, file.sysctl.as_ref());
    let dhcp_defaults = file
        .dhcp
        .as_ref()
        .map(|d| global_dhcp(&mut c, d.get_ref()))
        .unwrap_or_default();
    let dhcp_port_rate_limit = match file
        .dhcp
        .as_ref()
        .and_then(|d| d.get_ref().port_rate_limit.as_ref())
    {
        None => Some(DEFAULT_PORT_RATE_LIMIT),
        Some(r) => c.check(r.span(), port_rate_limit(*r.get_ref())),
    };

    let mut networks = Vec::new();
    let mut marks = Vec::new();
    for net in &file.network {
        if let Some((n, m)) =
            network::network(&mut c, net.get_ref(), &dhcp_defaults, state_dir.as_deref())
        {
            networks.push(n);
            marks.push(m);
        }
    }
    across::across_networks(&mut c, &networks, &marks);
    ipv6::across(&mut c, &networks, &marks);
    let libvirt = guest::libvirt(&mut c, file.libvirt.as_ref());
    let guests = guest::guests(&mut c, &file.guest, &networks, &libvirt);
    forward::forwards(&mut c, &file.network, &mut networks, &file.guest, &guests);
    let coexist = firewall::coexist(&mut c, file.firewall.as_ref());
    let leases = leases::leases(&mut c, file.leases.as_ref());
    dns::names_across(&mut c, &file.network, &networks, &guests);

    match (
        c.problems.is_empty(),
        state_dir,
        dhcp_port_rate_limit,
        leases,
    ) {
        (true, Some(state_dir), Some(dhcp_port_rate_limit), Some(leases)) => Ok(Model {
            source: source.to_path_buf(),
            text: text.into(),
            state_dir,
            sysctl,
            vhost_zcopytx: file.vhost_net.and_then(|v| v.experimental_zcopytx),
            dhcp_defaults,
            dhcp_port_rate_limit,
            networks,
            libvirt,
            guests,
            coexist,
            leases,
        }),
        _ => Err(c.problems),
    }
}

fn sysctls(
    c: &mut Checker,
    table: Option<&BTreeMap<S<String>, S<SysctlValue>>>,
) -> BTreeMap<String, String> {
    let mut entries = Vec::new();
    flatten_sysctls("", table.into_iter().flatten(), &mut entries);
    let mut out = BTreeMap::new();
    for (key, key_span, value) in entries {
        let key_ok = c.check(key_span, checks::sysctl_key(&key)).is_some();
        let text = match value.get_ref() {
            SysctlValue::Integer(i) => Some(i.to_string()),
            SysctlValue::Text(t) => c
                .check(value.span(), checks::sysctl_text(t))
                .map(|()| t.clone()),
            SysctlValue::Table(_) => None, // flattened away
        };
        if let (true, Some(text)) = (key_ok, text) {
            out.insert(key, text);
        }
    }
    out
}

/// `vm.max_map_count = 1` (unquoted) arrives as table vm → max_map_count; join it back. The key
/// position is that of the last part.
fn flatten_sysctls<'a>(
    prefix: &str,
    table: impl Iterator<Item = (&'a S<String>, &'a S<SysctlValue>)>,
    out: &mut Vec<(String, Range<usize>, &'a S<SysctlValue>)>,
) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.get_ref().clone()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        match value.get_ref() {
            SysctlValue::Table(inner) => flatten_sysctls(&name, inner.iter(), out),
            _ => out.push((name, key.span(), value)),
        }
    }
}

pub(super) fn dns_list(c: &mut Checker, list: Option<&Vec<S<String>>>) -> Option<Vec<Ipv4Addr>> {
    list.map(|l| {
        l.iter()
            .filter_map(|s| c.check(s.span(), checks::ipv4(s.get_ref())))
            .collect()
    })
}

/// `[dhcp] port_rate_limit`: 0 (off) or a rate in `PORT_RATE_LIMIT_RANGE`.
fn port_rate_limit(rate: i64) -> Result<u32, checks::Bad> {
    u32::try_from(rate)
        .ok()
        .filter(|r| *r == 0 || PORT_RATE_LIMIT_RANGE.contains(r))
        .ok_or_else(|| {
            checks::bad(
                format!("port_rate_limit = {rate} is out of range"),
                format!(
                    "write DHCP packets per second from {} to {} (default {DEFAULT_PORT_RATE_LIMIT}), or 0 to turn the per-port limit off",
                    PORT_RATE_LIMIT_RANGE.start(),
                    PORT_RATE_LIMIT_RANGE.end()
                ),
            )
        })
}

fn global_dhcp(c: &mut Checker, d: &wire::GlobalDhcp) -> DhcpDefaults {
    DhcpDefaults {
        dns: dns_list(c, d.dns.as_ref()),
        domain: d.domain.as_ref().and_then(|s| {
            c.check(s.span(), checks::domain(s.get_ref()))
                .map(|()| s.get_ref().clone())
        }),
        lease_time: d
            .lease_time
            .as_ref()
            .and_then(|s| c.check(s.span(), checks::lease_time(s.get_ref()))),
    }
}
