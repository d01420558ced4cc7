//! Logs as text a test can search: guests' serial consoles and the agent's own log.
//!
//! Console logs carry terminal control sequences (SeaBIOS and iPXE draw with them) and carriage
//! returns; the agent removes them with `hostagent::guests::strip_escapes` before it reads a
//! guest's boot stage from its console, and the tests use that same function rather than a copy.

use std::path::Path;

pub use hostagent::guests::strip_escapes;

/// A log file as text without terminal escape sequences; a note instead when it cannot be read.
pub fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => strip_escapes(&String::from_utf8_lossy(&b)),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_from_colours_and_screen_control() {
        assert_eq!(
            strip_escapes("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\r\n"),
            "2026  INFO x\n"
        );
        assert_eq!(strip_escapes("c\u{1b}[?7l\u{1b}[2JHOSTAGENT"), "cHOSTAGENT");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
