//! Real DHCP clients nobody here wrote, in a test's namespace: busybox `udhcpc`, ISC
//! `dhclient` and dhcpcd. Each runs with a hook script that appends one line per event to a record file,
//! `REASON key=value ...`, so a test reads exactly what the client was told (address, mask,
//! router, DNS, lease time, names, MTU, server id, boot file). A `resolving` client's hook also
//! writes the resolv.conf a distribution's would (`search DOMAIN`, one `nameserver` per server
//! it was handed), for the guest's own resolver to read (`dns::getent_hosts`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::netns::Netns;
use crate::process::{stderr, stdout, write_script};
use crate::wait::wait_for;

/// One event a hook script recorded: `key → value` (lists such as DNS servers are joined by
/// commas).
pub type Record = HashMap<String, String>;

/// udhcpc calls its script with the event as `$1` and the values in its environment.
const UDHCPC_RECORD: &str = r#"echo "$1 ip=$ip mask=$mask router=$(echo $router | tr ' ' ,) dns=$(echo $dns | tr ' ' ,) lease=$lease hostname=$hostname domain=$domain mtu=$mtu serverid=$serverid boot_file=$boot_file siaddr=$siaddr" >> "$RECORD""#;

/// ... and configures the address, so that renewals are unicast from it and the guest can
/// talk to the host afterwards.
const UDHCPC_CONFIGURE: &str = r#"case "$1" in bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;; deconfig) ip addr flush dev "$interface" ;; esac"#;

/// dhclient passes the event as `$reason` and always wants the address configured.
const DHCLIENT_HOOK: &str = r#"echo "$reason ip=$new_ip_address mask=$new_subnet_mask routers=$(echo $new_routers | tr ' ' ,) dns=$(echo $new_domain_name_servers | tr ' ' ,) lease=$new_dhcp_lease_time host=$new_host_name domain=$new_domain_name mtu=$new_interface_mtu" >> "$RECORD"
case "$reason" in BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;; esac"#;

/// ... and, for a resolving client, its resolv.conf from the options it was handed.
const UDHCPC_RESOLV: &str = r#"case "$1" in bound|renew) { [ -n "$domain" ] && echo "search $domain"; for s in $dns; do echo "nameserver $s"; done; } > "$RESOLV" ;; esac"#;

const DHCLIENT_RESOLV: &str = r#"case "$reason" in BOUND|RENEW|REBIND|REBOOT) { [ -n "$new_domain_name" ] && echo "search $new_domain_name"; for s in $new_domain_name_servers; do echo "nameserver $s"; done; } > "$RESOLV" ;; esac"#;

/// `dir/NAME.resolv.conf` and the hook lines that write it (`what` uses `$RESOLV`).
fn resolv_hook(dir: &Path, name: &str, what: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.resolv.conf"));
    let body = format!("RESOLV='{}'\n{what}", path.display());
    (path, body)
}

/// Write `dir/NAME.sh` that runs `body` with `$RECORD` set to `record`. (dhclient clears the
/// environment, so the path is written into the script.)
fn hook(dir: &Path, name: &str, record: &Path, body: &str) -> PathBuf {
    let script = dir.join(format!("{name}.sh"));
    write_script(
        &script,
        &format!("#!/bin/sh\nRECORD='{}'\n{body}\nexit 0\n", record.display()),
    );
    script
}

/// The events of one `reason` in a record file, oldest first.
pub fn records(path: &Path, reason: &str) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(reason))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// busybox udhcpc on `eth0` of a namespace, its hook script and record under `dir`.
pub struct Udhcpc<'a> {
    ns: &'a Netns,
    script: PathBuf,
    record: PathBuf,
    resolv_conf: Option<PathBuf>,
    extra: Vec<String>,
}

impl<'a> Udhcpc<'a> {
    /// Records events only; `tag` names the files (unique per client in `dir`).
    pub fn new(ns: &'a Netns, dir: &Path, tag: &str) -> Udhcpc<'a> {
        Udhcpc::with_hook(ns, dir, tag, UDHCPC_RECORD)
    }

    /// Records events and configures the address it gets.
    pub fn configuring(ns: &'a Netns, dir: &Path, tag: &str) -> Udhcpc<'a> {
        Udhcpc::with_hook(
            ns,
            dir,
            tag,
            &format!("{UDHCPC_RECORD}\n{UDHCPC_CONFIGURE}"),
        )
    }

    /// Records events, configures the address and writes `dir/udhcpc-TAG.resolv.conf`
    /// ([`Udhcpc::resolv_conf`]).
    pub fn resolving(ns: &'a Netns, dir: &Path, tag: &str) -> Udhcpc<'a> {
        let (path, resolv) = resolv_hook(dir, &format!("udhcpc-{tag}"), UDHCPC_RESOLV);
        let mut u = Udhcpc::with_hook(
            ns,
            dir,
            tag,
            &format!("{UDHCPC_RECORD}\n{UDHCPC_CONFIGURE}\n{resolv}"),
        );
        u.resolv_conf = Some(path);
        u
    }

    fn with_hook(ns: &'a Netns, dir: &Path, tag: &str, body: &str) -> Udhcpc<'a> {
        let record = dir.join(format!("udhcpc-{tag}.record"));
        let script = hook(dir, &format!("udhcpc-{tag}"), &record, body);
        Udhcpc {
            ns,
            script,
            record,
            resolv_conf: None,
            extra: Vec::new(),
        }
    }

    /// The resolv.conf a [`Udhcpc::resolving`] client writes.
    pub fn resolv_conf(&self) -> &Path {
        self.resolv_conf
            .as_deref()
            .expect("Udhcpc::resolving writes a resolv.conf")
    }

    /// More udhcpc arguments (`-x hostname:NAME`, `-V VENDOR`, ...).
    pub fn args(mut self, args: &[&str]) -> Udhcpc<'a> {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    fn argv<'s>(&'s self, mode: &[&'s str]) -> Vec<&'s str> {
        let mut argv = vec!["busybox", "udhcpc", "-i", "eth0"];
        argv.extend_from_slice(mode);
        argv.push("-s");
        argv.push(self.script.to_str().expect("utf-8 path"));
        argv.extend(self.extra.iter().map(String::as_str));
        argv
    }

    /// One exchange, then exit (`-n -q`): the bound event, or udhcpc's output when it got no
    /// lease. Patient (8 tries, 3 s apart): on a loaded 2-core machine an answer can take more
    /// than a second.
    pub fn once(&self) -> Result<Record, String> {
        let out = self.ns.run(&self.argv(&["-n", "-q", "-t", "8", "-T", "3"]));
        self.bound_after(&out)
    }

    fn bound_after(&self, out: &Output) -> Result<Record, String> {
        if !out.status.success() {
            return Err(format!("udhcpc failed: {}{}", stdout(out), stderr(out)));
        }
        self.records("bound").pop().ok_or_else(|| {
            format!(
                "udhcpc exited without a bound event: {}{}",
                stdout(out),
                stderr(out)
            )
        })
    }

    /// Stays in the foreground (`-f`) so the test can make it renew and release.
    pub fn spawn(&self) -> RunningUdhcpc {
        let child = self
            .ns
            .cmd(&self.argv(&["-f", "-t", "10", "-T", "2"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn udhcpc");
        RunningUdhcpc {
            child,
            record: self.record.clone(),
        }
    }

    pub fn records(&self, reason: &str) -> Vec<Record> {
        records(&self.record, reason)
    }
}

/// A udhcpc in the foreground; killed on drop.
pub struct RunningUdhcpc {
    child: Child,
    record: PathBuf,
}

impl RunningUdhcpc {
    /// The latest event of `reason` once it was recorded (within `secs`).
    pub fn wait_event(&self, reason: &str, secs: u64) -> Option<Record> {
        wait_for(secs, || records(&self.record, reason).pop())
    }

    /// SIGUSR1: renew now (unicast from the bound address).
    pub fn renew(&self) {
        self.signal(libc::SIGUSR1);
    }

    /// SIGUSR2: release the lease.
    pub fn release(&self) {
        self.signal(libc::SIGUSR2);
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child (`ip netns exec` execs udhcpc in place).
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for RunningUdhcpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One udhcpc exchange on the guest's eth0 (after setting its MAC, if given): the bound
/// address, or what udhcpc said when it got none.
pub fn udhcpc_once(
    guest: &Netns,
    dir: &Path,
    tag: &str,
    mac: Option<&str>,
) -> Result<String, String> {
    if let Some(mac) = mac {
        guest.ok(&["ip", "link", "set", "eth0", "address", mac]);
    }
    let bound = Udhcpc::new(guest, dir, tag).once()?;
    Ok(bound.get("ip").cloned().unwrap_or_default())
}

/// `dhclient -6` records the address, DNS servers, search list and lifetime, and configures
/// the address as a /128 (what dhclient-script does), `nodad`: the server checked it is free.
const DHCLIENT6_HOOK: &str = r#"echo "$reason ip6=$new_ip6_address dns6=$(echo $new_dhcp6_name_servers | tr ' ' ,) search=$(echo $new_dhcp6_domain_search | tr ' ' ,) life=$new_max_life" >> "$RECORD"
case "$reason" in BOUND6|RENEW6|REBIND6|REBOOT6) [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/128" dev "$interface" nodad ;; RELEASE6|EXPIRE6|STOP6) [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/128" dev "$interface" ;; esac"#;

/// ISC dhclient on `eth0` of a namespace, with its own lease and pid files under `dir`.
pub struct Dhclient<'a> {
    ns: &'a Netns,
    /// `-4` or `-6`.
    family: &'static str,
    script: PathBuf,
    record: PathBuf,
    leases: PathBuf,
    pid: PathBuf,
    /// Its own dhclient.conf (`-cf`), when it sends a host name.
    conf: Option<PathBuf>,
    resolv_conf: Option<PathBuf>,
}

/// How long one dhclient run may take before `timeout` ends it.
const DHCLIENT_TIMEOUT: Duration = Duration::from_secs(40);

impl<'a> Dhclient<'a> {
    pub fn new(ns: &'a Netns, dir: &Path, tag: &str) -> Dhclient<'a> {
        let record = dir.join(format!("dhclient-{tag}.record"));
        Dhclient {
            ns,
            family: "-4",
            script: hook(dir, &format!("dhclient-{tag}"), &record, DHCLIENT_HOOK),
            record,
            leases: dir.join(format!("dhclient-{tag}.leases")),
            pid: dir.join(format!("dhclient-{tag}.pid")),
            conf: None,
            resolv_conf: None,
        }
    }

    /// `dhclient -6` with `conf` as its dhclient.conf (e.g. `send fqdn.fqdn "web";`). Its DUID
    /// stays in its lease file (`default-duid`), so a second run is the same client.
    pub fn v6(ns: &'a Netns, dir: &Path, tag: &str, conf: &str) -> Dhclient<'a> {
        let name = format!("dhclient6-{tag}");
        let record = dir.join(format!("{name}.record"));
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf)
            .unwrap_or_else(|e| panic!("write {}: {e}", conf_path.display()));
        Dhclient {
            ns,
            family: "-6",
            script: hook(dir, &name, &record, DHCLIENT6_HOOK),
            record,
            leases: dir.join(format!("{name}.leases")),
            pid: dir.join(format!("{name}.pid")),
            conf: Some(conf_path),
            resolv_conf: None,
        }
    }

    /// Sends `hostname` (option 12, `send host-name` in a dhclient.conf of its own) and writes
    /// `dir/dhclient-TAG.resolv.conf` ([`Dhclient::resolv_conf`]) from what it is handed.
    pub fn resolving(ns: &'a Netns, dir: &Path, tag: &str, hostname: &str) -> Dhclient<'a> {
        let name = format!("dhclient-{tag}");
        let record = dir.join(format!("{name}.record"));
        let (path, resolv) = resolv_hook(dir, &name, DHCLIENT_RESOLV);
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, format!("send host-name \"{hostname}\";\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        Dhclient {
            ns,
            family: "-4",
            script: hook(dir, &name, &record, &format!("{DHCLIENT_HOOK}\n{resolv}")),
            record,
            leases: dir.join(format!("{name}.leases")),
            pid: dir.join(format!("{name}.pid")),
            conf: Some(conf),
            resolv_conf: Some(path),
        }
    }

    /// Retransmits at most every `secs` (`initial-interval` and `backoff-cutoff` in a
    /// dhclient.conf of its own) instead of dhclient's default: 10 s, growing at random. With a
    /// one-minute lease (T2 at 52.5 s) the default has the first REBINDING request go out only
    /// when the lease has already ended.
    pub fn retrying_every(mut self, secs: u32) -> Dhclient<'a> {
        let conf = self.leases.with_extension("conf");
        let mut text = self
            .conf
            .as_ref()
            .map(|c| std::fs::read_to_string(c).unwrap_or_default())
            .unwrap_or_default();
        text.push_str(&format!(
            "initial-interval {secs};\nbackoff-cutoff {secs};\n"
        ));
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        self.conf = Some(conf);
        self
    }

    /// The resolv.conf a [`Dhclient::resolving`] client writes.
    pub fn resolv_conf(&self) -> &Path {
        self.resolv_conf
            .as_deref()
            .expect("Dhclient::resolving writes a resolv.conf")
    }

    /// `dhclient -4 -v EXTRA ...` (or `-6` for [`Dhclient::v6`]; `-1`: get a lease, then go to
    /// the background; `-x`: stop without releasing; `-r`: release and stop; `-S` with `-6`:
    /// Information-Request only).
    pub fn run(&self, extra: &[&str]) -> Output {
        let secs = DHCLIENT_TIMEOUT.as_secs().to_string();
        let mut argv = vec!["timeout", &secs, "dhclient", self.family, "-v"];
        argv.extend_from_slice(extra);
        for (flag, file) in [
            ("-lf", Some(&self.leases)),
            ("-pf", Some(&self.pid)),
            ("-sf", Some(&self.script)),
            ("-cf", self.conf.as_ref()),
        ] {
            if let Some(file) = file {
                argv.push(flag);
                argv.push(file.to_str().expect("utf-8 path"));
            }
        }
        argv.push("eth0");
        self.ns.run(&argv)
    }

    pub fn records(&self, reason: &str) -> Vec<Record> {
        records(&self.record, reason)
    }

    /// The latest event of `reason` once it was recorded (within `secs`).
    pub fn wait_event(&self, reason: &str, secs: u64) -> Option<Record> {
        wait_for(secs, || self.records(reason).pop())
    }

    /// What the record file holds, for failure messages.
    pub fn record_text(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }
}

/// dhcpcd 9 (`dhcpcd-base`) calls its script with `$reason` and `new_*` variables.
const DHCPCD_HOOK: &str = r#"echo "$reason ip=$new_ip_address cidr=$new_subnet_cidr routers=$(echo $new_routers | tr ' ' ,) dns=$(echo $new_domain_name_servers | tr ' ' ,) lease=$new_dhcp_lease_time host=$new_host_name ntp=$(echo $new_ntp_servers | tr ' ' ,) routes=$(echo $new_classless_static_routes | tr ' ' ,) server=$new_dhcp_server_identifier" >> "$RECORD""#;

/// dhcpcd's DHCPv6 variables: the IA_NA address, DNS servers, search list.
const DHCPCD6_HOOK: &str = r#"echo "$reason ip6=$new_dhcp6_ia_na1_ia_addr1 dns6=$(echo $new_dhcp6_name_servers | tr ' ' ,) search=$(echo $new_dhcp6_domain_search | tr ' ' ,)" >> "$RECORD""#;

/// Debian's /etc/dhcpcd.conf as shipped (DUID client identifier, the options it asks for), with
/// NTP servers asked for too and the host name set: a test's namespace shares the host's UTS
/// name, which dhcpcd would otherwise send.
const DHCPCD_CONF: &str = "duid\npersistent\nvendorclassid\n\
    option domain_name_servers, domain_name, domain_search\noption classless_static_routes\n\
    option interface_mtu\noption host_name\noption rapid_commit\noption ntp_servers\n\
    require dhcp_server_identifier\n";

/// dhcpcd on `eth0` of a namespace, IPv4 only, in the foreground. It keeps its DUID and leases
/// in `dir` (bind-mounted over /var/lib/dhcpcd, with a private /run, in a mount namespace of its
/// own), so the host's dhcpcd state is never touched and the DUID survives a restart.
pub struct Dhcpcd<'a> {
    ns: &'a Netns,
    /// `-4` or `-6`.
    family: &'static str,
    conf: PathBuf,
    script: PathBuf,
    record: PathBuf,
    db: PathBuf,
}

impl<'a> Dhcpcd<'a> {
    /// `extra` is appended to the config (e.g. `interface eth0\niaid 1\n`).
    pub fn new(ns: &'a Netns, dir: &Path, tag: &str, hostname: &str, extra: &str) -> Dhcpcd<'a> {
        let record = dir.join(format!("dhcpcd-{tag}.record"));
        let conf = dir.join(format!("dhcpcd-{tag}.conf"));
        std::fs::write(&conf, format!("{DHCPCD_CONF}hostname {hostname}\n{extra}"))
            .expect("write dhcpcd.conf");
        let db = dir.join(format!("dhcpcd-{tag}.db"));
        std::fs::create_dir_all(&db).expect("dhcpcd state dir");
        Dhcpcd {
            ns,
            family: "-4",
            script: hook(dir, &format!("dhcpcd-{tag}"), &record, DHCPCD_HOOK),
            conf,
            record,
            db,
        }
    }

    /// dhcpcd for DHCPv6 only (`-6`): it follows the router advertisement's M flag to a
    /// stateful exchange, and sends its host name as the Client FQDN (`fqdn both`).
    pub fn v6(ns: &'a Netns, dir: &Path, tag: &str, hostname: &str, extra: &str) -> Dhcpcd<'a> {
        let mut d = Dhcpcd::new(ns, dir, tag, hostname, &format!("fqdn both\n{extra}"));
        d.family = "-6";
        d.script = hook(dir, &format!("dhcpcd6-{tag}"), &d.record, DHCPCD6_HOOK);
        d
    }

    pub fn spawn(&self) -> RunningDhcpcd {
        let inner = format!(
            "mount --bind '{}' /var/lib/dhcpcd && mount -t tmpfs hostagent-test /run && \
             exec dhcpcd {} -B -d -f '{}' -c '{}' eth0",
            self.db.display(),
            self.family,
            self.conf.display(),
            self.script.display()
        );
        let log = std::fs::File::create(self.record.with_extension("log")).expect("dhcpcd log");
        let child = self
            .ns
            .cmd(&["unshare", "-m", "sh", "-c", &inner])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn dhcpcd (package dhcpcd-base)");
        RunningDhcpcd {
            child: Some(child),
            record: self.record.clone(),
        }
    }

    pub fn records(&self, reason: &str) -> Vec<Record> {
        records(&self.record, reason)
    }

    /// dhcpcd's own log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.record.with_extension("log")).unwrap_or_default()
    }
}

/// A dhcpcd in the foreground (`ip netns exec` and `unshare` exec in place, so the pid is
/// dhcpcd's); killed on drop.
pub struct RunningDhcpcd {
    child: Option<Child>,
    record: PathBuf,
}

impl RunningDhcpcd {
    /// The latest event of `reason` once it was recorded (within `secs`).
    pub fn wait_event(&self, reason: &str, secs: u64) -> Option<Record> {
        wait_for(secs, || records(&self.record, reason).pop())
    }

    /// SIGUSR1: renew now.
    pub fn renew(&self) {
        self.signal(libc::SIGUSR1);
    }

    /// SIGALRM: release the lease and exit; waits for the exit.
    pub fn release(mut self) {
        self.signal(libc::SIGALRM);
        self.wait();
    }

    /// SIGTERM: exit keeping the lease (a reboot); waits for the exit.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        self.wait();
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn wait(&mut self) {
        if let Some(mut c) = self.child.take() {
            let exited = wait_for(15, || c.try_wait().ok().flatten());
            if exited.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for RunningDhcpcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
