//! Config errors: every problem carries the file position of the offending text and, where we
//! know it, a hint saying what to write instead.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found while checking a config, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Byte range of the offending text in the config source.
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub(crate) fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Problem {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A problem placed in its file: 1-based line and column (columns count characters).
/// Serializable for `check --json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub(crate) fn locate(file: &Path, text: &str, problem: Problem) -> Self {
        let (line, column) = line_column(text, problem.span.start);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message: problem.message,
            hint: problem.hint,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read at all.
    #[error("{}: error: cannot read config file: {source}\n  hint: pass the config file with -c FILE (default /etc/hostagent/hostagent.toml)", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem found is listed.
    #[error("{}", DisplayAll(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// Every problem found (empty for an unreadable file).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Unreadable { .. } => &[],
        }
    }
}

struct DisplayAll<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayAll<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset; an offset inside a multi-byte character or past the
/// end is clamped rather than trusted.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based_and_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        let eq = text.rfind('=').expect("test text has '='");
        assert_eq!(line_column(text, eq), (2, 4));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }
}
