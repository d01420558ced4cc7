//! The README's first command on a fresh machine: install (here under a DESTDIR) and run the
//! shipped default config. Inside a namespace, a guest with no other DHCP server in sight gets a
//! lease on libvirt's familiar 192.168.122.0/24 and is handed the BIOS boot file.

use std::process::Command;

use hostagent_tests::daemon::{plug_guest, Daemon};
use hostagent_tests::{hostagent_bin, run_ok, stdout, wait_for, Netns, Scratch};

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
    std::fs::create_dir_all(s.file("proc/sys/vm")).expect("mkdir");
    for key in ["max_map_count", "overcommit_memory"] {
        let real = std::fs::read(format!("/proc/sys/vm/{key}")).expect("read real sysctl");
        std::fs::write(s.file(&format!("proc/sys/vm/{key}")), real).expect("seed sysctl");
    }
    let cfg = s.file("etc/hostagent/hostagent.toml");
    let cfg = cfg.to_str().expect("utf-8");

    let host = Netns::new("dflt");
    let plan = host.hostagent(&["-c", cfg, "--root", s.root_str(), "plan"]);
    assert_eq!(plan.status.code(), Some(2), "a fresh host needs changes");
    assert!(
        stdout(&plan).contains("create bridge virbr0"),
        "{}",
        stdout(&plan)
    );

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
    let guest = plug_guest(&host, "virbr0", "vdflt");
    // busybox udhcpc as a PXE-less client: it gets an address from the default range.
    let script = s.file("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/$subnet\" dev \"$interface\"\n\
         echo \"BOUND ip=$ip router=$router boot_file=$boot_file siaddr=$siaddr\"\n",
    )
    .expect("script");
    run_ok(Command::new("chmod").arg("+x").arg(&script));
    let out = guest.run(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "2",
        "-s",
        script.to_str().expect("utf-8"),
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
    ]);
    let text = stdout(&out);
    let bound = text
        .lines()
        .find(|l| l.starts_with("BOUND"))
        .unwrap_or_else(|| panic!("no lease: {text}\nlog:\n{}", d.log_text()));
    assert!(bound.contains("ip=192.168.122."), "{bound}");
    assert!(bound.contains("router=192.168.122.1"), "{bound}");
    assert!(
        bound.contains("boot_file=undionly.kpxe"),
        "a BIOS PXE client gets the BIOS boot file: {bound}"
    );
    assert!(bound.contains("siaddr=192.168.122.1"), "{bound}");
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
    assert!(wait_for(5, || d.log_text().contains("undionly.kpxe").then_some(())).is_some());
}
