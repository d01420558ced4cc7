//! Config parsing: any text through `hostagent::config::parse` must give a Model or diagnostics,
//! never a panic, and every diagnostic must point at a real place in the text (line/column
//! inside it) and render without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hostagent::config::parse(text, Path::new("/etc/hostagent/fuzz.toml")) {
        Ok(model) => {
            // A valid model converts (this is what `plan` and `run` do next); the root does not
            // exist, so nothing of this machine is read.
            let root = Path::new("/nonexistent-fuzz-root");
            let _ = model.desired();
            let _ = model.dhcp_configs(root);
            let _ = model.file_services(root);
        }
        Err(e) => {
            let diags = e.diagnostics();
            assert!(!diags.is_empty(), "an invalid config without a diagnostic");
            let lines = text.matches('\n').count() + 1;
            for d in diags {
                assert!(
                    d.line >= 1 && d.line <= lines,
                    "line {} of {lines}: {d}",
                    d.line
                );
                assert!(d.column >= 1, "column 0: {d}");
                assert!(
                    !d.message.is_empty(),
                    "empty message at {}:{}",
                    d.line,
                    d.column
                );
            }
            assert!(!e.to_string().is_empty());
        }
    }
});
