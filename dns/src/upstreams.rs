//! Where forwarded queries go: the host's real resolvers.
//!
//! The rule: explicit forwarders win; otherwise the `nameserver` lines of `<root>/etc/resolv.conf`;
//! when those are only loopback stubs (systemd-resolved's 127.0.0.53, any 127.0.0.0/8, ::1), the
//! servers in `<root>/run/systemd/resolve/resolv.conf` (systemd-resolved's list of the real
//! upstreams). Loopback servers are reachable from the host, where this server runs, so when no
//! systemd-resolved file exists a loopback-only resolv.conf (a local unbound, say) is used as it is.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::error::UpstreamError;

const RESOLV_CONF: &str = "etc/resolv.conf";
const RESOLVED_CONF: &str = "run/systemd/resolve/resolv.conf";

/// The upstream resolvers of one server, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    source: UpstreamSource,
}

/// Where the list came from, for `plan` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSource {
    /// Given by the caller (`[network.dns] forwarders`).
    Forwarders,
    /// `nameserver` lines of this file.
    ResolvConf(PathBuf),
    /// systemd-resolved's upstream list, because resolv.conf named only loopback stubs.
    SystemdResolved(PathBuf),
    /// None at all: every forwarded query gets SERVFAIL.
    Nothing,
    /// None by choice ([`Upstreams::local_only`]): names that are not local get REFUSED.
    LocalOnly,
}

impl Upstreams {
    /// Exactly these servers (a test's dnsmasq on a high port, or the configured forwarders).
    pub fn explicit(servers: impl IntoIterator<Item = SocketAddr>) -> Upstreams {
        Upstreams {
            servers: servers.into_iter().collect(),
            source: UpstreamSource::Forwarders,
        }
    }

    /// No upstream: the server answers its own names and SERVFAIL for the rest.
    pub fn none() -> Upstreams {
        Upstreams {
            servers: Vec::new(),
            source: UpstreamSource::Nothing,
        }
    }

    /// Forward nothing on purpose: the server answers its own names and REFUSED for the rest
    /// (a network whose guests must not reach the outside, not even through DNS).
    pub fn local_only() -> Upstreams {
        Upstreams {
            servers: Vec::new(),
            source: UpstreamSource::LocalOnly,
        }
    }

    /// Applies the rule in the module docs under `root` (`/` on a real host). `forwarders`
    /// (port 53 unless given) override the files. An empty outcome is
    /// [`UpstreamError::NoneFound`], naming the files that were read.
    pub fn discover(root: &Path, forwarders: &[SocketAddr]) -> Result<Upstreams, UpstreamError> {
        if !forwarders.is_empty() {
            return Ok(Upstreams::explicit(forwarders.iter().copied()));
        }
        let resolv = root.join(RESOLV_CONF);
        let listed = read_nameservers(&resolv)?;
        if listed.iter().any(|a| !a.ip().is_loopback()) {
            return Ok(Upstreams {
                servers: listed,
                source: UpstreamSource::ResolvConf(resolv),
            });
        }
        let resolved = root.join(RESOLVED_CONF);
        let real = read_nameservers(&resolved)?;
        if !real.is_empty() {
            return Ok(Upstreams {
                servers: real,
                source: UpstreamSource::SystemdResolved(resolved),
            });
        }
        if !listed.is_empty() {
            return Ok(Upstreams {
                servers: listed,
                source: UpstreamSource::ResolvConf(resolv),
            });
        }
        Err(UpstreamError::NoneFound {
            looked_in: vec![resolv, resolved],
        })
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    pub fn source(&self) -> &UpstreamSource {
        &self.source
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Drops servers that are this server's own listening addresses: forwarding to ourselves
    /// would loop (a host whose resolv.conf names its own bridge address).
    pub(crate) fn without(mut self, own: &[SocketAddr]) -> Upstreams {
        self.servers.retain(|s| !own.contains(s));
        self
    }
}

/// The files [`Upstreams::discover`] reads under a root, and how they looked when last seen:
/// a changed fingerprint (another inode, size or mtime; a symlink is followed, so
/// systemd-resolved's rename into place and a re-pointed link both count) means the host's
/// resolvers may have changed.
#[derive(Debug)]
pub(crate) struct ResolverFiles {
    root: PathBuf,
    seen: Vec<Option<Fingerprint>>,
}

type Fingerprint = (u64, u64, u64, i64, i64);

impl ResolverFiles {
    pub(crate) fn new(root: &Path) -> ResolverFiles {
        ResolverFiles {
            root: root.to_path_buf(),
            seen: Vec::new(),
        }
    }

    /// The upstreams as the files say now ([`Upstreams::discover`]), remembering how the files
    /// looked first, so that a change while they are read is seen by the next [`changed`].
    ///
    /// [`changed`]: ResolverFiles::changed
    pub(crate) fn discover(&mut self) -> Result<Upstreams, UpstreamError> {
        self.seen = fingerprints(&self.root);
        Upstreams::discover(&self.root, &[])
    }

    /// `Some` with the upstreams discovered again when a file changed since the last look,
    /// `None` when nothing did.
    pub(crate) fn changed(&mut self) -> Option<Result<Upstreams, UpstreamError>> {
        if fingerprints(&self.root) == self.seen {
            return None;
        }
        Some(self.discover())
    }
}

fn fingerprints(root: &Path) -> Vec<Option<Fingerprint>> {
    use std::os::unix::fs::MetadataExt;
    [RESOLV_CONF, RESOLVED_CONF]
        .iter()
        .map(|rel| {
            let m = std::fs::metadata(root.join(rel)).ok()?;
            Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The `nameserver` addresses of a resolv.conf (port 53); a missing file has none.
fn read_nameservers(path: &Path) -> Result<Vec<SocketAddr>, UpstreamError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UpstreamError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A scoped link-local address (`fe80::1%eth0`) cannot be used without its interface; skip.
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(resolv: Option<&str>, resolved: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in [(RESOLV_CONF, resolv), (RESOLVED_CONF, resolved)] {
            if let Some(text) = text {
                let p = dir.path().join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
        }
        dir
    }

    fn addrs(u: &Upstreams) -> Vec<String> {
        u.servers().iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn resolv_conf_with_real_servers_is_used_in_order() {
        let r = root(
            Some("# comment\nsearch example\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver fe80::1%eth0\nnameserver junk\nnameserver 192.0.2.1\n"),
            Some("nameserver 198.51.100.1\n"),
        );
        let u = Upstreams::discover(r.path(), &[]).unwrap();
        assert_eq!(addrs(&u), ["192.0.2.1:53", "[2001:db8::1]:53"]);
        assert_eq!(
            u.source(),
            &UpstreamSource::ResolvConf(r.path().join(RESOLV_CONF))
        );
    }

    #[test]
    fn loopback_stub_only_means_systemd_resolveds_file() {
        let r = root(
            Some("nameserver 127.0.0.53\noptions edns0 trust-ad\n"),
            Some("nameserver 198.51.100.1\nnameserver 198.51.100.2\n"),
        );
        let u = Upstreams::discover(r.path(), &[]).unwrap();
        assert_eq!(addrs(&u), ["198.51.100.1:53", "198.51.100.2:53"]);
        assert!(matches!(u.source(), UpstreamSource::SystemdResolved(_)));
    }

    #[test]
    fn a_changed_file_is_seen_once_and_discovered_again() {
        let r = root(Some("nameserver 192.0.2.1\n"), None);
        let mut files = ResolverFiles::new(r.path());
        assert_eq!(addrs(&files.discover().unwrap()), ["192.0.2.1:53"]);
        assert!(files.changed().is_none(), "nothing changed yet");
        // systemd-resolved's way: write a new file, rename it over the old one.
        let tmp = r.path().join("etc/.resolv.conf.new");
        std::fs::write(&tmp, "nameserver 127.0.0.53\n").unwrap();
        std::fs::rename(&tmp, r.path().join(RESOLV_CONF)).unwrap();
        std::fs::create_dir_all(r.path().join("run/systemd/resolve")).unwrap();
        std::fs::write(r.path().join(RESOLVED_CONF), "nameserver 198.51.100.7\n").unwrap();
        let u = files.changed().expect("a change").unwrap();
        assert_eq!(addrs(&u), ["198.51.100.7:53"]);
        assert!(files.changed().is_none(), "seen once");
        // Both gone: discovery fails, and says where it looked.
        std::fs::remove_file(r.path().join(RESOLV_CONF)).unwrap();
        std::fs::remove_file(r.path().join(RESOLVED_CONF)).unwrap();
        assert!(matches!(
            files.changed(),
            Some(Err(UpstreamError::NoneFound { .. }))
        ));
    }

    #[test]
    fn loopback_only_without_resolved_keeps_the_local_resolver() {
        let r = root(Some("nameserver 127.0.0.1\nnameserver ::1\n"), None);
        let u = Upstreams::discover(r.path(), &[]).unwrap();
        assert_eq!(addrs(&u), ["127.0.0.1:53", "[::1]:53"]);
    }

    #[test]
    fn forwarders_override_and_nothing_is_a_clear_error() {
        let r = root(Some("nameserver 192.0.2.1\n"), None);
        let fw: SocketAddr = "203.0.113.5:53".parse().unwrap();
        assert_eq!(
            addrs(&Upstreams::discover(r.path(), &[fw]).unwrap()),
            ["203.0.113.5:53"]
        );
        let empty = root(Some("search example\n"), Some(""));
        let err = Upstreams::discover(empty.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("etc/resolv.conf"), "{err}");
        assert!(err.contains("run/systemd/resolve/resolv.conf"), "{err}");
        assert!(err.contains("forwarders"), "{err}");
        let none = root(None, None);
        assert!(matches!(
            Upstreams::discover(none.path(), &[]),
            Err(UpstreamError::NoneFound { .. })
        ));
    }
}
