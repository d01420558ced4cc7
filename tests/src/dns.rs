//! DNS in the integration tests: real `dig` from a namespace (its answer parsed), the guest's own
//! libc resolver through the resolv.conf its DHCP client wrote (`getent` in a private mount
//! namespace, never the host's /etc), DHCP clients whose hooks write that resolv.conf as a
//! distribution's would, and a real dnsmasq as the upstream resolver in a namespace of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::{run_ok, wait_for, Netns};

/// One dig run and what it printed, parsed.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answers: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub text: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The data column of each answer (`192.168.122.10`, `bastion.default.`).
    pub fn data(&self) -> Vec<String> {
        self.answers.iter().map(|r| r[4..].join(" ")).collect()
    }
}

/// `dig +time=2 +tries=1 ARGS` inside `ns` (put `@SERVER`, `-b SOURCE`, names and types in
/// `args`).
pub fn dig(ns: &Netns, args: &[&str]) -> Dig {
    let mut argv = vec!["dig", "+time=2", "+tries=1", "+nocookie"];
    argv.extend_from_slice(args);
    let out = ns.run(&argv);
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(text: &str) -> Dig {
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "NO ANSWER".into());
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|l| {
            l.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let section = |title: &str| -> Vec<Vec<String>> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(title)).skip(1);
        let mut out = Vec::new();
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
            out.push(l.split_whitespace().map(String::from).collect());
        }
        out
    };
    Dig {
        status,
        flags,
        answers: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
        text: text.to_string(),
    }
}

/// `getent hosts KEY` (a name or an address) as the guest's libc resolves it: in a private mount
/// namespace of `ns` whose /etc/resolv.conf is `resolv_conf`. The line getent printed
/// (`ADDRESS NAME [ALIASES]`), or None when the name does not resolve.
pub fn getent_hosts(ns: &Netns, resolv_conf: &Path, key: &str) -> Option<String> {
    // unshare(1) makes the new mount namespace's mounts private: the bind mount never reaches
    // the host's mount table.
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf && exec getent hosts '{key}'",
        resolv_conf.display()
    );
    let out = ns.run(&["unshare", "--mount", "sh", "-c", &script]);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// The `nameserver` addresses of a resolv.conf a DHCP client wrote.
pub fn nameservers(resolv_conf: &Path) -> Vec<String> {
    std::fs::read_to_string(resolv_conf)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The `search` domains of a resolv.conf.
pub fn search(resolv_conf: &Path) -> Vec<String> {
    std::fs::read_to_string(resolv_conf)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("search "))
        .flat_map(|s| s.split_whitespace().map(String::from))
        .collect()
}

/// What a distribution's udhcpc script does on `bound`/`renew`: the address, then resolv.conf
/// from the options (`search $domain`, one `nameserver` per `$dns`).
const UDHCPC_HOOK: &str = r#"case "$1" in
bound|renew)
  ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
  { [ -n "$domain" ] && echo "search $domain"; for s in $dns; do echo "nameserver $s"; done; } > "$RESOLV"
  echo "$1 ip=$ip" >> "$RECORD" ;;
deconfig) ip addr flush dev "$interface"; echo "deconfig" >> "$RECORD" ;;
esac
exit 0"#;

/// The same for ISC dhclient (its `$reason` and `$new_*` variables).
const DHCLIENT_HOOK: &str = r#"case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
  ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
  { [ -n "$new_domain_name" ] && echo "search $new_domain_name"; for s in $new_domain_name_servers; do echo "nameserver $s"; done; } > "$RESOLV"
  echo "$reason ip=$new_ip_address" >> "$RECORD" ;;
RELEASE|STOP|EXPIRE) ip addr flush dev "$interface"; echo "$reason" >> "$RECORD" ;;
esac
exit 0"#;

/// A DHCP client's files under a test's scratch dir: its hook script, the resolv.conf the hook
/// writes and the record of events (`bound ip=...`).
pub struct ClientFiles {
    pub script: PathBuf,
    pub resolv_conf: PathBuf,
    pub record: PathBuf,
}

impl ClientFiles {
    fn new(dir: &Path, tag: &str, hook: &str) -> ClientFiles {
        let files = ClientFiles {
            script: dir.join(format!("{tag}.sh")),
            resolv_conf: dir.join(format!("{tag}.resolv.conf")),
            record: dir.join(format!("{tag}.record")),
        };
        // dhclient clears the environment: the paths are written into the script.
        std::fs::write(
            &files.script,
            format!(
                "#!/bin/sh\nRESOLV='{}'\nRECORD='{}'\n{hook}\n",
                files.resolv_conf.display(),
                files.record.display()
            ),
        )
        .expect("write hook");
        run_ok(
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&files.script),
        );
        files
    }

    /// The address of the last `bound`-like event (udhcpc `bound`/`renew`, dhclient
    /// `BOUND`/`REBOOT`...).
    pub fn bound_ip(&self) -> Option<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .rev()
            .find_map(|l| l.split_once(" ip=").map(|(_, ip)| ip.trim().to_string()))
            .filter(|ip| !ip.is_empty())
    }
}

/// busybox udhcpc in the foreground on the guest's eth0, asking for `hostname`; killed on drop.
pub struct Udhcpc {
    child: Child,
    pub files: ClientFiles,
}

impl Udhcpc {
    pub fn start(guest: &Netns, dir: &Path, tag: &str, hostname: &str) -> Udhcpc {
        let files = ClientFiles::new(dir, &format!("udhcpc-{tag}"), UDHCPC_HOOK);
        let host = format!("hostname:{hostname}");
        let child = guest
            .cmd(&[
                "busybox",
                "udhcpc",
                "-i",
                "eth0",
                "-f",
                "-t",
                "10",
                "-T",
                "2",
                "-x",
                &host,
                "-s",
                files.script.to_str().expect("utf-8 path"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn udhcpc");
        Udhcpc { child, files }
    }

    /// The bound address, once the hook has recorded it (within `secs`).
    pub fn wait_bound(&self, secs: u64) -> Option<String> {
        wait_for(secs, || self.files.bound_ip())
    }

    /// SIGUSR2: udhcpc sends a RELEASE and deconfigures the address.
    pub fn release(&self) {
        // SAFETY: kill(2) on our own child (`ip netns exec` execs udhcpc in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR2) };
    }
}

impl Drop for Udhcpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ISC dhclient on the guest's eth0, sending `hostname` (option 12), with its own lease, pid and
/// config files.
pub struct Dhclient<'a> {
    guest: &'a Netns,
    pub files: ClientFiles,
    conf: PathBuf,
    leases: PathBuf,
    pid: PathBuf,
}

impl<'a> Dhclient<'a> {
    pub fn new(guest: &'a Netns, dir: &Path, tag: &str, hostname: &str) -> Dhclient<'a> {
        let tag = format!("dhclient-{tag}");
        let conf = dir.join(format!("{tag}.conf"));
        std::fs::write(&conf, format!("send host-name \"{hostname}\";\n")).expect("dhclient.conf");
        Dhclient {
            guest,
            files: ClientFiles::new(dir, &tag, DHCLIENT_HOOK),
            conf,
            leases: dir.join(format!("{tag}.leases")),
            pid: dir.join(format!("{tag}.pid")),
        }
    }

    /// `dhclient -4 EXTRA ...` (`-1`: one lease, then to the background; `-r`: release and
    /// stop); stderr when it fails.
    pub fn run(&self, extra: &[&str]) -> Result<(), String> {
        let mut argv = vec!["timeout", "40", "dhclient", "-4", "-v"];
        argv.extend_from_slice(extra);
        for (flag, file) in [
            ("-cf", &self.conf),
            ("-lf", &self.leases),
            ("-pf", &self.pid),
            ("-sf", &self.files.script),
        ] {
            argv.push(flag);
            argv.push(file.to_str().expect("utf-8 path"));
        }
        argv.push("eth0");
        let out = self.guest.run(&argv);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Dhclient<'_> {
    fn drop(&mut self) {
        // `-1` leaves it running in the background; the namespace's drop kills it too.
        let _ = self.run(&["-x"]);
    }
}

/// dnsmasq as an upstream resolver in a namespace of its own, linked to `host` by a veth:
/// `host_side` on the host's end (`10.92.1.1/24`), `addr` on its own (`10.92.1.2/24`). It
/// answers what `extra` says (`--address=/upstream.test/10.9.9.9`), with TTL 300, and logs
/// every query it gets.
pub struct Upstream {
    pub ns: Netns,
    child: Child,
    log: PathBuf,
    pub addr: String,
}

impl Upstream {
    pub fn start(
        host: &Netns,
        dir: &Path,
        host_side: &str,
        addr: &str,
        extra: &[&str],
    ) -> Upstream {
        let ns = Netns::new("up");
        host.veth_to("vupstream", &ns, "eth0");
        host.ok(&["ip", "addr", "add", host_side, "dev", "vupstream"]);
        ns.ok(&["ip", "addr", "add", addr, "dev", "eth0"]);
        let ip = addr.split('/').next().unwrap_or(addr).to_string();
        let log = dir.join("upstream-dnsmasq.log");
        let mut argv = vec![
            "dnsmasq".to_string(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--pid-file=".into(),
            "--user=root".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={ip}"),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--log-queries".into(),
            "--local-ttl=300".into(),
            format!("--log-facility={}", log.display()),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = ns
            .cmd(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (Debian package dnsmasq-base)");
        let up = Upstream {
            ns,
            child,
            log,
            addr: ip,
        };
        assert!(
            wait_for(10, || up
                .log_text()
                .contains("started, version")
                .then_some(()))
            .is_some(),
            "the upstream dnsmasq did not start: {}",
            up.log_text()
        );
        up
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries it has logged, of any type and name.
    pub fn queries(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(": query["))
            .count()
    }

    /// How many queries of `qtype` for `name` it has logged (`query[A] name from ...`).
    pub fn queries_for(&self, qtype: &str, name: &str) -> usize {
        let needle = format!("query[{qtype}] {name} from ");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
