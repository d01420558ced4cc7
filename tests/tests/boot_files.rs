//! TFTP and HTTP boot through `hostagent run`, from a guest namespace on the agent's bridge, with
//! clients nobody here wrote: atftp (windowsize), curl (TFTP and HTTP, ranges). Downloads match
//! by sha256; every traversal spelling is refused and logged.

use std::process::Command;

use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::{run_ok, sha256, Netns};

#[test]
fn atftp_and_curl_download_through_the_daemon_and_traversal_is_refused() {
    let host = Netns::new("files");
    let s = Scratch::new();
    let boot = s.file("srv/boot");
    std::fs::create_dir_all(boot.join("sub")).expect("mkdir");
    // 3 MiB of incompressible data: several TFTP windows and HTTP chunks.
    run_ok(
        Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "count=3", "status=none"])
            .arg(format!("of={}", boot.join("sub/kernel").display())),
    );
    std::fs::write(s.file("secret"), "outside the boot root").expect("secret");
    std::os::unix::fs::symlink(s.file("secret"), boot.join("escape")).expect("symlink");
    let want = sha256(&boot.join("sub/kernel"));
    let cfg = s.config(
        Config::new("/state").network(
            Network::nat("lab", "br-files", "10.93.0.1/24")
                .dhcp(Dhcp::new("10.93.0.100-10.93.0.200"))
                .pxe(Pxe::new("/srv/boot").bios("sub/kernel").http_port(8069)),
        ),
    );
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-files", "vfiles");
    guest.ok(&["ip", "addr", "add", "10.93.0.50/24", "dev", "eth0"]);

    let out = |name: &str| s.file(name).to_str().expect("utf-8").to_string();
    // atftp with blksize 1468 and windowsize 16 (RFC 7440).
    guest.ok(&[
        "atftp",
        "--option",
        "blksize 1468",
        "--option",
        "windowsize 16",
        "--get",
        "-r",
        "sub/kernel",
        "-l",
        &out("atftp.bin"),
        "10.93.0.1",
        "69",
    ]);
    assert_eq!(sha256(&s.file("atftp.bin")), want, "atftp download differs");
    // curl over TFTP (lock-step) and HTTP, plus a range.
    guest.ok(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--tftp-blksize",
        "1468",
        "-o",
        &out("tftp.bin"),
        "tftp://10.93.0.1/sub/kernel",
    ]);
    assert_eq!(
        sha256(&s.file("tftp.bin")),
        want,
        "curl tftp download differs"
    );
    guest.ok(&[
        "curl",
        "-sSf",
        "--max-time",
        "60",
        "-o",
        &out("http.bin"),
        "http://10.93.0.1:8069/sub/kernel",
    ]);
    assert_eq!(
        sha256(&s.file("http.bin")),
        want,
        "curl http download differs"
    );
    let part = guest.ok(&[
        "sh",
        "-c",
        "curl -sSf -r 1000-1999 http://10.93.0.1:8069/sub/kernel | wc -c",
    ]);
    assert_eq!(part.trim(), "1000");

    // Traversal in several spellings, over both protocols: refused, and nothing of the secret leaks.
    for path in [
        "../secret",
        "sub/../../secret",
        "/../secret",
        "escape",
        "..%2fsecret",
        "%2e%2e/secret",
    ] {
        let http = guest.run(&[
            "curl",
            "-s",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "%{http_code}",
            &format!("http://10.93.0.1:8069/{path}"),
        ]);
        let body = String::from_utf8_lossy(&http.stdout);
        assert!(
            !body.contains("outside the boot root"),
            "HTTP {path} leaked the secret"
        );
        assert!(
            body.ends_with("403") || body.ends_with("404") || body.ends_with("400"),
            "HTTP {path}: {body}"
        );
    }
    for path in ["../secret", "sub/../../secret", "/../secret", "escape"] {
        let got = s.file("tftp-escape");
        let _ = std::fs::remove_file(&got);
        let tftp = guest.run(&[
            "curl",
            "-s",
            "--max-time",
            "10",
            "-o",
            got.to_str().expect("utf-8"),
            &format!("tftp://10.93.0.1/{path}"),
        ]);
        assert!(!tftp.status.success(), "TFTP {path} was served");
        let leaked = std::fs::read_to_string(&got).unwrap_or_default();
        assert!(
            !leaked.contains("outside the boot root"),
            "TFTP {path} leaked the secret"
        );
    }
    let log = d.log_text();
    assert!(
        log.contains("tftp") && log.contains("escape"),
        "refusals are logged with the path:\n{log}"
    );
}
