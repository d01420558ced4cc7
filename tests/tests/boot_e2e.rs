//! End-to-end network boot: real QEMU guests (`-accel tcg`) on a tap port of the bridge that
//! `hostagent run` created inside a network namespace, booting a stock Debian kernel from the
//! agent's own DHCP + TFTP/HTTP servers until the kernel's /init prints its marker.
//!
//! Three guest boots in all (~25–40 s each): filter with `boot_e2e_`. The payload is built once
//! from Debian packages by tests/payload/build.sh and cached under tests/.cache/payload.
//!
//! What the tests read from the agent's log (stderr, colours stripped), case-insensitively:
//! - a boot-file transfer: one line containing `transfer complete`, the protocol (`tftp` or
//!   `http`) and the file name;
//! - a DHCP ACK: one line containing the word `ack` (or `dhcpack`), the client MAC (lower case,
//!   colons) and the boot file or URL handed out.

use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::qemu::{
    install_payload, Booted, Fetch, Firmware, Guest, GuestSpec, HARD_TIMEOUT,
};
use hostagent_tests::Scratch;
use testkit::{wait_for, Netns};

const BRIDGE: &str = "br-lab";
const TAP: &str = "tap-boot";
/// The boot root as the config names it; on disk it is <scratch root>/srv/boot (--root prefixes it).
const BOOT_ROOT: &str = "/srv/boot";
const SCRIPT: &str = "boot.ipxe";
const HTTP_PORT: u16 = 8069;

fn config(http_port: Option<u16>) -> Config {
    let mut pxe = Pxe::ipxe(BOOT_ROOT).script(SCRIPT);
    if let Some(p) = http_port {
        pxe = pxe.http_port(p);
    }
    Config::new("/var/lib/hostagent").network(
        Network::nat("lab", BRIDGE, "10.77.0.1/24")
            .dhcp(Dhcp::new("10.77.0.100-10.77.0.200").lease_time("1h"))
            .pxe(pxe),
    )
}

/// Does `line` name `word` as a whole path component (not as part of a longer name)?
fn mentions(line: &str, word: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// Agent log lines for completed transfers of `file` over `proto` ("tftp" or "http").
fn transfers<'a>(log: &'a str, proto: &str, file: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            low.contains("transfer complete") && low.contains(proto) && mentions(l, file)
        })
        .collect()
}

/// Agent log lines for DHCP ACKs to `mac`, in log order.
fn acks<'a>(log: &'a str, mac: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            let is_ack = low
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == "ack" || w == "dhcpack");
            is_ack && low.contains(mac)
        })
        .collect()
}

/// The outcome of one guest boot against a fresh namespace and agent: what the guest printed, the
/// agent's log, and the tails of both logs for assertion messages (namespace, agent and guest are
/// gone by the time the assertions run).
struct Run {
    booted: Booted,
    log: String,
    mac: &'static str,
    diagnostics: String,
}

fn boot(tag: &str, mac: &'static str, firmware: Firmware, fetch: Fetch) -> Run {
    let ns = Netns::new(tag);
    let scratch = Scratch::new();
    let http_port = match fetch {
        Fetch::Http(p) => Some(p),
        Fetch::Tftp => None,
    };
    install_payload(
        &scratch.file(BOOT_ROOT.trim_start_matches('/')),
        SCRIPT,
        fetch,
    );
    let cfg = scratch.config(config(http_port));
    let mut agent = Daemon::start(&ns, &scratch, &cfg, &[]);
    // DHCP (udp 67), TFTP (udp 69) and, if asked, HTTP listen.
    let tcp: Vec<u16> = http_port.into_iter().collect();
    agent.wait_listening(&ns, BRIDGE, &[67, 69], &tcp);

    let mut guest = Guest::launch(
        &ns,
        GuestSpec {
            bridge: BRIDGE.into(),
            tap: TAP.into(),
            mac: mac.into(),
            firmware,
            dir: scratch.file("guest"),
            agent_log: Some(agent.log.clone()),
        },
    );
    let booted = guest.expect_boot(HARD_TIMEOUT);
    eprintln!(
        "{tag}: {firmware:?} guest booted over {} in {:.1?}: {}",
        fetch.name(),
        booted.elapsed,
        booted.line
    );
    // The agent logs a transfer when it ends; the guest may power off a moment before that line.
    let log = wait_for(5, || {
        let log = agent.log_text();
        (!transfers(&log, fetch.name(), "initrd.img").is_empty()).then_some(log)
    })
    .unwrap_or_else(|| agent.log_text());
    // What the assertions read, for the record (shown by --nocapture and on failure).
    for line in log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("transfer") || acks(l, mac).len() == 1)
    {
        eprintln!("{tag}: agent: {line}");
    }
    let diagnostics = guest.diagnostics();
    Run {
        booted,
        log,
        mac,
        diagnostics,
    }
}

impl Run {
    fn fail(&self, what: &str) -> String {
        format!(
            "{what}\nguest printed: {}\n{}",
            self.booted.line, self.diagnostics
        )
    }

    fn assert_path(&self, want: &str) {
        assert_eq!(
            self.booted.path(),
            want,
            "{}",
            self.fail("guest booted the wrong script")
        );
    }

    fn assert_transferred(&self, proto: &str, file: &str) {
        assert!(
            !transfers(&self.log, proto, file).is_empty(),
            "{}",
            self.fail(&format!(
                "agent log shows no completed {proto} transfer of {file}"
            ))
        );
    }
}

/// SeaBIOS; the NIC's iPXE ROM asks the agent, gets the script and fetches kernel + initramfs by TFTP.
#[test]
fn boot_e2e_bios_ipxe_rom_tftp() {
    let run = boot(
        "bt",
        "52:54:00:e2:e0:01",
        Firmware::BiosIpxeRom,
        Fetch::Tftp,
    );
    run.assert_path("tftp");
    run.assert_transferred("tftp", SCRIPT);
    run.assert_transferred("tftp", "vmlinuz");
    run.assert_transferred("tftp", "initrd.img");
    let acks = acks(&run.log, run.mac);
    assert!(
        acks.iter().any(|l| mentions(l, SCRIPT)),
        "{}",
        run.fail("no DHCP ACK handing the iPXE ROM the script")
    );
    // The ROM already is iPXE: handing it undionly.kpxe would start a chainload loop.
    assert!(
        !acks.iter().any(|l| mentions(l, "undionly.kpxe")),
        "{}",
        run.fail("the NIC's iPXE ROM was handed undionly.kpxe")
    );
}

/// Same firmware, the script fetches kernel + initramfs from the agent's HTTP boot server.
#[test]
fn boot_e2e_bios_ipxe_rom_http() {
    let run = boot(
        "bh",
        "52:54:00:e2:e0:02",
        Firmware::BiosIpxeRom,
        Fetch::Http(HTTP_PORT),
    );
    run.assert_path("http");
    run.assert_transferred("http", "vmlinuz");
    run.assert_transferred("http", "initrd.img");
    assert!(
        transfers(&run.log, "tftp", "vmlinuz").is_empty(),
        "{}",
        run.fail("the kernel went over TFTP although the script asks for HTTP")
    );
    let acks = acks(&run.log, run.mac);
    assert!(
        acks.iter().any(|l| mentions(l, SCRIPT)),
        "{}",
        run.fail("no DHCP ACK handing iPXE the script")
    );
}

/// OVMF with the NIC ROM disabled: EDK2's own PXE client gets ipxe.efi, which asks again as iPXE
/// and gets the script (not ipxe.efi again: no loop), then boots the kernel over TFTP.
#[test]
fn boot_e2e_uefi_pxe_chainloads_ipxe_efi() {
    let run = boot("bu", "52:54:00:e2:e0:03", Firmware::UefiNoRom, Fetch::Tftp);
    run.assert_path("tftp");
    let acks = acks(&run.log, run.mac);
    let efi: Vec<usize> = (0..acks.len())
        .filter(|&i| mentions(acks[i], "ipxe.efi"))
        .collect();
    let script: Vec<usize> = (0..acks.len())
        .filter(|&i| mentions(acks[i], SCRIPT))
        .collect();
    assert_eq!(
        efi.len(),
        1,
        "{}",
        run.fail(&format!(
            "ipxe.efi must be handed out exactly once, ACKs: {acks:#?}"
        ))
    );
    assert!(
        acks[efi[0]].to_ascii_lowercase().contains("uefi"),
        "{}",
        run.fail(&format!(
            "ipxe.efi went to a client not logged as UEFI: {}",
            acks[efi[0]]
        ))
    );
    assert!(
        script.iter().any(|&i| i > efi[0]),
        "{}",
        run.fail(&format!(
            "no ACK handing the script to iPXE after ipxe.efi, ACKs: {acks:#?}"
        ))
    );
    assert_eq!(
        transfers(&run.log, "tftp", "ipxe.efi").len(),
        1,
        "{}",
        run.fail("ipxe.efi must be transferred exactly once")
    );
    run.assert_transferred("tftp", SCRIPT);
    run.assert_transferred("tftp", "vmlinuz");
    run.assert_transferred("tftp", "initrd.img");
}

#[test]
fn log_matchers_take_whole_names_and_ack_words() {
    let log = "INFO dhcp ack network=lab mac=52:54:00:e2:e0:03 kind=uefi-x64 boot=ipxe.efi\n\
               INFO dhcp offer mac=52:54:00:e2:e0:03 boot=boot.ipxe fallback\n\
               INFO tftp: transfer completed client=10.77.0.150:1024 path=/vmlinuz bytes=1\n\
               INFO http: transfer complete path=/xvmlinuz\n";
    assert_eq!(acks(log, "52:54:00:e2:e0:03").len(), 1);
    assert_eq!(transfers(log, "tftp", "vmlinuz").len(), 1);
    assert!(transfers(log, "http", "vmlinuz").is_empty());
    assert!(mentions(
        "boot=http://10.77.0.1:8069/boot.ipxe",
        "boot.ipxe"
    ));
    assert!(!mentions("boot=snp-ipxe.efi", "ipxe.efi"));
}
