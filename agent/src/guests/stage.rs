//! How far a network install got, from what the agent can see: the DHCP server's lease (the
//! daemon's view) and the guest's serial console log (a file the agent told libvirt to write).
//!
//! Not used, because pxe does not expose it: per-client TFTP/HTTP transfer records. The TFTP and
//! HTTP servers only keep counters (and log each transfer), so "boot file sent" and
//! "kernel/initrd sent" are read from the guest's console, where iPXE prints each fetch.

use serde::Serialize;

/// Ordered: a later stage implies the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Defined, never seen on the network.
    Defined,
    /// The DHCP server leased it its address (or iPXE printed that it got one).
    DhcpOffered,
    /// The boot file or script reached it.
    BootFileSent,
    /// A kernel and an initrd reached it.
    KernelInitrdSent,
    /// Something after the kernel wrote to the console: the installer (or OS) runs.
    OsBooted,
    /// It booted from its disk (firmware said so, or it is configured to).
    DiskBoot,
}

impl Stage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Defined => "defined",
            Stage::DhcpOffered => "dhcp offered",
            Stage::BootFileSent => "boot file sent",
            Stage::KernelInitrdSent => "kernel/initrd sent",
            Stage::OsBooted => "os booted",
            Stage::DiskBoot => "disk boot",
        }
    }
}

/// Boot loaders and scripts, as opposed to the kernel and initrd they fetch.
fn is_loader(file: &str) -> bool {
    let f = file.to_ascii_lowercase();
    [".ipxe", ".kpxe", ".pxe", ".efi", ".cfg"]
        .iter()
        .any(|e| f.ends_with(e))
}

/// A line iPXE prints after a successful fetch: `tftp://10.0.0.1/vmlinuz... 7%  55%  ok` (the
/// progress is printed for larger files). Returns the file name.
fn fetched(line: &str) -> Option<&str> {
    let l = line.trim();
    if !l.ends_with(" ok") && !l.ends_with("...ok") {
        return None;
    }
    let (url, _) = l.split_once("...")?;
    if !url.contains("://") {
        return None;
    }
    Some(url.rsplit('/').next().unwrap_or(url))
}

/// iPXE's own chatter after a fetch, not the booted system's output.
fn ipxe_chatter(line: &str) -> bool {
    let l = line.trim();
    l.is_empty() || l.ends_with("[script]") || l.contains(" : ") && l.contains("bytes")
}

/// A Linux printk line, `[   16.274826] ...`: a kernel runs, whatever the firmware printed.
fn kernel_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim();
    stamp.contains('.')
        && !stamp.is_empty()
        && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The stage the console shows. Only the last boot counts: the log is appended across boots.
pub fn from_console(text: &str) -> Stage {
    // Firmware banners appear once per boot: the last one starts the last boot.
    let start = ["SeaBIOS (version", "BdsDxe:"]
        .iter()
        .filter_map(|m| text.rfind(m))
        .max()
        .unwrap_or(0);
    let text = &text[start..];
    let mut stage = Stage::Defined;
    let mut payloads = 0;
    let mut after_last_fetch = false;
    for line in text.lines() {
        if line.contains("Booting from Hard Disk") || line.contains("Booting from Hard drive") {
            return Stage::DiskBoot;
        }
        if line.contains("Configuring (net") && line.trim_end().ends_with("ok") {
            stage = stage.max(Stage::DhcpOffered);
            continue;
        }
        if let Some(file) = fetched(line) {
            stage = stage.max(Stage::BootFileSent);
            if !is_loader(file) {
                payloads += 1;
                if payloads >= 2 {
                    stage = stage.max(Stage::KernelInitrdSent);
                }
            }
            after_last_fetch = true;
            continue;
        }
        if (after_last_fetch && stage == Stage::KernelInitrdSent && !ipxe_chatter(line))
            || kernel_line(line)
        {
            stage = stage.max(Stage::OsBooted);
        }
    }
    stage
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPXE: &str =
        "SeaBIOS (version 1.16)\nBooting from ROM...\niPXE initialising devices...ok\n\
        Configuring (net0 52:54:00:aa:bb:cc)...... ok\nnet0: 10.77.0.2/255.255.255.0 gw 10.77.0.1\n\
        tftp://10.77.0.1/boot.ipxe... ok\nboot.ipxe : 150 bytes [script]\n";

    #[test]
    fn stages_follow_the_console() {
        assert_eq!(from_console(""), Stage::Defined);
        assert_eq!(
            from_console("SeaBIOS (version 1.16)\nConfiguring (net0 52:54:00:aa:bb:cc)...... ok\n"),
            Stage::DhcpOffered
        );
        assert_eq!(from_console(IPXE), Stage::BootFileSent);
        let kernel = format!("{IPXE}tftp://10.77.0.1/vmlinuz...  7%     55%     99%     ok\nhttp://10.77.0.1:8069/initrd.img... 90%     ok\n");
        assert_eq!(
            from_console(&format!("{IPXE}tftp://10.77.0.1/vmlinuz...  7%     55%")),
            Stage::BootFileSent,
            "unfinished fetch"
        );
        assert_eq!(from_console(&kernel), Stage::KernelInitrdSent);
        assert_eq!(
            from_console(&format!("{kernel}[    0.000000] Linux version 6.1\n")),
            Stage::OsBooted
        );
        assert_eq!(
            from_console("SeaBIOS (version 1.16)\nBooting from Hard Disk...\n"),
            Stage::DiskBoot
        );
        // Firmware that does not print to the serial port: the kernel's own lines still count.
        assert_eq!(
            from_console("HOSTAGENT-BOOT-OK x\n[   16.274826] reboot: Power down\n"),
            Stage::OsBooted
        );
        assert_eq!(
            from_console("[x] not a kernel\n[] nor this\n"),
            Stage::Defined
        );
    }

    /// A fleet guest's console as the end-to-end test saw it (SeaBIOS + iPXE on the serial port).
    const REAL: &str = "SeaBIOS (version 1.16.2-debian-1.16.2-1)\nBooting from ROM...\n\
        iPXE (PCI 00:02.0) starting execution...ok\niPXE initialising devices...ok\n\
        Press Ctrl-B for the iPXE command line...      net0: 52:54:00:c1:4b:a9 using virtio-net on 0000:00:02.0 (open)\n\
        Configuring (net0 52:54:00:c1:4b:a9).................. ok\nnet0: 10.77.0.2/255.255.255.0 gw 10.77.0.1\n\
        Next server: 10.77.0.1\nFilename: hostagent-guests/node-1.ipxe\n\
        tftp://10.77.0.1/hostagent-guests/node-1.ipxe... ok\nnode-1.ipxe : 179 bytes [script]\n\
        tftp://10.77.0.1/vmlinuz...  7%     14%     99%     ok\ntftp://10.77.0.1/initrd.img... 90%     ok\n";

    #[test]
    fn a_real_console_transcript() {
        assert_eq!(from_console(REAL), Stage::KernelInitrdSent);
        assert_eq!(
            from_console(&format!("{REAL}HOSTAGENT-BOOT-OK hostagent_path=tftp\n")),
            Stage::OsBooted
        );
    }

    #[test]
    fn only_the_last_boot_counts() {
        let two = format!("{IPXE}tftp://10.77.0.1/vmlinuz... ok\ntftp://10.77.0.1/initrd.img... ok\ninstaller\nSeaBIOS (version 1.16)\nBooting from Hard Disk...\n");
        assert_eq!(from_console(&two), Stage::DiskBoot);
        let again = format!("SeaBIOS (version 1.16)\nBooting from Hard Disk...\n{IPXE}");
        assert_eq!(from_console(&again), Stage::BootFileSent);
    }
}
