//! The README's first command on a fresh machine: install (here under a DESTDIR) and run the
//! shipped default config. Inside a namespace, a guest with no other DHCP server in sight gets a
//! lease on libvirt's familiar 192.168.122.0/24 and is handed the BIOS boot file.

use std::process::Command;

use hostagent_tests::cli::Cli;
use hostagent_tests::daemon::Daemon;
use hostagent_tests::{hostagent_bin, Scratch};
use testkit::dhcp_client::Udhcpc;
use testkit::{run_ok, Netns};

#[test]
fn shipped_default_config_installs_and_serves_a_lab_out_of_the_box() {
    let s = Scratch::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        Command::new(repo.join("scripts/install.sh"))
            .env("DESTDIR", s.root())
            .env("HOSTAGENT_BIN", hostagent_bin()),
    );
    for f in [
        "usr/local/bin/hostagent",
        "etc/hostagent/hostagent.toml",
        "var/lib/hostagent/boot/undionly.kpxe",
        "var/lib/hostagent/boot/ipxe.efi",
        "var/lib/hostagent/boot/boot.ipxe",
    ] {
        assert!(s.file(f).exists(), "install.sh did not install {f}");
    }
    // The default config sets host-wide vm.* sysctls; under --root they live in ROOT/proc/sys,
    // seeded from the machine's real values so the test never writes the real ones.
    for key in ["max_map_count", "overcommit_memory"] {
        let real = std::fs::read(format!("/proc/sys/vm/{key}")).expect("read real sysctl");
        s.write(&format!("proc/sys/vm/{key}"), real);
    }
    let cfg = s.file("etc/hostagent/hostagent.toml");
    let cfg = cfg.to_str().expect("utf-8");

    let host = Netns::new("dflt");
    let (code, plan) = Cli::new(&host, &s, cfg).plan();
    assert_eq!(code, Some(2), "a fresh host needs changes: {plan}");
    assert!(plan.contains("create bridge virbr0"), "{plan}");

    let d = Daemon::start(&host, &s, cfg, &[]);
    assert_eq!(
        std::fs::read_to_string(s.file("proc/sys/vm/max_map_count"))
            .expect("sysctl")
            .trim(),
        "262144"
    );
    assert!(
        std::fs::read_to_string(s.file("etc/sysctl.d/90-hostagent.conf"))
            .expect("drop-in")
            .contains("vm.max_map_count = 262144")
    );
    let guest = host.plug("virbr0", "vdflt");
    // busybox udhcpc as a BIOS PXE client: it gets an address from the default range, and the
    // boot file.
    let bound = Udhcpc::configuring(&guest, s.root(), "dflt")
        .args(&["-V", "PXEClient:Arch:00000:UNDI:002001"])
        .once()
        .unwrap_or_else(|e| panic!("no lease: {e}\nlog:\n{}", d.log_text()));
    assert!(bound["ip"].starts_with("192.168.122."), "{bound:?}");
    assert_eq!(bound["router"], "192.168.122.1", "{bound:?}");
    assert_eq!(
        bound["boot_file"], "undionly.kpxe",
        "a BIOS PXE client gets the BIOS boot file: {bound:?}"
    );
    assert_eq!(bound["siaddr"], "192.168.122.1", "{bound:?}");
    // The boot file it was told about is really served over TFTP from the installed boot root.
    let got = s.file("got.kpxe");
    let tftp = guest.run(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-o",
        got.to_str().expect("utf-8"),
        "tftp://192.168.122.1/undionly.kpxe",
    ]);
    assert!(
        tftp.status.success(),
        "{}",
        String::from_utf8_lossy(&tftp.stderr)
    );
    assert_eq!(
        std::fs::read(&got).expect("downloaded"),
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").expect("ipxe")
    );
    d.wait_log("undionly.kpxe", 5);
}
