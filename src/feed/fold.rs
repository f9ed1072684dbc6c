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

use std::borrow::Cow;

/// Longest content line in octets, CRLF excluded (RFC 5545 3.1).
pub const MAX_LINE_OCTETS: usize = 75;

/// Makes free text safe to hand to the icalendar crate as a TEXT value: CRLF and CR become LF
/// (which the crate escapes as `\n`), tabs become spaces, other control characters are dropped.
pub fn clean_text(text: &str) -> Cow<'_, str> {
    // Fast path (the feed cleans every event's texts on each render): nothing to change, and
    // nothing copied.
    if !has_control_other_than_lf(text) {
        return Cow::Borrowed(text);
    }
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\n' => Some('\n'),
                '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// True when `text` holds a control character (Unicode category Cc: U+0000-U+001F, U+007F,
/// U+0080-U+009F) other than LF. Looks at bytes, not chars: in UTF-8 the first two ranges are
/// single bytes and the third is 0xC2 followed by 0x80-0x9F.
fn has_control_other_than_lf(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| is_control_at(bytes, i))
}

/// True when a control character (Unicode category Cc) other than LF starts at byte `i` of
/// `bytes`, which is UTF-8: what [`clean_text`] changes or drops.
pub fn is_control_at(bytes: &[u8], i: usize) -> bool {
    let b = bytes[i];
    (b < 0x20 && b != b'\n')
        || b == 0x7f
        || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
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
    // Each physical line is cut as late as it may be, found by stepping back from its longest
    // end rather than by walking every char: this runs over every line of every feed render.
    let mut start = 0; // byte offset of the first char not yet copied to `out`
    let mut budget = MAX_LINE_OCTETS; // the first line has no leading space
    while line.len() - start > budget {
        let mut cut = start + budget;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        // Only the text not yet copied is searched for the run of backslashes: a run that
        // began before `start` has an even length up to `start` (no cut parts an escape), so
        // its parity is the same, and a line of backslashes is not walked back over each time.
        if splits_escape(&line[start..], cut - start) {
            cut -= 1;
        }
        out.push_str(&line[start..cut]);
        out.push_str("\r\n ");
        start = cut;
        budget = MAX_LINE_OCTETS - 1;
    }
    out.push_str(&line[start..]);
}

/// True when cutting `line` at byte `cut` would part a backslash from the char it escapes: the
/// run of backslashes ending just before `cut` is odd (escapes pair up from the start of a run,
/// and a run starts where the char before it is no backslash).
fn splits_escape(line: &str, cut: usize) -> bool {
    let run = line.as_bytes()[..cut]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    run % 2 == 1
}

/// Removes every fold (CRLF followed by one space or tab), giving logical content lines.
pub fn unfold(text: &str) -> String {
    text.replace("\r\n ", "").replace("\r\n\t", "")
}

/// Unfolds a whole iCalendar text and folds every line again with [`fold_line`], ending each
/// line with CRLF.
pub fn refold(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 64 * 3);
    refold_into(text, &mut String::new(), &mut out);
    out
}

/// [`refold`] appending to `out`, with `line` as scratch space for a logical line that was
/// folded (its previous content is dropped). Rendering a feed calls this once per event with
/// the same two buffers: unfolding the whole text first cost two copies and three allocations
/// an event. A line that was not folded is folded from `text` as it is, without a copy.
pub fn refold_into(text: &str, line: &mut String, out: &mut String) {
    line.clear();
    // A fold is CRLF and one space or tab: the part after it continues the line before it.
    let continues = |p: &str| p.starts_with([' ', '\t']);
    let mut physical = text.split("\r\n").enumerate().peekable();
    while let Some((i, part)) = physical.next() {
        if i > 0 && continues(part) {
            line.push_str(&part[1..]);
        } else {
            flush(line, out);
            if physical.peek().is_some_and(|(_, next)| continues(next)) {
                line.push_str(part);
            } else if !part.is_empty() {
                fold_line(part, out);
                out.push_str("\r\n");
            }
        }
    }
    flush(line, out);
}

/// Folds the logical line gathered in `line` (if any) onto `out` and empties `line`.
fn flush(line: &mut String, out: &mut String) {
    if !line.is_empty() {
        fold_line(line, out);
        out.push_str("\r\n");
        line.clear();
    }
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

    /// What [`refold`] is defined as: unfold the whole text, then fold each non-empty line.
    fn refold_by_definition(text: &str) -> String {
        let mut out = String::new();
        for line in unfold(text).split("\r\n").filter(|l| !l.is_empty()) {
            fold_line(line, &mut out);
            out.push_str("\r\n");
        }
        out
    }

    #[test]
    fn refolding_in_place_equals_unfolding_then_folding() {
        let long = format!("DESCRIPTION:{}", "word\\, é😀 ".repeat(30));
        let crate_folded: String = icalendar::Property::new("X", long.as_str())
            .try_into()
            .expect("serialise");
        let cases = [
            String::new(),
            "A:b\r\n".into(),
            "A:b".into(),
            "\r\n\r\nA:b\r\n\r\nC:d\r\n".into(),
            "A:b\r\n c\r\n\td\r\nE:f\r\n".into(),
            " leading continuation\r\nA:b\r\n".into(),
            "A:b\r\n\r\n c\r\n".into(),
            "A:b\r\n \r\n \r\nC:d".into(),
            format!("{long}\r\n{long}\r\n"),
            format!("BEGIN:VEVENT\r\n{crate_folded}{crate_folded}END:VEVENT\r\n"),
        ];
        let mut line = String::from("left over from a previous call");
        for case in cases {
            let mut out = String::from("kept:");
            refold_into(&case, &mut line, &mut out);
            assert_eq!(
                out,
                format!("kept:{}", refold_by_definition(&case)),
                "{case:?}"
            );
            assert_eq!(refold(&case), refold_by_definition(&case), "{case:?}");
        }
    }

    /// The previous `fold_line`, which walked the line char by char, backslash pairs as one
    /// unit: the definition the faster one must match.
    fn fold_line_by_units(line: &str, out: &mut String) {
        let mut used = 0;
        let mut start = 0;
        let mut chars = line.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
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

    #[test]
    fn folding_matches_walking_unit_by_unit() {
        let pieces = [
            "a", "\\", "\\n", "\\\\", "é", "€", "😀", "\\é", "\\😀", " ", ",",
        ];
        let mut rng = 0x2545_f491_u32;
        for case in 0..3000 {
            let mut line = String::from("DESCRIPTION:");
            for _ in 0..(case % 120) {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                line.push_str(pieces[rng as usize % pieces.len()]);
            }
            let (mut fast, mut slow) = (String::new(), String::new());
            fold_line(&line, &mut fast);
            fold_line_by_units(&line, &mut slow);
            assert_eq!(fast, slow, "{line:?}");
        }
    }

    #[test]
    fn control_characters_are_found_by_their_bytes() {
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            let text = format!("ab{c}é");
            assert_eq!(
                has_control_other_than_lf(&text),
                c.is_control() && c != '\n',
                "{:?}",
                c
            );
        }
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
