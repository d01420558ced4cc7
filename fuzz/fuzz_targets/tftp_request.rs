//! TFTP request parsing and path resolution: the input is a datagram on port 69. It goes through
//! pxe's RRQ/WRQ parser (its own source, see `hostagent_fuzz::tftp_packet`) and, like the server
//! does, the file name through `SafeRoot::open` over a fixed tree with symlinks that escape it.
//! The raw input is also tried as a name directly, so traversal spellings are reached without
//! the framing. Invariants: a served file is a regular file inside the root and never the secret
//! planted next to it; a name with `..`, NUL or backslash is never served; a FIFO never blocks
//! (a hang is reported by libFuzzer's -timeout).
#![no_main]

use std::sync::OnceLock;

use hostagent_fuzz::{assert_served_file_is_inside, tftp_packet, SafeTree};
use libfuzzer_sys::fuzz_target;

fn tree() -> &'static SafeTree {
    static TREE: OnceLock<SafeTree> = OnceLock::new();
    TREE.get_or_init(|| SafeTree::new("tftp"))
}

fn resolve(name: &str) {
    let t = tree();
    if let Ok((file, meta)) = t.safe.open(name) {
        assert!(meta.is_file());
        assert!(
            !name.split('/').any(|c| c == ".."),
            "{name:?} with '..' was served"
        );
        assert!(
            !name.contains('\0') && !name.contains('\\'),
            "{name:?} was served"
        );
        assert_served_file_is_inside(&t.root, name, &file);
    }
}

fuzz_target!(|data: &[u8]| {
    let reply = tftp_packet::parse_reply(data);
    if let tftp_packet::Reply::Error { message, .. } = &reply {
        assert!(!message.contains('\0'));
    }
    match tftp_packet::parse_request(data) {
        Ok(req) => {
            assert!(
                req.filename.iter().all(|&b| b != 0),
                "NUL inside a parsed file name"
            );
            assert_eq!(req.mode, req.mode.to_ascii_lowercase());
            let mut names: Vec<&str> = req.options.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "an option kept twice");
            // What the server does with the name (tftp/mod.rs: lossy UTF-8, then SafeRoot).
            resolve(&String::from_utf8_lossy(&req.filename));
        }
        Err(_) => {
            if let Ok(name) = std::str::from_utf8(data) {
                resolve(name);
            }
        }
    }
});
