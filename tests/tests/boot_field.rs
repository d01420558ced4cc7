//! Stock boot loaders as people run them, booted by real firmware under QEMU (`-accel tcg`) from
//! `hostagent run` in a namespace, each until the marker kernel prints HOSTAGENT-BOOT-OK:
//! - SeaBIOS + QEMU's NIC ROM (which is iPXE) → Debian's stock `pxelinux.0` → its per-MAC
//!   `pxelinux.cfg/01-<mac>` (the config has `bios` and no `script`: the issue's "Nothing to
//!   boot");
//! - OVMF with Secure Boot on (Microsoft keys) → Debian's signed shim → signed GRUB → the signed
//!   stock kernel, through the tree's own GRUB prefix;
//! - OVMF's own UEFI HTTP boot → ipxe.efi → script;
//! - proxyDHCP while dnsmasq (another host on the segment) hands out the addresses: SeaBIOS's
//!   iPXE ROM, and OVMF's PXE (which asks on UDP 4011);
//! - arm64 EDK2 (qemu-system-aarch64) up to its download of the `arm64` file: there is no arm64
//!   loader or kernel among this host's packages (they would need apt's arm64 architecture), so
//!   that firmware stops at "Unsupported" once it has the file.
//!
//! The boot root is Debian's netboot tree copied as shipped (`netboot`); six guests of 20–60 s,
//! run alone (.config/nextest.toml: `boot_field_`).
//!
//! Deviation from a real default: the dnsmasq peer runs with `--no-ping` (it would wait ~3 s per
//! offer to ping the address first) and `--port=0` (no DNS), which changes nothing the PXE
//! client sees.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::console::read_log;
use hostagent_tests::daemon::Daemon;
use hostagent_tests::netboot::{self, PAYLOAD, PXELINUX, SHIM};
use hostagent_tests::qemu::{Booted, Firmware, Guest, GuestSpec, HARD_TIMEOUT};
use hostagent_tests::Scratch;
use testkit::{wait_for, Netns};

const BRIDGE: &str = "br-field";
/// The boot root as the config names it; on disk under the scratch root (--root prefixes it).
const BOOT_ROOT: &str = "/srv/boot";
const HTTP_PORT: u16 = 8069;

/// One namespace with `hostagent run` serving the stock tree.
struct Lab {
    ns: Netns,
    s: Scratch,
    cfg: String,
    daemon: Daemon,
}

impl Lab {
    /// The tree is installed first; `extra` adds files to it before the daemon starts.
    fn start(tag: &str, config: Config, extra: impl FnOnce(&std::path::Path)) -> Lab {
        let ns = Netns::new(tag);
        let s = Scratch::new();
        let root = s.file(BOOT_ROOT.trim_start_matches('/'));
        netboot::install(&root);
        extra(&root);
        let cfg = s.config(config);
        let mut daemon = Daemon::start(&ns, &s, &cfg, &[]);
        daemon.wait_listening(&ns, BRIDGE, &[67, 69], &[]);
        Lab { ns, s, cfg, daemon }
    }

    fn boot(&self, tap: &str, mac: &str, firmware: Firmware) -> Booted {
        let mut guest = Guest::launch(
            &self.ns,
            GuestSpec {
                bridge: BRIDGE.into(),
                tap: tap.into(),
                mac: mac.into(),
                firmware,
                dir: self.s.file("guest"),
                agent_log: Some(self.daemon.log.clone()),
            },
        );
        let booted = guest.expect_boot(HARD_TIMEOUT);
        eprintln!(
            "{firmware:?} {mac} booted in {:.1?}: {}",
            booted.elapsed, booted.line
        );
        booted
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    fn tftp(&self) -> serde_json::Value {
        Cli::new(&self.ns, &self.s, &self.cfg).server("lab")["tftp"].clone()
    }

    /// Agent log lines with `needle` and the MAC.
    fn lines_with(&self, mac: &str, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(mac) && l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The agent logged `event` ("dhcp ack", "proxy offer", "proxy ack") for `mac` with this
    /// client kind and boot file or URL; returns those lines.
    fn assert_answered(&self, mac: &str, event: &str, kind: &str, boot: &str) -> Vec<String> {
        let (kind, boot) = (format!("kind={kind} "), format!("boot=\"{boot}\""));
        let lines: Vec<String> = self
            .lines_with(mac, event)
            .into_iter()
            .filter(|l| l.contains(&kind) && l.contains(&boot))
            .collect();
        assert!(
            !lines.is_empty(),
            "no {event} to {mac} with {kind}{boot}:\n{}",
            self.log()
        );
        lines
    }

    /// The agent logged a completed TFTP transfer of `file` (as the client spelled it).
    fn assert_sent(&self, file: &str) {
        let path = format!("path={file} ");
        assert!(
            self.lines_with("", "tftp: transfer completed")
                .iter()
                .any(|l| l.contains(&path)),
            "no TFTP transfer of {file}:\n{}",
            self.log()
        );
    }

    /// Misses are answered "file not found" and counted apart; none is logged above debug
    /// level (the daemon runs without -v) and nothing was refused.
    fn assert_misses_quiet(&self) {
        let t = self.tftp();
        assert_eq!(counter(&t, &["refused"]), 0, "TFTP refused something: {t}");
        let log = self.log();
        let noisy: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("tftp") && (l.contains("WARN") || l.contains("ERROR")))
            .collect();
        assert!(noisy.is_empty(), "TFTP warnings: {noisy:#?}");
        assert!(
            !log.contains("file not found"),
            "a miss was logged at info level or above:\n{log}"
        );
    }
}

fn network(address: &str) -> Network {
    Network::nat("lab", BRIDGE, address)
}

/// The stock tree's own config, on `net`.0/24: pxelinux for BIOS, shim for UEFI, and a DNS
/// server (the installer asks for one); `arm64` when given.
fn stock(net: &str, arm64: Option<&str>) -> Config {
    let mut pxe = Pxe::new(BOOT_ROOT).bios(PXELINUX).uefi(SHIM);
    if let Some(f) = arm64 {
        pxe = pxe.arm64(f);
    }
    Config::new("/var/lib/hostagent").network(
        network(&format!("{net}.1/24"))
            .dhcp(Dhcp::new(&format!("{net}.100-{net}.200")).dns(&[&format!("{net}.1")]))
            .pxe(pxe),
    )
}

/// QEMU's default NIC ROM is iPXE: with `bios = "pxelinux.0"` and no script it must get
/// pxelinux.0, which then finds its per-MAC config by TFTP.
#[test]
fn boot_field_bios_ipxe_rom_boots_stock_pxelinux_with_its_per_mac_config() {
    const MAC: &str = "52:54:00:f1:00:01";
    let lab = Lab::start("bfpx", stock("10.81.0", None), |root| {
        netboot::pxelinux_host(root, MAC);
    });
    let booted = lab.boot("tap-bfpx", MAC, Firmware::BiosIpxeRom);
    assert_eq!(booted.path(), "pxelinux", "{}", booted.line);
    lab.assert_answered(MAC, "dhcp ack", "ipxe", PXELINUX);
    let per_mac = format!("pxelinux.cfg/01-{}", MAC.replace(':', "-"));
    // Through the tree's own symlinks.
    for file in [PXELINUX, "ldlinux.c32", per_mac.as_str()] {
        lab.assert_sent(file);
    }
    lab.assert_misses_quiet();
}

/// Secure Boot on: Microsoft-signed shim, Debian-signed GRUB and kernel, GRUB's prefix in the
/// tree; shim's and GRUB's probes for files that are not there are plain misses.
#[test]
fn boot_field_uefi_secure_boot_shim_grub_stock_tree() {
    const MAC: &str = "52:54:00:f1:00:02";
    let lab = Lab::start("bfsb", stock("10.82.0", None), |root| {
        netboot::grub_host(root, MAC);
    });
    let booted = lab.boot("tap-bfsb", MAC, Firmware::UefiSecureBoot);
    assert_eq!(booted.path(), "grub", "{}", booted.line);
    let serial = read_log(&lab.s.file("guest/serial-tap-bfsb.log"));
    assert!(
        serial.contains("Secure boot enabled"),
        "the kernel did not report Secure Boot on:\n{}",
        hostagent_tests::console::tail(&serial, 40)
    );
    lab.assert_answered(MAC, "dhcp ack", "uefi-x64", SHIM);
    for file in [
        "debian-installer/amd64/grubx64.efi",
        "/debian-installer/amd64/grub/grub.cfg",
    ] {
        lab.assert_sent(file);
    }
    // shim looks for revocation lists and GRUB for $prefix/x86_64-efi/grub.cfg: misses.
    assert!(
        counter(&lab.tftp(), &["not_found"]) >= 1,
        "no miss counted: {}",
        lab.tftp()
    );
    lab.assert_misses_quiet();
}

/// OVMF with its PXE off tries UEFI HTTP boot first: it asks as `HTTPClient` and gets the
/// `uefi` file as an http:// URL; that iPXE asks again and runs the script over HTTP.
#[test]
fn boot_field_uefi_http_boot_reaches_the_marker() {
    const MAC: &str = "52:54:00:f1:00:03";
    let ipxe_efi = format!("{PAYLOAD}/ipxe.efi");
    let script = format!("{PAYLOAD}/boot.ipxe");
    let lab = Lab::start(
        "bfhb",
        Config::new("/var/lib/hostagent").network(
            network("10.83.0.1/24")
                .dhcp(Dhcp::new("10.83.0.100-10.83.0.200"))
                .pxe(
                    Pxe::new(BOOT_ROOT)
                        .uefi(&ipxe_efi)
                        .script(&script)
                        .http_port(HTTP_PORT),
                ),
        ),
        |root| {
            let body = format!(
                "#!ipxe\nkernel http://${{next-server}}:{HTTP_PORT}/{PAYLOAD}/vmlinuz initrd=initrd.img \
                 console=ttyS0 panic=-1 quiet hostagent_path=http\n\
                 initrd http://${{next-server}}:{HTTP_PORT}/{PAYLOAD}/initrd.img\nboot\n"
            );
            std::fs::write(root.join(PAYLOAD).join("boot.ipxe"), body).expect("script");
        },
    );
    let booted = lab.boot("tap-bfhb", MAC, Firmware::UefiHttpBoot);
    assert_eq!(booted.path(), "http", "{}", booted.line);
    let url = format!("http://10.83.0.1:{HTTP_PORT}/{ipxe_efi}");
    lab.assert_answered(MAC, "dhcp ack", "uefi-http", &url);
    assert!(
        lab.lines_with("", "http: transfer complete")
            .iter()
            .any(|l| l.contains(&format!("path=/{ipxe_efi} ")) && l.contains("status=200")),
        "ipxe.efi did not go over HTTP:\n{}",
        lab.log()
    );
}

/// The segment's own DHCP server: dnsmasq on another host (namespace) plugged into the bridge.
/// A proxyDHCP server and a DHCP server on one address could not be told apart by a client
/// (both would be option 54 = that address), so it gets its own, as a site's router would.
struct OtherServer {
    _host: Netns,
    child: Child,
    leases: PathBuf,
}

impl OtherServer {
    fn start(lab: &Lab, address: &str, range: &str) -> OtherServer {
        let host = lab.ns.plug(BRIDGE, "vdnsmasq");
        host.ok(&["ip", "addr", "add", address, "dev", "eth0"]);
        let leases = lab.s.file("dnsmasq.leases");
        let log = std::fs::File::create(lab.s.file("dnsmasq.log")).expect("dnsmasq log");
        let child = host
            .cmd(&[
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--no-ping",
                "--interface=eth0",
                "--bind-interfaces",
                &format!("--dhcp-range={range},1h"),
                &format!("--dhcp-leasefile={}", leases.display()),
                "--log-dhcp",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn dnsmasq (package dnsmasq-base)");
        let started = wait_for(10, || {
            let text = std::fs::read_to_string(lab.s.file("dnsmasq.log")).unwrap_or_default();
            text.contains("DHCP, IP range").then_some(())
        });
        assert!(
            started.is_some(),
            "dnsmasq did not start: {}",
            std::fs::read_to_string(lab.s.file("dnsmasq.log")).unwrap_or_default()
        );
        OtherServer {
            _host: host,
            child,
            leases,
        }
    }

    /// The address dnsmasq leased to `mac`, from its lease file.
    fn lease_of(&self, mac: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.leases).unwrap_or_default();
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&mac)).then(|| f.get(2).map(|ip| ip.to_string()))?
        })
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// proxyDHCP on an isolated network that has no `[network.dhcp]`: iPXE (BIOS) and EDK2 (UEFI)
/// scripts fetch from the proxy, which iPXE names `${proxydhcp/next-server}` (its
/// `${next-server}` is the other server's).
fn proxy_lab(tag: &str, net: &str) -> (Lab, OtherServer) {
    let lab = Lab::start(
        tag,
        Config::new("/var/lib/hostagent").network(
            Network::new("lab", "isolated", BRIDGE)
                .address(&format!("{net}.1/24"))
                .pxe(
                    Pxe::new(BOOT_ROOT)
                        .proxy()
                        .bios(&format!("{PAYLOAD}/undionly.kpxe"))
                        .uefi(&format!("{PAYLOAD}/ipxe.efi"))
                        .script(&format!("{PAYLOAD}/boot.ipxe")),
                ),
        ),
        |root| {
            let base = "tftp://${proxydhcp/next-server}";
            let body = format!(
                "#!ipxe\nkernel {base}/{PAYLOAD}/vmlinuz initrd=initrd.img console=ttyS0 \
                 panic=-1 quiet hostagent_path=proxy\ninitrd {base}/{PAYLOAD}/initrd.img\nboot\n"
            );
            std::fs::write(root.join(PAYLOAD).join("boot.ipxe"), body).expect("script");
        },
    );
    let other = OtherServer::start(
        &lab,
        &format!("{net}.2/24"),
        &format!("{net}.150,{net}.199"),
    );
    (lab, other)
}

/// What every proxy boot must show: the address is dnsmasq's, hostagent never leased anything
/// (no lease, no journal), and its replies were proxy offers.
fn assert_proxy_only(lab: &Lab, other: &OtherServer, mac: &str, net: &str) {
    let ip = other
        .lease_of(mac)
        .unwrap_or_else(|| panic!("dnsmasq has no lease for {mac}"));
    assert!(ip.starts_with(&format!("{net}.1")), "{ip}");
    let offers = lab.lines_with(mac, "proxy offer");
    assert!(!offers.is_empty(), "no proxy offer:\n{}", lab.log());
    assert!(
        offers.iter().all(|l| l.contains("ip=0.0.0.0")),
        "{offers:#?}"
    );
    let leases = Cli::new(&lab.ns, &lab.s, &lab.cfg).leases();
    assert!(leases.is_empty(), "hostagent leased {leases:?}");
    let journal = lab.s.file("var/lib/hostagent/leases/lab.journal");
    assert!(!journal.exists(), "{} exists", journal.display());
}

#[test]
fn boot_field_proxy_dhcp_bios_ipxe_rom_boots_while_dnsmasq_hands_out_the_address() {
    const MAC: &str = "52:54:00:f1:00:04";
    let (lab, other) = proxy_lab("bfpb", "10.84.0");
    let booted = lab.boot("tap-bfpb", MAC, Firmware::BiosIpxeRom);
    assert_eq!(booted.path(), "proxy", "{}", booted.line);
    assert_proxy_only(&lab, &other, MAC, "10.84.0");
    lab.assert_answered(MAC, "proxy offer", "ipxe", &format!("{PAYLOAD}/boot.ipxe"));
}

/// EDK2 takes a proxy offer without option 43 as BINL and asks for the file on UDP 4011.
#[test]
fn boot_field_proxy_dhcp_uefi_asks_on_4011_while_dnsmasq_hands_out_the_address() {
    const MAC: &str = "52:54:00:f1:00:05";
    let (lab, other) = proxy_lab("bfpu", "10.85.0");
    let booted = lab.boot("tap-bfpu", MAC, Firmware::UefiNoRom);
    assert_eq!(booted.path(), "proxy", "{}", booted.line);
    assert_proxy_only(&lab, &other, MAC, "10.85.0");
    let acks = lab.assert_answered(MAC, "proxy ack", "uefi-x64", &format!("{PAYLOAD}/ipxe.efi"));
    let ip = other.lease_of(MAC).unwrap_or_default();
    assert!(
        acks.iter().any(|l| l.contains(&format!("ip={ip} "))),
        "the 4011 request did not come from dnsmasq's address {ip}: {acks:#?}"
    );
}

/// arm64 UEFI: EDK2 for arm64 asks with option 93 = 11, is classed `uefi-arm64` and handed the
/// `arm64` file, and downloads it by TFTP.
#[test]
fn boot_field_arm64_uefi_is_classified_and_downloads_its_file() {
    const MAC: &str = "52:54:00:f1:00:06";
    let arm64 = format!("{PAYLOAD}/vmlinuz");
    let lab = Lab::start("bfa6", stock("10.86.0", Some(&arm64)), |_| {});
    let guest = Guest::launch(
        &lab.ns,
        GuestSpec {
            bridge: BRIDGE.into(),
            tap: "tap-bfa6".into(),
            mac: MAC.into(),
            firmware: Firmware::Arm64Uefi,
            dir: lab.s.file("guest"),
            agent_log: Some(lab.daemon.log.clone()),
        },
    );
    let path = format!("path={arm64} ");
    let downloaded = wait_for(HARD_TIMEOUT.as_secs(), || {
        let log = lab.log();
        let done = log
            .lines()
            .any(|l| l.contains("tftp: transfer completed") && l.contains(&path));
        (done && guest.serial().contains("NBP file downloaded successfully")).then_some(())
    });
    assert!(
        downloaded.is_some(),
        "arm64 firmware did not download {arm64}:\n{}",
        guest.diagnostics()
    );
    lab.assert_answered(MAC, "dhcp ack", "uefi-arm64", &arm64);
}
