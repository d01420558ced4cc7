//! Real QEMU guests that network-boot from a tap port of a bridge inside a test's namespace, and
//! the payload they boot (built from Debian packages by `tests/payload/build.sh`, cached).
//!
//! QEMU runs with `-accel tcg`: under KVM, iPXE's real-mode code dies with an emulation failure on
//! this kind of machine. The guest's kernel runs an initramfs whose /init prints [`BOOT_MARKER`]
//! and the kernel command line on the serial port, then powers off.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testkit::Netns;

use crate::console::{read_log, strip_escapes, tail};

/// Printed by the payload's /init once the guest's kernel runs.
pub const BOOT_MARKER: &str = "HOSTAGENT-BOOT-OK";

/// Upper bound for one boot, whatever the caller asks (a TCG boot takes 25–40 s on 2 cores).
pub const HARD_TIMEOUT: Duration = Duration::from_secs(150);

/// Files every scenario copies into the agent's boot root.
pub const PAYLOAD_FILES: [&str; 4] = ["vmlinuz", "initrd.img", "undionly.kpxe", "ipxe.efi"];

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Secure Boot build of OVMF (needs SMM) and a variable store with Microsoft's keys enrolled, so
/// Microsoft-signed shim starts and refuses anything unsigned.
const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// How many lines of each log a failure message shows.
const TAIL_LINES: usize = 60;

/// Build (or find cached) the payload; returns its directory. Runs `build.sh` at most once per
/// process; the script itself locks against parallel test processes.
pub fn payload_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var("HOSTAGENT_PAYLOAD_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| here.join(".cache/payload"));
        let script = here.join("payload/build.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// How the guest's iPXE script fetches kernel and initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Tftp,
    /// Over HTTP from the agent's HTTP boot server on this port.
    Http(u16),
}

impl Fetch {
    /// The word the guest echoes back (`hostagent_path=...` on its kernel command line).
    pub fn name(&self) -> &'static str {
        match self {
            Fetch::Tftp => "tftp",
            Fetch::Http(_) => "http",
        }
    }
}

/// The iPXE script that boots the payload. `initrd=initrd.img` is needed by iPXE EFI of Debian
/// 12's vintage (without it the kernel finds no initramfs); BIOS iPXE ignores it.
pub fn ipxe_script(fetch: Fetch) -> String {
    let base = match fetch {
        Fetch::Tftp => "tftp://${next-server}".to_string(),
        Fetch::Http(port) => format!("http://${{next-server}}:{port}"),
    };
    format!(
        "#!ipxe\nkernel {base}/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 quiet hostagent_path={}\n\
         initrd {base}/initrd.img\nboot\n",
        fetch.name()
    )
}

/// Copy the payload into `boot_root` (created if needed) and write the iPXE script as `script`.
pub fn install_payload(boot_root: &Path, script: &str, fetch: Fetch) {
    let src = payload_dir();
    std::fs::create_dir_all(boot_root)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", boot_root.display()));
    for f in PAYLOAD_FILES {
        std::fs::copy(src.join(f), boot_root.join(f))
            .unwrap_or_else(|e| panic!("copy {f} into {}: {e}", boot_root.display()));
    }
    std::fs::write(boot_root.join(script), ipxe_script(fetch)).expect("write iPXE script");
}

/// Which firmware the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS; the virtio NIC's option ROM is iPXE (package ipxe-qemu), so the first DHCP client
    /// is already iPXE.
    BiosIpxeRom,
    /// OVMF with the NIC's option ROM disabled (`romfile=`): EDK2's own PXE client asks first
    /// (option 93 = 7) and must be handed an iPXE binary.
    UefiNoRom,
    /// As `UefiNoRom` with Secure Boot on: q35 with SMM, `OVMF_CODE_4M.secboot.fd` and a copy of
    /// `OVMF_VARS_4M.ms.fd` (Microsoft keys enrolled).
    UefiSecureBoot,
    /// As `UefiNoRom` with OVMF's PXE turned off (fw_cfg `IPv4PXESupport`/`IPv6PXESupport` = n),
    /// so the first boot option is EDK2's own UEFI HTTP boot (option 60 `HTTPClient`, 93 = 16).
    UefiHttpBoot,
    /// An arm64 `virt` machine (qemu-system-aarch64, Cortex-A57) with EDK2's arm64 build
    /// (`qemu-efi-aarch64`): its PXE client asks with option 93 = 11. (No arm64 payload here:
    /// tests watch its DHCP and TFTP, not a marker.)
    Arm64Uefi,
}

/// EDK2 for arm64 `virt` (package qemu-efi-aarch64), loaded with -bios.
const AAVMF: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

impl Firmware {
    /// OVMF in pflash (x86-64 UEFI).
    fn is_ovmf(self) -> bool {
        matches!(
            self,
            Firmware::UefiNoRom | Firmware::UefiSecureBoot | Firmware::UefiHttpBoot
        )
    }
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Bridge the tap is enslaved to (made by the agent).
    pub bridge: String,
    /// Tap name (at most 15 bytes), created in the namespace.
    pub tap: String,
    /// NIC MAC, lower case with colons (as the agent logs it).
    pub mac: String,
    pub firmware: Firmware,
    /// Where the serial log (and OVMF's variable store) go.
    pub dir: PathBuf,
    /// The agent's log, shown with the serial log when a boot fails.
    pub agent_log: Option<PathBuf>,
}

/// The serial line the payload printed, and how long the boot took.
#[derive(Debug, Clone)]
pub struct Booted {
    pub line: String,
    pub elapsed: Duration,
}

impl Booted {
    /// The `hostagent_path=` word the guest's kernel got (`tftp`, `http`, or `unknown`).
    pub fn path(&self) -> &str {
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("hostagent_path="))
            .unwrap_or("unknown")
    }
}

/// A QEMU process inside a namespace; killed on drop.
pub struct Guest {
    child: Child,
    spec: GuestSpec,
    serial_log: PathBuf,
    started: Instant,
}

impl Guest {
    /// Create the tap in `ns`, enslave it to the bridge and start QEMU there (so its `-netdev tap`
    /// opens the tap inside the namespace).
    pub fn launch(ns: &Netns, spec: GuestSpec) -> Guest {
        assert!(
            spec.tap.len() <= 15,
            "tap name {:?} longer than IFNAMSIZ-1",
            spec.tap
        );
        std::fs::create_dir_all(&spec.dir).expect("guest dir");
        ns.ok(&["ip", "tuntap", "add", &spec.tap, "mode", "tap"]);
        ns.ok(&["ip", "link", "set", &spec.tap, "master", &spec.bridge, "up"]);

        let serial_log = spec.dir.join(format!("serial-{}.log", spec.tap));
        let _ = std::fs::remove_file(&serial_log);
        let serial = format!("file:{}", serial_log.display());
        let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", spec.tap);
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={}", spec.mac);
        let qemu = match spec.firmware {
            Firmware::Arm64Uefi => "qemu-system-aarch64",
            _ => "qemu-system-x86_64",
        };
        let mut argv: Vec<String> = [qemu, "-accel", "tcg", "-m", "512", "-nographic"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if spec.firmware == Firmware::Arm64Uefi {
            nic.push_str(",romfile=");
            argv.extend(["-M", "virt", "-cpu", "cortex-a57", "-bios", AAVMF].map(String::from));
        }
        // -no-reboot: a kernel panic (panic=-1 reboots at once) ends QEMU instead of looping.
        // -S: the CPU waits (see below) behind a monitor socket that says `cont`.
        let monitor = spec.dir.join(format!("monitor-{}.sock", spec.tap));
        let _ = std::fs::remove_file(&monitor);
        argv.extend(["-no-reboot", "-S", "-serial", &serial].map(String::from));
        argv.push("-monitor".into());
        argv.push(format!("unix:{},server=on,wait=off", monitor.display()));
        if spec.firmware.is_ovmf() {
            let (code, vars_template) = match spec.firmware {
                Firmware::UefiSecureBoot => (OVMF_CODE_SECBOOT, OVMF_VARS_MS),
                _ => (OVMF_CODE, OVMF_VARS),
            };
            let vars = spec.dir.join(format!("OVMF_VARS-{}.fd", spec.tap));
            std::fs::copy(vars_template, &vars)
                .unwrap_or_else(|e| panic!("copy {vars_template}: {e} (package ovmf)"));
            nic.push_str(",romfile=");
            if spec.firmware == Firmware::UefiSecureBoot {
                argv.extend(
                    [
                        "-machine",
                        "q35,smm=on",
                        "-global",
                        "driver=cfi.pflash01,property=secure,value=on",
                    ]
                    .map(String::from),
                );
            }
            if spec.firmware == Firmware::UefiHttpBoot {
                for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                    argv.push("-fw_cfg".into());
                    argv.push(format!("name=opt/org.tianocore/{knob},string=n"));
                }
            }
            argv.push("-drive".into());
            argv.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ));
            argv.push("-drive".into());
            argv.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
        }
        argv.extend(["-netdev".into(), netdev, "-device".into(), nic]);
        if spec.firmware != Firmware::Arm64Uefi {
            argv.extend(["-boot".into(), "n".into()]);
        }

        let qemu_out = std::fs::File::create(spec.dir.join(format!("qemu-{}.out", spec.tap)))
            .expect("qemu log");
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        // `ip netns exec` execs QEMU in place, so the child's pid is QEMU's.
        let child = ns
            .cmd(&argv_ref)
            .stdin(Stdio::null())
            .stdout(qemu_out.try_clone().expect("dup qemu log"))
            .stderr(qemu_out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn {qemu}: {e} (packages qemu-system-x86, qemu-system-arm)")
            });
        let mut guest = Guest {
            child,
            spec,
            serial_log,
            started: Instant::now(),
        };
        // The tap has a carrier once QEMU holds it; with STP on, the port then listens and
        // learns for ~4 s. The firmware's first DISCOVERs must not vanish meanwhile: a client
        // that starts late in its own DHCP timeline takes the first offer it sees (iPXE stops
        // waiting for a proxyDHCP offer), which would make a run depend on luck. So the CPU
        // starts only once the port forwards.
        ns.wait_forwarding(&guest.spec.tap);
        guest.resume(&monitor);
        guest.started = Instant::now();
        guest
    }

    /// `cont` on QEMU's monitor socket (started with -S); returns once the monitor has taken
    /// the command (its next `(qemu)` prompt).
    fn resume(&mut self, monitor: &Path) {
        use std::io::{Read, Write};
        let mut sock =
            testkit::wait_for(10, || std::os::unix::net::UnixStream::connect(monitor).ok())
                .unwrap_or_else(|| panic!("QEMU monitor {} never appeared", monitor.display()));
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("monitor timeout");
        let mut seen = Vec::new();
        let mut prompt = |sock: &mut std::os::unix::net::UnixStream, count: usize| {
            let mut buf = [0u8; 512];
            while seen.windows(7).filter(|w| w == b"(qemu) ").count() < count {
                let n = sock.read(&mut buf).expect("read the QEMU monitor");
                assert!(
                    n > 0,
                    "QEMU monitor closed: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
        };
        prompt(&mut sock, 1);
        sock.write_all(b"cont\n")
            .expect("send cont to the QEMU monitor");
        prompt(&mut sock, 2);
    }

    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Everything the guest printed on its serial port so far (escape sequences removed).
    pub fn serial(&self) -> String {
        read_log(&self.serial_log)
    }

    /// Poll the serial log until the payload's marker appears. Err(reason) when QEMU exits
    /// without it or `timeout` (capped at [`HARD_TIMEOUT`]) passes; the guest is killed then.
    pub fn wait_for_marker(&mut self, timeout: Duration) -> Result<Booted, String> {
        let deadline = self.started + timeout.min(HARD_TIMEOUT);
        let mut seen = 0u64;
        let mut pending = String::new();
        loop {
            // Read only what is new: the log grows by megabytes of iPXE progress output.
            if let Some(line) = scan_new(&self.serial_log, &mut seen, &mut pending) {
                return Ok(Booted {
                    line,
                    elapsed: self.started.elapsed(),
                });
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // QEMU may exit right after the marker reached the file: look once more.
                if let Some(line) = scan_new(&self.serial_log, &mut seen, &mut pending) {
                    return Ok(Booted {
                        line,
                        elapsed: self.started.elapsed(),
                    });
                }
                let out = std::fs::read_to_string(
                    self.spec.dir.join(format!("qemu-{}.out", self.spec.tap)),
                )
                .unwrap_or_default();
                return Err(format!(
                    "QEMU exited ({status}) without {BOOT_MARKER}; QEMU said:\n{out}"
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no {BOOT_MARKER} after {:?}",
                    self.started.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Like [`Guest::wait_for_marker`], but panics with the tails of the serial and agent logs.
    pub fn expect_boot(&mut self, timeout: Duration) -> Booted {
        match self.wait_for_marker(timeout) {
            Ok(b) => b,
            Err(reason) => panic!(
                "guest {} did not boot: {reason}\n{}",
                self.spec.mac,
                self.diagnostics()
            ),
        }
    }

    /// The last lines of the serial log and of the agent's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "--- last {TAIL_LINES} lines of the serial log {} ---\n{}",
            self.serial_log.display(),
            tail(&self.serial(), TAIL_LINES)
        );
        if let Some(agent) = &self.spec.agent_log {
            s.push_str(&format!(
                "\n--- last {TAIL_LINES} lines of the agent log {} ---\n{}",
                agent.display(),
                tail(&read_log(agent), TAIL_LINES)
            ));
        }
        s
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Read what was appended to `path` since `seen`; return the marker's line once complete.
fn scan_new(path: &Path, seen: &mut u64, pending: &mut String) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(*seen)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    *seen += buf.len() as u64;
    pending.push_str(&String::from_utf8_lossy(&buf));
    // Keep an unfinished last line for the next round; drop the lines already searched.
    let cut = pending.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let done: String = pending.drain(..cut).collect();
    strip_escapes(&done)
        .lines()
        .find(|l| l.contains(BOOT_MARKER))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booted_path_reads_the_echoed_word() {
        let b = Booted {
            line: "HOSTAGENT-BOOT-OK hostagent_path=http cmdline=[x hostagent_path=http]".into(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(b.path(), "http");
    }

    #[test]
    fn scripts_fetch_over_the_asked_protocol() {
        let http = ipxe_script(Fetch::Http(8069));
        assert!(http.contains("kernel http://${next-server}:8069/vmlinuz initrd=initrd.img"));
        assert!(http.contains("initrd http://${next-server}:8069/initrd.img"));
        assert!(ipxe_script(Fetch::Tftp).contains("kernel tftp://${next-server}/vmlinuz"));
    }
}
