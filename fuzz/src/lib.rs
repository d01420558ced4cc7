//! Shared pieces of the fuzz targets: the framing that turns one fuzz input into several DHCP
//! packets (the RA target frames its solicitations the same way), the control message a raw
//! ICMPv6 socket reports, the DHCP network every DHCP input is answered on, and the fixed boot tree (with
//! symlinks that escape it) that the TFTP and HTTP targets resolve names in.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pxe::config::{BootConfig, DhcpConfig, Mac, PxelinuxOptions, StaticHost, StaticRoute};

/// pxe's TFTP wire parser itself (public for this target), not a copy.
pub use pxe::tftp::packet as tftp_packet;

/// Most packets taken from one input: enough for DISCOVER/REQUEST/RELEASE/DECLINE sequences
/// over a 16-address pool, small enough to keep an iteration well under a millisecond.
pub const MAX_FRAMES: usize = 48;

/// One packet of a DHCP fuzz input and how far the clock moves before it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Seconds added to `now` before this packet (× 8, so lease expiry is reachable).
    pub advance: u64,
    pub bytes: &'a [u8],
}

/// Input layout: repeated `[advance: u8][len: u16 BE][len bytes]`. A last frame whose length runs
/// past the end takes what is left, so every input is some sequence of packets.
pub fn frames(mut data: &[u8]) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < MAX_FRAMES {
        let advance = u64::from(data[0]) * 8;
        let len = usize::from(u16::from_be_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let take = len.min(rest.len());
        out.push(Frame {
            advance,
            bytes: &rest[..take],
        });
        data = &rest[take..];
    }
    out
}

/// The inverse of [`frames`], for writing seeds.
pub fn frame(advance_units: u8, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![advance_units];
    out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    out.extend_from_slice(packet);
    out
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
pub const RANGE_START: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
pub const RANGE_END: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 115);
/// Reservation inside the dynamic range (must never be offered to anyone else).
pub const RESERVED_IN_RANGE: (Mac, Ipv4Addr) = (
    Mac([0x52, 0x54, 0, 0, 0, 0x10]),
    Ipv4Addr::new(10, 9, 0, 105),
);
/// Reservation outside the dynamic range.
pub const RESERVED_OUTSIDE: (Mac, Ipv4Addr) = (
    Mac([0x52, 0x54, 0, 0, 0, 0x11]),
    Ipv4Addr::new(10, 9, 0, 11),
);

/// A network with every feature the reply path has: router, DNS, domain, MTU, NTP, classless
/// static routes, static hosts with per-host boot files, BIOS/UEFI/arm64/iPXE boot files, HTTP
/// boot and the PXELINUX options.
pub fn dhcp_config(lease_file: PathBuf) -> DhcpConfig {
    DhcpConfig {
        network: "fuzz".into(),
        interface: "fuzz0".into(),
        server_ip: SERVER_IP,
        subnet: "10.9.0.0/24".parse().expect("subnet literal"),
        range_start: RANGE_START,
        range_end: RANGE_END,
        lease_time: Duration::from_secs(3600),
        router: Some(SERVER_IP),
        dns: vec![SERVER_IP, Ipv4Addr::new(9, 9, 9, 9)],
        domain: Some("fuzz.example".into()),
        mtu: Some(1500),
        ntp: vec![SERVER_IP, Ipv4Addr::new(10, 9, 0, 2)],
        routes: vec![
            StaticRoute {
                destination: "10.20.0.0/16".parse().expect("route literal"),
                router: Ipv4Addr::new(10, 9, 0, 254),
            },
            StaticRoute {
                destination: "192.168.7.128/25".parse().expect("route literal"),
                router: Ipv4Addr::new(10, 9, 0, 253),
            },
        ],
        hosts: vec![
            StaticHost {
                mac: RESERVED_IN_RANGE.0.into(),
                ip: RESERVED_IN_RANGE.1,
                name: Some("bastion".into()),
                boot: Some("custom.kpxe".into()),
                script: None,
            },
            StaticHost {
                mac: RESERVED_OUTSIDE.0.into(),
                ip: RESERVED_OUTSIDE.1,
                name: Some("installer".into()),
                boot: None,
                script: Some("installer.ipxe".into()),
            },
        ],
        boot: Some(BootConfig {
            root: PathBuf::from("/nonexistent-fuzz-boot-root"),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: Some("ipxe-arm64.efi".into()),
            script: Some("boot.ipxe".into()),
            http_port: Some(8069),
            pxelinux: PxelinuxOptions {
                config_file: Some("pxelinux.cfg/fuzz".into()),
                path_prefix: Some("boot/".into()),
                reboot_time: Some(300),
            },
        }),
        lease_file,
    }
}

/// A scratch directory for journals: /dev/shm when present, so an fdatasync per input costs
/// nothing, and removed when the process exits normally.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("hostagent-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fuzz scratch dir");
    dir
}

/// Content of the file planted OUTSIDE the boot root: a resolved name must never read it.
pub const SECRET: &[u8] = b"SECRET-OUTSIDE-THE-BOOT-ROOT";

/// The fixed boot tree for the TFTP and HTTP targets:
/// ```text
/// <base>/secret                         (outside: must never be served)
/// <base>/root/pxelinux.0
/// <base>/root/sub/dir/file.bin
/// <base>/root/link-in     -> pxelinux.0          (inside: served)
/// <base>/root/abs-in      -> <base>/root/sub/dir/file.bin (absolute, inside: served)
/// <base>/root/link-out    -> ../secret           (escapes)
/// <base>/root/abs-out     -> <base>/secret       (escapes)
/// <base>/root/sub/up      -> ../../secret        (escapes from a subdirectory)
/// <base>/root/dir-out     -> ..                  (directory escape)
/// <base>/root/loop        -> loop                (ELOOP)
/// <base>/root/fifo                               (must never block)
/// ```
/// Returns the root directory.
pub fn boot_tree(tag: &str) -> PathBuf {
    use std::os::unix::fs::symlink;
    let base = scratch_dir(tag);
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub/dir")).expect("tree");
    std::fs::write(base.join("secret"), SECRET).expect("secret");
    std::fs::write(root.join("pxelinux.0"), b"PXELINUX").expect("file");
    std::fs::write(root.join("sub/dir/file.bin"), b"FILEBIN").expect("file");
    symlink("pxelinux.0", root.join("link-in")).expect("symlink");
    symlink(root.join("sub/dir/file.bin"), root.join("abs-in")).expect("symlink");
    symlink("../secret", root.join("link-out")).expect("symlink");
    symlink(base.join("secret"), root.join("abs-out")).expect("symlink");
    symlink("../../secret", root.join("sub/up")).expect("symlink");
    symlink("..", root.join("dir-out")).expect("symlink");
    symlink("loop", root.join("loop")).expect("symlink");
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_encoded_bytes())
        .expect("fifo path");
    // SAFETY: a valid NUL-terminated path. A missing FIFO only weakens the tree.
    let _ = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    root
}

/// [`boot_tree`] with the SafeRoot the servers would build over it.
pub struct SafeTree {
    /// The canonical root (what served files must lie under).
    pub root: PathBuf,
    pub safe: pxe::saferoot::SafeRoot,
}

impl SafeTree {
    pub fn new(tag: &str) -> SafeTree {
        let root = boot_tree(tag).canonicalize().expect("canonical root");
        let safe = pxe::saferoot::SafeRoot::new(&root).expect("SafeRoot over the fixed tree");
        SafeTree { root, safe }
    }
}

/// Asserts that a file SafeRoot handed out lies inside `root`, is a regular file and is not the
/// planted secret. Panics (= a fuzz finding) otherwise.
pub fn assert_served_file_is_inside(root: &Path, requested: &str, file: &std::fs::File) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("readlink /proc/self/fd");
    assert!(
        real.starts_with(root),
        "{requested:?} resolved to {} outside the root {}",
        real.display(),
        root.display()
    );
    let meta = file.metadata().expect("fstat");
    assert!(meta.is_file(), "{requested:?} served a non-regular file");
    let mut content = Vec::new();
    let mut f = file;
    f.read_to_end(&mut content).expect("read served file");
    assert_ne!(
        content, SECRET,
        "{requested:?} served the secret outside the root"
    );
}

/// The IPV6_HOPLIMIT control message a raw ICMPv6 socket reports, for the RA target.
pub fn cmsg_hop_limit(hop: i32) -> Vec<u8> {
    ra::server::cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, hop)
}
