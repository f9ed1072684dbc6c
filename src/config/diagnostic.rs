//! Problems found in a config file, each with the file, line and column it points at.

use std::{fmt, ops::Range, path::PathBuf};

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works, but probably not as meant.
    Warning,
}

/// One problem, positioned in the file (line and column count from 1; columns in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {kind}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Turns byte ranges of one file into positioned diagnostics.
pub struct Locator<'a> {
    file: &'a std::path::Path,
    text: &'a str,
}

impl<'a> Locator<'a> {
    /// A locator over the text of `file`.
    pub fn new(file: &'a std::path::Path, text: &'a str) -> Self {
        Self { file, text }
    }

    /// The 1-based line and character column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let mut start = offset;
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        // A byte order mark opening the file is no character of its first line.
        let in_line = &before[line_start..];
        let in_line = if line_start == 0 {
            in_line.strip_prefix('\u{FEFF}').unwrap_or(in_line)
        } else {
            in_line
        };
        let column = in_line.chars().count() + 1;
        (line, column)
    }

    /// A diagnostic at the start of `span`.
    pub fn at(
        &self,
        severity: Severity,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nname = \"Dún\" x\n";
        let loc = Locator::new(std::path::Path::new("f.toml"), text);
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(6), (2, 1));
        // Byte offset of `x`: "name = \"Dún\" " is 14 bytes (ú is two), 13 characters.
        let x = text.find(" x").expect("x") + 1;
        assert_eq!(loc.position(x), (2, 14));
        assert_eq!(loc.position(10_000), (3, 1));
    }

    /// A file opening with a UTF-8 byte order mark (U+FEFF, three bytes) counts columns on its
    /// first line from after the mark; other lines are unaffected.
    #[test]
    fn a_byte_order_mark_is_no_column() {
        let text = "\u{FEFF}a = x\nb = y\n";
        let loc = Locator::new(std::path::Path::new("f.toml"), text);
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(3), (1, 1));
        let x = text.find('x').expect("x");
        assert_eq!(loc.position(x), (1, 5));
        let y = text.find('y').expect("y");
        assert_eq!(loc.position(y), (2, 5));
    }
}
