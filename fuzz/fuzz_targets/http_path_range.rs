//! HTTP boot's pure request handling: the input is `<path>\n<Range header>` (no newline = path
//! only). The path is percent-decoded once (`pxe::http::percent_decode`) and resolved through
//! `SafeRoot::open` exactly as the server does; the Range header goes through
//! `pxe::http::parse_range` against several file lengths (0, 1, the served file's, u64::MAX).
//! Invariants: a served file is inside the root and not the planted secret; a 206 range lies
//! inside the file (start ≤ end < len) and never for an empty file.
#![no_main]

use std::sync::OnceLock;

use hostagent_fuzz::{assert_served_file_is_inside, SafeTree};
use libfuzzer_sys::fuzz_target;
use pxe::http::{parse_range, percent_decode, RangeReq};

fn tree() -> &'static SafeTree {
    static TREE: OnceLock<SafeTree> = OnceLock::new();
    TREE.get_or_init(|| SafeTree::new("http"))
}

fn check_range(header: Option<&str>, len: u64) {
    match parse_range(header, len) {
        RangeReq::Full | RangeReq::Unsatisfiable => {}
        RangeReq::Partial { start, end } => {
            assert!(len > 0, "206 for an empty file ({header:?})");
            assert!(
                start <= end,
                "start {start} > end {end} ({header:?}, len {len})"
            );
            assert!(end < len, "end {end} past the file ({header:?}, len {len})");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, range) = match text.split_once('\n') {
        Some((p, r)) => (p, Some(r)),
        None => (text, None),
    };
    let mut served_len = None;
    if let Some(decoded) = percent_decode(path) {
        assert!(decoded.len() <= path.len(), "decoding grew the path");
        if let Ok(name) = String::from_utf8(decoded) {
            let t = tree();
            if let Ok((file, meta)) = t.safe.open(&name) {
                assert!(
                    !name.split('/').any(|c| c == ".."),
                    "{name:?} with '..' was served"
                );
                assert_served_file_is_inside(&t.root, &name, &file);
                served_len = Some(meta.len());
            }
        }
    }
    for len in [0, 1, 4096, u64::MAX].into_iter().chain(served_len) {
        check_range(range, len);
    }
});
