//! Content lines: cleaning TEXT input and folding lines at 75 octets the way clients need.
//!
//! Why not the icalendar crate's folding: its `fold_line` (0.17.17, `properties.rs`) cuts at
//! byte 75 on a char boundary but may cut between a backslash and the character it escapes
//! (`\` | `n`), which makes Google Calendar drop the event (collective/icalendar#1501), and it
//! indexes chars with a byte offset when it looks for whitespace. It cannot be switched off, so
//! [`refold`] undoes its folds (it only ever inserts CRLF + one space, and no value we hand it
//! holds a CR or LF) and folds again with [`fold_line`].
//!
//! Why [`clean_text`]: the crate's TEXT escaping handles `\`, `;`, `,` and LF but passes CR and
//! other control characters through; RFC 5545 3.3.11 allows none of them.

/// Longest content line in octets, CRLF excluded (RFC 5545 3.1).
pub const MAX_LINE_OCTETS: usize = 75;

/// Makes free text safe to hand to the icalendar crate as a TEXT value: CRLF and CR become LF
/// (which the crate escapes as `\n`), tabs become spaces, other control characters are dropped.
pub fn clean_text(text: &str) -> String {
    // Fast path (the feed cleans every event's texts on each render): nothing to change.
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text.to_owned();
    }
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// Makes text safe in a quoted parameter value (RFC 5545 3.2: no DQUOTE, no control characters).
pub fn clean_param(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

/// Folds one unfolded content line: every physical line at most [`MAX_LINE_OCTETS`] octets,
/// continuation lines start with one space, never inside a UTF-8 character and never between a
/// backslash and the character it escapes. The result has no trailing CRLF.
pub fn fold_line(line: &str, out: &mut String) {
    // Most content lines are short: copy them whole. Longer ones are copied a physical line
    // at a time (a slice, not char by char): this runs over every line of every feed render.
    if line.len() <= MAX_LINE_OCTETS {
        out.push_str(line);
        return;
    }
    let mut used = 0; // octets on the current physical line
    let mut start = 0; // byte offset of the first char not yet copied to `out`
    let mut chars = line.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        // A unit is one char, or a backslash with the char it escapes: never split.
        let mut octets = c.len_utf8();
        if c == '\\'
            && let Some(&(_, next)) = chars.peek()
        {
            octets += next.len_utf8();
            chars.next();
        }
        if used + octets > MAX_LINE_OCTETS {
            out.push_str(&line[start..at]);
            out.push_str("\r\n ");
            start = at;
            used = 1;
        }
        used += octets;
    }
    out.push_str(&line[start..]);
}

/// Removes every fold (CRLF followed by one space or tab), giving logical content lines.
pub fn unfold(text: &str) -> String {
    text.replace("\r\n ", "").replace("\r\n\t", "")
}

/// Unfolds a whole iCalendar text and folds every line again with [`fold_line`], ending each
/// line with CRLF.
pub fn refold(text: &str) -> String {
    let unfolded = unfold(text);
    let mut out = String::with_capacity(unfolded.len() + unfolded.len() / 64 * 3);
    for line in unfolded.split("\r\n").filter(|l| !l.is_empty()) {
        fold_line(line, &mut out);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_untouched() {
        assert_eq!(refold("A:b\r\nC:d\r\n"), "A:b\r\nC:d\r\n");
    }

    #[test]
    fn clean_text_drops_control_characters_and_normalises_breaks() {
        assert_eq!(clean_text("a\r\nb\rc\u{7}d\te"), "a\nb\ncd e");
        assert_eq!(clean_param("Team \"A\"\u{1}"), "Team 'A'");
    }

    #[test]
    fn the_crate_folds_between_a_backslash_and_its_escaped_char_and_we_do_not() {
        // An escaped comma at every position around octet 75: the crate cuts after the
        // backslash at least once; ours never does.
        let mut crate_splits = 0;
        for n in 50..80 {
            let value = format!("{},x", "a".repeat(n));
            let prop = icalendar::Property::new("DESCRIPTION", value.as_str());
            let crate_text: String = prop.try_into().expect("serialise");
            crate_splits += usize::from(crate_text.contains("\\\r\n "));
            let ours = refold(&crate_text);
            assert!(!ours.contains("\\\r\n "), "{ours:?}");
            assert_eq!(unfold(&ours), unfold(&crate_text));
        }
        assert!(
            crate_splits > 0,
            "the crate no longer splits escapes; this workaround may be dropped"
        );
    }

    #[test]
    fn every_fold_position_keeps_utf8_and_escapes_whole() {
        let payload = "é€😀\\n\\;\\,\\\\ab".repeat(12);
        for prefix in 0..=80 {
            let line = format!("X:{}{payload}", "p".repeat(prefix));
            let mut out = String::new();
            fold_line(&line, &mut out);
            for (i, physical) in out.split("\r\n").enumerate() {
                assert!(physical.len() <= MAX_LINE_OCTETS, "{prefix}: {physical:?}");
                assert!(i == 0 || physical.starts_with(' '));
                let trailing = physical.len() - physical.trim_end_matches('\\').len();
                assert!(trailing % 2 == 0, "{prefix}: fold after a lone backslash");
            }
            assert_eq!(unfold(&out), line);
        }
    }
}
