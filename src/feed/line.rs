//! Content lines written straight into a feed: byte for byte what the icalendar crate writes
//! for a property and [`super::fold`] folds again, without the crate's per-line work.
//!
//! Why not the crate for a feed's VEVENTs: the icalendar crate (0.17.17) builds each event as a
//! map of owned keys, values and parameters, writes each property into a new `String`
//! (`Property::to_line`), copies a TEXT value four times to escape it (`escape_text`: one
//! `String::replace` per escaped character) and folds the line by walking its chars from the
//! start for every fold (`fold_line`: `chars().nth(75)`, quadratic in a long DESCRIPTION); and
//! [`super::fold::refold`] then undoes that folding. Profiled at 5,000 meetings on one CPU,
//! that was 60% of rendering an event and about a fifth of a first start's time to READY
//! (BENCHMARKS.md, thirteenth session). A feed renders every meeting; a mail one.
//!
//! So the crate still writes the calendar's own properties, the mailed invite's VEVENT
//! (`super::render_meeting_invite`) and the VTIMEZONE's lines, and this writes the feed's
//! VEVENTs. The rules it follows are the crate's, and tests compare the bytes of both ways:
//! single properties with escaped characters at every fold position, control and multibyte
//! characters, quotes and separators in parameters (below), and whole events of every shape
//! whose texts, names, zone name, page URL and organizer are made of such characters
//! (`feed::tests::hand_written_events_are_the_crates_bytes`). Both ways share what an event
//! shows (`EventRenderer::fields` and the DESCRIPTION), which other tests pin.

use super::fold;

/// How a property's value is written: what the crate's `ValueType::by_name` makes of the
/// property's name decides which (the feed's TEXT properties are DESCRIPTION, LOCATION, STATUS,
/// SUMMARY, TRANSP and UID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// RFC 5545 3.3.11 TEXT: cleaned of control characters ([`fold::clean_text`]), then `\`,
    /// `,`, `;` and LF escaped (`\\`, `\,`, `\;`, `\n`).
    Text,
    /// Any other value type (DATE-TIME, INTEGER, URI, CAL-ADDRESS): written as it is.
    Verbatim,
}

/// Writes content lines into a feed, reusing one buffer for the line being built.
#[derive(Debug, Default)]
pub struct LineWriter {
    /// The logical line being written, before it is folded onto the feed.
    line: String,
}

impl LineWriter {
    /// Appends the property `key` with at most one parameter, and the value made of `value`'s
    /// parts one after the other, to `out`: one logical line, folded by [`fold::fold_line`] and
    /// ended with CRLF. `key` and the parameter's name must be uppercase names (as the crate
    /// writes them, unchanged).
    pub fn property(
        &mut self,
        out: &mut String,
        key: &str,
        parameter: Option<(&str, &str)>,
        value: &[&str],
        kind: Value,
    ) {
        let line = &mut self.line;
        line.clear();
        line.push_str(key);
        if let Some((name, parameter_value)) = parameter {
            line.push(';');
            line.push_str(name);
            line.push('=');
            push_parameter_value(line, parameter_value);
        }
        line.push(':');
        for part in value {
            match kind {
                Value::Text => push_text(line, part),
                Value::Verbatim => line.push_str(part),
            }
        }
        fold::fold_line(line, out);
        out.push_str("\r\n");
    }
}

/// Appends TEXT `text` cleaned by [`fold::clean_text`] and then escaped as the crate's
/// `escape_text` does (`\` first, then `,`, `;` and LF, each its own pass there; no pass there
/// meets what an earlier one wrote, so one pass here gives the same), in one pass over text
/// without control characters, which is nearly all text. Every character escaped is ASCII, so
/// the text is copied in runs between them.
fn push_text(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b',' => "\\,",
            b';' => "\\;",
            b'\n' => "\\n",
            _ if fold::is_control_at(bytes, i) => {
                // Cleaning what is left gives what cleaning all of it gives here: nothing
                // before `i` is a control character, so no CR LF pair straddles it.
                out.push_str(&text[copied..i]);
                push_text(out, &fold::clean_text(&text[i..]));
                return;
            }
            _ => continue,
        };
        out.push_str(&text[copied..i]);
        out.push_str(escaped);
        copied = i + 1;
    }
    out.push_str(&text[copied..]);
}

/// Appends a parameter value as the crate's `Property::quote_special_chars` does: as it is when
/// it already starts and ends with a double quote, in double quotes when it holds a colon,
/// semicolon or comma, else as it is.
fn push_parameter_value(out: &mut String, value: &str) {
    let quoted = value.starts_with('"') && value.ends_with('"');
    if !quoted && value.contains([':', ';', ',']) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the crate writes for one property, folded again as a feed is.
    fn by_the_crate(key: &str, parameter: Option<(&str, &str)>, value: &str) -> String {
        let mut property = icalendar::Property::new(key, value);
        if let Some((name, v)) = parameter {
            property.add_parameter(name, v);
        }
        let text: String = property.try_into().expect("serialise");
        fold::refold(&text)
    }

    /// Single properties, TEXT and not, with and without a parameter, are the crate's bytes.
    #[test]
    fn a_property_is_written_as_the_crate_writes_it() {
        let values = [
            "",
            "plain",
            "a\\b,c;d\ne",
            "\\\\,,;;\n\n",
            "\"quoted\"",
            "é😀 mixed, text; with\\escapes",
        ];
        let parameters = [
            None,
            Some(("CN", "Team")),
            Some(("CN", "Doe, John")),
            Some(("CN", "a:b")),
            Some(("CN", "a;b")),
            Some(("CN", "\"already, quoted\"")),
            Some(("CN", "\"")),
            Some(("TZID", "Europe/London")),
        ];
        let mut writer = LineWriter::default();
        for (key, kind) in [
            ("SUMMARY", Value::Text),
            ("DESCRIPTION", Value::Text),
            ("URL", Value::Verbatim),
            ("DTSTART", Value::Verbatim),
        ] {
            for value in values {
                for n in [0, 40, 60, 61, 62, 63, 64, 70, 74, 75, 76, 150] {
                    let value = format!("{}{value}", "x".repeat(n));
                    for parameter in parameters {
                        let mut ours = String::new();
                        writer.property(&mut ours, key, parameter, &[&value], kind);
                        assert_eq!(
                            ours,
                            by_the_crate(key, parameter, &value),
                            "{key} {parameter:?} {value:?}"
                        );
                    }
                }
            }
        }
    }

    /// TEXT is cleaned of control characters before it is escaped, wherever they are: the
    /// crate's bytes for the text [`fold::clean_text`] gives.
    #[test]
    fn text_is_cleaned_then_escaped() {
        let mut writer = LineWriter::default();
        for control in [
            "\r\n", "\r", "\t", "\u{7}", "\u{7f}", "\u{85}", "\u{9f}", "\r\r\n",
        ] {
            for before in ["", "a,b", "x".repeat(70).as_str(), "é;"] {
                for after in ["", "c\\d", "\ne", "\u{85}f\r"] {
                    let value = format!("{before}{control}{after}");
                    let mut ours = String::new();
                    writer.property(&mut ours, "SUMMARY", None, &[&value], Value::Text);
                    let cleaned = fold::clean_text(&value);
                    assert_ne!(cleaned, value);
                    assert_eq!(ours, by_the_crate("SUMMARY", None, &cleaned), "{value:?}");
                }
            }
        }
    }

    /// A value given in parts is written as if it were one string.
    #[test]
    fn a_value_in_parts_is_the_value_joined() {
        let mut writer = LineWriter::default();
        let (mut parts, mut joined) = (String::new(), String::new());
        writer.property(&mut parts, "UID", None, &["a,b", ";c@d"], Value::Text);
        writer.property(&mut joined, "UID", None, &["a,b;c@d"], Value::Text);
        assert_eq!(parts, joined);
        assert_eq!(parts, "UID:a\\,b\\;c@d\r\n");
    }
}
