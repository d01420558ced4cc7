//! Config files for tests, built from parts: the one place that knows how hostagent's TOML is
//! spelled, so a schema change is made here and nowhere else. Only what a test sets is written;
//! everything else is left to the agent's defaults.
//!
//! ```ignore
//! let cfg = Config::new("/state").network(
//!     Network::nat("lab", "br-lab", "10.77.0.1/24")
//!         .dhcp(Dhcp::new("10.77.0.100-10.77.0.199").lease_time("1h"))
//!         .pxe(Pxe::ipxe("/srv/boot").http_port(8069)),
//! );
//! s.config(cfg)
//! ```

use std::fmt::{self, Display, Write};

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|i| quoted(i)).collect();
    format!("[{}]", q.join(", "))
}

/// The whole file: `state_dir`, the host-wide tables, the networks, the guests.
#[derive(Debug, Clone)]
pub struct Config {
    state_dir: String,
    sysctl: Vec<(String, String)>,
    vhost_zcopytx: Option<bool>,
    port_rate_limit: Option<i64>,
    libvirt: Option<(String, Option<String>)>,
    libvirt_pool: Option<String>,
    libvirt_hosts: Vec<(String, String)>,
    coexist: Option<String>,
    leases: Option<Leases>,
    networks: Vec<Network>,
    guests: Vec<Guest>,
}

impl Config {
    pub fn new(state_dir: &str) -> Config {
        Config {
            state_dir: state_dir.to_string(),
            sysctl: Vec::new(),
            vhost_zcopytx: None,
            port_rate_limit: None,
            libvirt: None,
            libvirt_pool: None,
            libvirt_hosts: Vec::new(),
            coexist: None,
            leases: None,
            networks: Vec::new(),
            guests: Vec::new(),
        }
    }

    /// `[leases]`.
    pub fn leases(mut self, l: Leases) -> Config {
        self.leases = Some(l);
        self
    }

    /// `[firewall] coexist` ("auto" or "off").
    pub fn coexist(mut self, mode: &str) -> Config {
        self.coexist = Some(mode.to_string());
        self
    }

    /// One `[sysctl]` entry; `value` is written as TOML as given (`262144`, `"1"`).
    pub fn sysctl(mut self, key: &str, value: impl Display) -> Config {
        self.sysctl.push((key.to_string(), value.to_string()));
        self
    }

    /// `[vhost_net] experimental_zcopytx`.
    pub fn vhost_zcopytx(mut self, on: bool) -> Config {
        self.vhost_zcopytx = Some(on);
        self
    }

    /// `[dhcp] port_rate_limit` (packets per second per bridge port; 0 = off).
    pub fn port_rate_limit(mut self, rate: i64) -> Config {
        self.port_rate_limit = Some(rate);
        self
    }

    /// `[libvirt] uri` and, if given, `virt_type`.
    pub fn libvirt(mut self, uri: &str, virt_type: Option<&str>) -> Config {
        self.libvirt = Some((uri.to_string(), virt_type.map(str::to_string)));
        self
    }

    /// `[libvirt] pool`: the storage pool guests' disks are volumes of.
    pub fn libvirt_pool(mut self, pool: &str) -> Config {
        self.libvirt_pool = Some(pool.to_string());
        self
    }

    pub fn network(mut self, n: Network) -> Config {
        self.networks.push(n);
        self
    }

    /// A `[[libvirt.host]]`: another libvirt daemon, for `Guest::host`.
    pub fn libvirt_host(mut self, name: &str, uri: &str) -> Config {
        self.libvirt_hosts.push((name.to_string(), uri.to_string()));
        self
    }

    pub fn guest(mut self, g: Guest) -> Config {
        self.guests.push(g);
        self
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state_dir = {}", quoted(&self.state_dir))?;
        if !self.sysctl.is_empty() {
            writeln!(f, "\n[sysctl]")?;
            for (k, v) in &self.sysctl {
                writeln!(f, "{} = {v}", quoted(k))?;
            }
        }
        if let Some(on) = self.vhost_zcopytx {
            writeln!(f, "\n[vhost_net]\nexperimental_zcopytx = {on}")?;
        }
        if let Some(rate) = self.port_rate_limit {
            writeln!(f, "\n[dhcp]\nport_rate_limit = {rate}")?;
        }
        if let Some(c) = &self.coexist {
            writeln!(f, "\n[firewall]\ncoexist = {}", quoted(c))?;
        }
        if let Some(l) = &self.leases {
            write!(f, "\n{l}")?;
        }
        if self.libvirt.is_some() || self.libvirt_pool.is_some() {
            writeln!(f, "\n[libvirt]")?;
        }
        if let Some((uri, virt_type)) = &self.libvirt {
            writeln!(f, "uri = {}", quoted(uri))?;
            if let Some(t) = virt_type {
                writeln!(f, "virt_type = {}", quoted(t))?;
            }
        }
        if let Some(pool) = &self.libvirt_pool {
            writeln!(f, "pool = {}", quoted(pool))?;
        }
        for (name, uri) in &self.libvirt_hosts {
            writeln!(
                f,
                "\n[[libvirt.host]]\nname = {}\nuri = {}",
                quoted(name),
                quoted(uri)
            )?;
        }
        for n in &self.networks {
            write!(f, "\n{n}")?;
        }
        for g in &self.guests {
            write!(f, "\n{g}")?;
        }
        Ok(())
    }
}

/// `[leases]`: where the DHCP servers keep their leases, and the agent's name there.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    backend: Option<String>,
    url: Option<String>,
    agent: Option<String>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
}

impl Leases {
    /// `backend = "postgres"` with `url`.
    pub fn postgres(url: &str) -> Leases {
        Leases {
            backend: Some("postgres".into()),
            url: Some(url.to_string()),
            ..Leases::default()
        }
    }

    pub fn agent(mut self, name: &str) -> Leases {
        self.agent = Some(name.to_string());
        self
    }

    /// `connect_timeout` and `timeout` ("1s").
    pub fn timeouts(mut self, connect: &str, statement: &str) -> Leases {
        self.connect_timeout = Some(connect.to_string());
        self.timeout = Some(statement.to_string());
        self
    }
}

impl Display for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[leases]")?;
        for (key, value) in [
            ("backend", &self.backend),
            ("url", &self.url),
            ("agent", &self.agent),
            ("connect_timeout", &self.connect_timeout),
            ("timeout", &self.timeout),
        ] {
            if let Some(v) = value {
                writeln!(f, "{key} = {}", quoted(v))?;
            }
        }
        Ok(())
    }
}

/// One `[[network]]` with its `[network.dhcp]` and `[network.pxe]`.
#[derive(Debug, Clone)]
pub struct Network {
    name: String,
    mode: String,
    bridge: String,
    address: Option<String>,
    mac: Option<String>,
    mtu: Option<u32>,
    stp: Option<bool>,
    forward_delay: Option<u32>,
    interfaces: Option<Vec<String>>,
    dhcp: Option<Dhcp>,
    pxe: Option<Pxe>,
    dns: Option<Dns>,
    forwards: Vec<Forward>,
    address6: Option<String>,
    nat6: Option<bool>,
    ra: Option<Ra>,
    /// `[network.dhcp6]`.
    dhcp6: Option<Dhcp6>,
}

impl Network {
    pub fn new(name: &str, mode: &str, bridge: &str) -> Network {
        Network {
            name: name.to_string(),
            mode: mode.to_string(),
            bridge: bridge.to_string(),
            address: None,
            mac: None,
            mtu: None,
            stp: None,
            forward_delay: None,
            interfaces: None,
            dhcp: None,
            pxe: None,
            dns: None,
            forwards: Vec::new(),
            address6: None,
            nat6: None,
            ra: None,
            dhcp6: None,
        }
    }

    /// A NAT network with the host's address on the bridge (CIDR).
    pub fn nat(name: &str, bridge: &str, address: &str) -> Network {
        Network::new(name, "nat", bridge).address(address)
    }

    pub fn address(mut self, cidr: &str) -> Network {
        self.address = Some(cidr.to_string());
        self
    }

    pub fn mac(mut self, mac: &str) -> Network {
        self.mac = Some(mac.to_string());
        self
    }

    pub fn mtu(mut self, mtu: u32) -> Network {
        self.mtu = Some(mtu);
        self
    }

    pub fn stp(mut self, on: bool) -> Network {
        self.stp = Some(on);
        self
    }

    pub fn forward_delay(mut self, secs: u32) -> Network {
        self.forward_delay = Some(secs);
        self
    }

    /// Host ports enslaved to the bridge (bridge mode).
    pub fn interfaces(mut self, ports: &[&str]) -> Network {
        self.interfaces = Some(ports.iter().map(|p| p.to_string()).collect());
        self
    }

    pub fn dhcp(mut self, d: Dhcp) -> Network {
        self.dhcp = Some(d);
        self
    }

    pub fn pxe(mut self, p: Pxe) -> Network {
        self.pxe = Some(p);
        self
    }

    pub fn dns(mut self, d: Dns) -> Network {
        self.dns = Some(d);
        self
    }

    /// One `[[network.forward]]`.
    pub fn forward(mut self, fwd: Forward) -> Network {
        self.forwards.push(fwd);
        self
    }

    /// `address6`: the host's IPv6 address on the bridge (CIDR).
    pub fn address6(mut self, cidr: &str) -> Network {
        self.address6 = Some(cidr.to_string());
        self
    }

    pub fn nat6(mut self, on: bool) -> Network {
        self.nat6 = Some(on);
        self
    }

    /// `[network.ra]`.
    pub fn ra(mut self, ra: Ra) -> Network {
        self.ra = Some(ra);
        self
    }

    /// `[network.dhcp6]`, with `range` when given (stateful) or without (stateless).
    pub fn dhcp6(self, range: Option<&str>) -> Network {
        self.dhcp6_with(Dhcp6 {
            range: range.map(str::to_string),
            ..Dhcp6::default()
        })
    }

    /// `[network.dhcp6]` with every key [`Dhcp6`] has.
    pub fn dhcp6_with(mut self, d: Dhcp6) -> Network {
        self.dhcp6 = Some(d);
        self
    }
}

/// `[network.dhcp6]` and its `[[network.dhcp6.host]]`s.
#[derive(Debug, Clone, Default)]
pub struct Dhcp6 {
    pub range: Option<String>,
    pub lease_time: Option<String>,
    pub rapid_commit: Option<bool>,
    /// (`duid` or `mac` key, its value, ip, name).
    pub hosts: Vec<(&'static str, String, String, Option<String>)>,
}

impl fmt::Display for Dhcp6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[network.dhcp6]")?;
        if let Some(r) = &self.range {
            writeln!(f, "range = {}", quoted(r))?;
        }
        if let Some(l) = &self.lease_time {
            writeln!(f, "lease_time = {}", quoted(l))?;
        }
        if let Some(r) = self.rapid_commit {
            writeln!(f, "rapid_commit = {r}")?;
        }
        for (key, id, ip, name) in &self.hosts {
            writeln!(
                f,
                "[[network.dhcp6.host]]\n{key} = {}\nip = {}",
                quoted(id),
                quoted(ip)
            )?;
            if let Some(n) = name {
                writeln!(f, "name = {}", quoted(n))?;
            }
        }
        Ok(())
    }
}

/// `[network.ra]`: router advertisements on the bridge.
#[derive(Debug, Clone, Default)]
pub struct Ra {
    enable: Option<bool>,
    min_interval: Option<String>,
    max_interval: Option<String>,
}

impl Ra {
    pub fn new() -> Ra {
        Ra::default()
    }

    pub fn enable(mut self, on: bool) -> Ra {
        self.enable = Some(on);
        self
    }

    /// `min_interval` and `max_interval` ("3s", "4s").
    pub fn intervals(mut self, min: &str, max: &str) -> Ra {
        self.min_interval = Some(min.to_string());
        self.max_interval = Some(max.to_string());
        self
    }
}

impl Display for Ra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[network.ra]")?;
        if let Some(e) = self.enable {
            writeln!(f, "enable = {e}")?;
        }
        if let Some(m) = &self.min_interval {
            writeln!(f, "min_interval = {}", quoted(m))?;
        }
        if let Some(m) = &self.max_interval {
            writeln!(f, "max_interval = {}", quoted(m))?;
        }
        Ok(())
    }
}

impl Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[network]]")?;
        writeln!(f, "name = {}", quoted(&self.name))?;
        writeln!(f, "mode = {}", quoted(&self.mode))?;
        writeln!(f, "bridge = {}", quoted(&self.bridge))?;
        if let Some(a) = &self.address {
            writeln!(f, "address = {}", quoted(a))?;
        }
        if let Some(a) = &self.address6 {
            writeln!(f, "address6 = {}", quoted(a))?;
        }
        if let Some(n) = self.nat6 {
            writeln!(f, "nat6 = {n}")?;
        }
        if let Some(m) = &self.mac {
            writeln!(f, "mac = {}", quoted(m))?;
        }
        if let Some(m) = self.mtu {
            writeln!(f, "mtu = {m}")?;
        }
        if let Some(s) = self.stp {
            writeln!(f, "stp = {s}")?;
        }
        if let Some(d) = self.forward_delay {
            writeln!(f, "forward_delay = {d}")?;
        }
        if let Some(i) = &self.interfaces {
            writeln!(f, "interfaces = {}", list(i))?;
        }
        if let Some(d) = &self.dhcp {
            write!(f, "{d}")?;
        }
        if let Some(p) = &self.pxe {
            write!(f, "{p}")?;
        }
        if let Some(r) = &self.ra {
            write!(f, "{r}")?;
        }
        if let Some(d) = &self.dhcp6 {
            write!(f, "{d}")?;
        }
        if let Some(d) = &self.dns {
            write!(f, "{d}")?;
        }
        for fwd in &self.forwards {
            write!(f, "{fwd}")?;
        }
        Ok(())
    }
}

/// `[[network.forward]]`: a host port forwarded to `to = "ADDR:PORT"`.
#[derive(Debug, Clone)]
pub struct Forward {
    proto: String,
    host_port: u16,
    host_address: Option<String>,
    to: String,
}

impl Forward {
    pub fn new(proto: &str, host_port: u16, to: &str) -> Forward {
        Forward {
            proto: proto.to_string(),
            host_port,
            host_address: None,
            to: to.to_string(),
        }
    }

    pub fn host_address(mut self, a: &str) -> Forward {
        self.host_address = Some(a.to_string());
        self
    }
}

impl Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[network.forward]]")?;
        writeln!(f, "proto = {}", quoted(&self.proto))?;
        writeln!(f, "host_port = {}", self.host_port)?;
        if let Some(a) = &self.host_address {
            writeln!(f, "host_address = {}", quoted(a))?;
        }
        writeln!(f, "to = {}", quoted(&self.to))
    }
}

/// `[network.dhcp]` and its `[[network.dhcp.host]]` reservations.
#[derive(Debug, Clone)]
pub struct Dhcp {
    range: String,
    lease_time: Option<String>,
    dns: Option<Vec<String>>,
    domain: Option<String>,
    hosts: Vec<(String, String, Option<String>)>,
    raw: Vec<String>,
}

impl Dhcp {
    /// `range = "FIRST-LAST"`.
    pub fn new(range: &str) -> Dhcp {
        Dhcp {
            range: range.to_string(),
            lease_time: None,
            dns: None,
            domain: None,
            hosts: Vec::new(),
            raw: Vec::new(),
        }
    }

    pub fn lease_time(mut self, t: &str) -> Dhcp {
        self.lease_time = Some(t.to_string());
        self
    }

    pub fn dns(mut self, servers: &[&str]) -> Dhcp {
        self.dns = Some(servers.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn domain(mut self, d: &str) -> Dhcp {
        self.domain = Some(d.to_string());
        self
    }

    /// A static reservation: `mac` always gets `ip` (and `name`, if given).
    pub fn host(mut self, mac: &str, ip: &str, name: Option<&str>) -> Dhcp {
        self.hosts
            .push((mac.to_string(), ip.to_string(), name.map(str::to_string)));
        self
    }

    /// A line written into the table as is: for tests of what the agent says about a key it
    /// does not know.
    pub fn raw(mut self, line: &str) -> Dhcp {
        self.raw.push(line.to_string());
        self
    }
}

impl Display for Dhcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[network.dhcp]")?;
        writeln!(f, "range = {}", quoted(&self.range))?;
        if let Some(t) = &self.lease_time {
            writeln!(f, "lease_time = {}", quoted(t))?;
        }
        if let Some(d) = &self.dns {
            writeln!(f, "dns = {}", list(d))?;
        }
        if let Some(d) = &self.domain {
            writeln!(f, "domain = {}", quoted(d))?;
        }
        for line in &self.raw {
            writeln!(f, "{line}")?;
        }
        for (mac, ip, name) in &self.hosts {
            writeln!(f, "[[network.dhcp.host]]")?;
            writeln!(f, "mac = {}", quoted(mac))?;
            writeln!(f, "ip = {}", quoted(ip))?;
            if let Some(n) = name {
                writeln!(f, "name = {}", quoted(n))?;
            }
        }
        Ok(())
    }
}

/// `[network.dns]` and its `[[network.dns.host]]` names; an empty one leaves every key to the
/// agent's defaults.
#[derive(Debug, Clone, Default)]
pub struct Dns {
    enable: Option<bool>,
    domain: Option<String>,
    forwarders: Option<Vec<String>>,
    rate_limit: Option<u32>,
    hosts: Vec<(String, String)>,
}

impl Dns {
    pub fn new() -> Dns {
        Dns::default()
    }

    pub fn enable(mut self, on: bool) -> Dns {
        self.enable = Some(on);
        self
    }

    pub fn domain(mut self, d: &str) -> Dns {
        self.domain = Some(d.to_string());
        self
    }

    /// `forwarders = [...]` (`"IP"` or `"IP:PORT"`).
    pub fn forwarders(mut self, servers: &[&str]) -> Dns {
        self.forwarders = Some(servers.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Queries per second per guest address; 0 = off.
    pub fn rate_limit(mut self, rate: u32) -> Dns {
        self.rate_limit = Some(rate);
        self
    }

    /// An extra name: `[[network.dns.host]]`.
    pub fn host(mut self, name: &str, ip: &str) -> Dns {
        self.hosts.push((name.to_string(), ip.to_string()));
        self
    }
}

impl Display for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[network.dns]")?;
        if let Some(on) = self.enable {
            writeln!(f, "enable = {on}")?;
        }
        if let Some(d) = &self.domain {
            writeln!(f, "domain = {}", quoted(d))?;
        }
        if let Some(servers) = &self.forwarders {
            writeln!(f, "forwarders = {}", list(servers))?;
        }
        if let Some(r) = self.rate_limit {
            writeln!(f, "rate_limit = {r}")?;
        }
        for (name, ip) in &self.hosts {
            writeln!(f, "[[network.dns.host]]")?;
            writeln!(f, "name = {}", quoted(name))?;
            writeln!(f, "ip = {}", quoted(ip))?;
        }
        Ok(())
    }
}

/// `[network.pxe]`: the boot root and what each kind of client gets.
#[derive(Debug, Clone)]
pub struct Pxe {
    root: String,
    bios: Option<String>,
    uefi: Option<String>,
    arm64: Option<String>,
    script: Option<String>,
    http_port: Option<u16>,
    proxy: bool,
    /// Lines written as they are (keys the builder has no method for).
    raw: Vec<String>,
}

impl Pxe {
    pub fn new(root: &str) -> Pxe {
        Pxe {
            root: root.to_string(),
            bios: None,
            uefi: None,
            arm64: None,
            script: None,
            http_port: None,
            proxy: false,
            raw: Vec::new(),
        }
    }

    pub fn arm64(mut self, file: &str) -> Pxe {
        self.arm64 = Some(file.to_string());
        self
    }

    /// `proxy = true`: proxyDHCP, another server hands out the addresses.
    pub fn proxy(mut self) -> Pxe {
        self.proxy = true;
        self
    }

    /// A line written as it is, e.g. `pxelinux_reboot = "5m"`.
    pub fn raw(mut self, line: &str) -> Pxe {
        self.raw.push(line.to_string());
        self
    }

    /// The usual iPXE chain: `undionly.kpxe` for BIOS, `ipxe.efi` for UEFI, `boot.ipxe` for iPXE.
    pub fn ipxe(root: &str) -> Pxe {
        Pxe::new(root)
            .bios("undionly.kpxe")
            .uefi("ipxe.efi")
            .script("boot.ipxe")
    }

    pub fn bios(mut self, file: &str) -> Pxe {
        self.bios = Some(file.to_string());
        self
    }

    pub fn uefi(mut self, file: &str) -> Pxe {
        self.uefi = Some(file.to_string());
        self
    }

    pub fn script(mut self, file: &str) -> Pxe {
        self.script = Some(file.to_string());
        self
    }

    pub fn http_port(mut self, port: u16) -> Pxe {
        self.http_port = Some(port);
        self
    }
}

impl Display for Pxe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[network.pxe]")?;
        writeln!(f, "root = {}", quoted(&self.root))?;
        for (key, value) in [
            ("bios", &self.bios),
            ("uefi", &self.uefi),
            ("arm64", &self.arm64),
            ("script", &self.script),
        ] {
            if let Some(v) = value {
                writeln!(f, "{key} = {}", quoted(v))?;
            }
        }
        if let Some(p) = self.http_port {
            writeln!(f, "http_port = {p}")?;
        }
        if self.proxy {
            writeln!(f, "proxy = true")?;
        }
        for line in &self.raw {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// One `[[guest]]` (or `count` of them).
#[derive(Debug, Clone)]
pub struct Guest {
    /// Key and TOML value, in the order set.
    fields: Vec<(&'static str, String)>,
}

impl Guest {
    pub fn new(name: &str, network: &str) -> Guest {
        Guest {
            fields: vec![("name", quoted(name)), ("network", quoted(network))],
        }
    }

    fn set(mut self, key: &'static str, value: String) -> Guest {
        self.fields.push((key, value));
        self
    }

    pub fn count(self, n: u32) -> Guest {
        self.set("count", n.to_string())
    }

    pub fn vcpus(self, n: u32) -> Guest {
        self.set("vcpus", n.to_string())
    }

    pub fn memory(self, size: &str) -> Guest {
        self.set("memory", quoted(size))
    }

    /// `network` (PXE install, then disk) or `disk`.
    pub fn boot(self, from: &str) -> Guest {
        self.set("boot", quoted(from))
    }

    /// `bios` or `uefi`.
    pub fn firmware(self, fw: &str) -> Guest {
        self.set("firmware", quoted(fw))
    }

    pub fn vhost(self, on: bool) -> Guest {
        self.set("vhost", on.to_string())
    }

    /// `auto` or an address.
    pub fn ip(self, ip: &str) -> Guest {
        self.set("ip", quoted(ip))
    }

    /// The boot script template in the network's boot root.
    pub fn script(self, file: &str) -> Guest {
        self.set("script", quoted(file))
    }

    /// The `[[libvirt.host]]` it is defined on.
    pub fn host(self, name: &str) -> Guest {
        self.set("host", quoted(name))
    }

    /// A new disk of `size` (a volume `NAME.qcow2` in the storage pool).
    pub fn disk_size(self, size: &str) -> Guest {
        self.set("disk", format!("{{ size = {} }}", quoted(size)))
    }

    /// A disk file at the absolute `path` (made with `size` when missing).
    pub fn disk_file(self, path: &str, size: &str) -> Guest {
        self.set(
            "disk",
            format!("{{ path = {}, size = {} }}", quoted(path), quoted(size)),
        )
    }
}

impl Display for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from("[[guest]]\n");
        for (k, v) in &self.fields {
            let _ = writeln!(s, "{k} = {v}");
        }
        f.write_str(&s)
    }
}

/// `LINE:COLUMN` (1-based) of `token` in the first line of `text` that contains `line_with`:
/// where an error about that value must point.
pub fn position(text: &str, line_with: &str, token: &str) -> String {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line_with))
        .unwrap_or_else(|| panic!("no line with {line_with:?} in:\n{text}"));
    let col = line
        .find(token)
        .unwrap_or_else(|| panic!("no {token:?} in {line:?}"));
    format!("{}:{}", i + 1, line[..col].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_reads_as_the_agent_expects_it() {
        let n = Network::nat("lab", "br-lab", "10.77.0.1/24")
            .address6("fd00:77::1/64")
            .nat6(true)
            .ra(Ra::new().enable(true).intervals("3s", "4s"))
            .dhcp6(Some("fd00:77::100-fd00:77::1ff"));
        assert_eq!(
            n.to_string(),
            r#"[[network]]
name = "lab"
mode = "nat"
bridge = "br-lab"
address = "10.77.0.1/24"
address6 = "fd00:77::1/64"
nat6 = true
[network.ra]
enable = true
min_interval = "3s"
max_interval = "4s"
[network.dhcp6]
range = "fd00:77::100-fd00:77::1ff"
"#
        );
    }

    #[test]
    fn a_network_with_everything_reads_as_the_agent_expects_it() {
        let c = Config::new("/state")
            .sysctl("vm.max_map_count", 262144)
            .port_rate_limit(0)
            .network(
                Network::nat("lab", "br-lab", "10.77.0.1/24")
                    .mtu(1400)
                    .dhcp(
                        Dhcp::new("10.77.0.100-10.77.0.199")
                            .lease_time("1h")
                            .dns(&["10.77.0.1", "9.9.9.9"])
                            .host("52:54:00:00:00:10", "10.77.0.10", Some("bastion")),
                    )
                    .pxe(Pxe::ipxe("/srv/boot").http_port(8069)),
            )
            .guest(Guest::new("node", "lab").count(3).vhost(true));
        assert_eq!(
            c.to_string(),
            r#"state_dir = "/state"

[sysctl]
"vm.max_map_count" = 262144

[dhcp]
port_rate_limit = 0

[[network]]
name = "lab"
mode = "nat"
bridge = "br-lab"
address = "10.77.0.1/24"
mtu = 1400
[network.dhcp]
range = "10.77.0.100-10.77.0.199"
lease_time = "1h"
dns = ["10.77.0.1", "9.9.9.9"]
[[network.dhcp.host]]
mac = "52:54:00:00:00:10"
ip = "10.77.0.10"
name = "bastion"
[network.pxe]
root = "/srv/boot"
bios = "undionly.kpxe"
uefi = "ipxe.efi"
script = "boot.ipxe"
http_port = 8069

[[guest]]
name = "node"
network = "lab"
count = 3
vhost = true
"#
        );
        assert_eq!(position(&c.to_string(), "mtu = ", "1400"), "14:7");
    }

    #[test]
    fn dns_settings_and_names_follow_the_network() {
        let n = Network::nat("lab", "br-lab", "10.77.0.1/24").dns(
            Dns::new()
                .enable(true)
                .domain("lab.example")
                .forwarders(&["192.0.2.53", "192.0.2.54:5353"])
                .rate_limit(0)
                .host("nas", "10.77.0.50"),
        );
        assert!(
            n.to_string().ends_with(
                "[network.dns]\nenable = true\ndomain = \"lab.example\"\n\
             forwarders = [\"192.0.2.53\", \"192.0.2.54:5353\"]\nrate_limit = 0\n\
             [[network.dns.host]]\nname = \"nas\"\nip = \"10.77.0.50\"\n"
            ),
            "{n}"
        );
        assert!(Network::nat("lab", "br-lab", "10.77.0.1/24")
            .dns(Dns::new())
            .to_string()
            .ends_with("[network.dns]\n"));
    }
}
