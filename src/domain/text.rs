//! The character rules every text input obeys, wherever it comes from (a JSON body, a
//! query string, a CLI flag, an import row): one rule per kind of text, so HTTP, the CLI
//! and import accept and refuse exactly the same values on both backends. The rules are
//! also written as JSON-Schema patterns (from the same tables), so `/openapi.json` says
//! exactly what is accepted.
//!
//! - Single-line text (titles, locations, filters) holds no control character at all.
//! - Free text (descriptions) may hold tabs and line breaks, but no other control
//!   character: NUL would make PostgreSQL fail, the rest corrupt terminals and exports.
//! - Text made only of spaces and invisible characters (zero-width space, BOM, …) is
//!   blank; such characters at either end are trimmed before a value is stored.
//!
//! Rules apply to the value as sent; lengths count its characters as sent.

/// The one form text filters compare, on both backends: Unicode's full default case
/// folding of the canonical decomposition, composed again (NFC). `Straße` and
/// `STRASSE`, `ΟΔΟΣ` and `οδος`, `é` written as one character or as `e` and an accent
/// all have one key. Locale-free: `İ` folds to `i̇` and `ı` stays itself, as in every
/// language but Turkish. The stored keys (`location_key`, `title_key`,
/// `description_key`) hold it, and a `location` or `search` filter is turned into it,
/// so the database compares keys alone (and a location can use an index).
pub fn match_key(text: &str) -> String {
    use caseless::Caseless as _;
    use unicode_normalization::UnicodeNormalization as _;
    text.nfd().default_case_fold().nfc().collect()
}

/// Control characters (Unicode category Cc).
const CONTROLS: [(char, char); 2] = [('\u{0}', '\u{1F}'), ('\u{7F}', '\u{9F}')];

/// The control characters free text refuses: all of `CONTROLS` but tab, line feed and
/// carriage return (U+0009, U+000A, U+000D).
const FREE_TEXT_REFUSED: [(char, char); 4] = [
    ('\u{0}', '\u{8}'),
    ('\u{B}', '\u{C}'),
    ('\u{E}', '\u{1F}'),
    ('\u{7F}', '\u{9F}'),
];

/// Characters that show nothing: Unicode White_Space, and format characters and fillers
/// a text can be made of and still look empty (all in the Basic Multilingual Plane, so
/// that the JSON-Schema pattern can say the same).
const BLANKS: [(char, char); 20] = [
    ('\u{9}', '\u{D}'),
    ('\u{20}', '\u{20}'),
    ('\u{85}', '\u{85}'),
    ('\u{A0}', '\u{A0}'),
    ('\u{AD}', '\u{AD}'),
    ('\u{34F}', '\u{34F}'),
    ('\u{61C}', '\u{61C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{2000}', '\u{200F}'),
    ('\u{2028}', '\u{202F}'),
    ('\u{205F}', '\u{206F}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
];

fn within(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|(low, high)| (*low..=*high).contains(&c))
}

fn is_blank(c: char) -> bool {
    within(c, &BLANKS) || within(c, &CONTROLS)
}

/// Trims blank characters (spaces, invisible characters) at both ends.
pub fn trim(raw: &str) -> &str {
    raw.trim_matches(is_blank)
}

/// True when `text` has no character that shows.
pub fn is_blank_text(text: &str) -> bool {
    text.chars().all(is_blank)
}

/// Why `text` breaks the rule for single-line text, if it does.
pub fn single_line_violation(text: &str) -> Option<String> {
    text.chars().find(|c| within(*c, &CONTROLS)).map(|c| {
        format!(
            "must not contain control characters (found {})",
            describe(c)
        )
    })
}

/// Why `text` breaks the rule for free text, if it does.
pub fn free_text_violation(text: &str) -> Option<String> {
    text.chars()
        .find(|c| within(*c, &FREE_TEXT_REFUSED))
        .map(|c| {
            format!(
                "must not contain control characters other than tab and line breaks (found {})",
                describe(c)
            )
        })
}

/// `NUL` or `U+001B`: enough to find the character, without echoing it.
fn describe(c: char) -> String {
    if c == '\0' {
        "NUL".to_owned()
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// ECMA-262 character-class ranges: `\u0000-\u001F…`.
fn class_ranges(ranges: &[(char, char)]) -> String {
    ranges
        .iter()
        .map(|(low, high)| {
            if low == high {
                format!("\\u{:04X}", u32::from(*low))
            } else {
                format!("\\u{:04X}-\\u{:04X}", u32::from(*low), u32::from(*high))
            }
        })
        .collect()
}

/// The single-line rule with "not blank", as a JSON-Schema pattern. It ends with
/// `(?![\s\S])`, not `$`, which some generators read as also matching before a final
/// line feed.
pub fn single_line_pattern() -> String {
    format!(
        "^(?=[\\s\\S]*[^{blanks}{controls}])[^{controls}]*(?![\\s\\S])",
        controls = class_ranges(&CONTROLS),
        blanks = class_ranges(&BLANKS)
    )
}

/// The free-text rule as a JSON-Schema pattern.
pub fn free_text_pattern() -> String {
    format!("^[^{}]*(?![\\s\\S])", class_ranges(&FREE_TEXT_REFUSED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_keys_fold_case_and_compose() {
        assert_eq!(match_key("STRASSE"), match_key("Straße"));
        assert_eq!(match_key("Straße"), "strasse");
        // Final sigma, capital sigma and sigma are one letter.
        assert_eq!(match_key("ΟΔΟΣ"), match_key("οδος"));
        assert_eq!(
            match_key("ΟΔΟΣ"),
            match_key("Οδoς".replace('o', "ο").as_str())
        );
        // Composed and decomposed accents.
        assert_eq!(match_key("Éldoret"), match_key("E\u{301}ldoret"));
        assert_eq!(match_key("E\u{301}ldoret"), "\u{e9}ldoret");
        // Locale-free: dotless ı is its own letter; İ keeps its dot as a mark.
        assert_eq!(match_key("ISTANBUL"), "istanbul");
        assert_ne!(match_key("ıstanbul"), "istanbul");
        assert_eq!(match_key("İstanbul"), "i\u{307}stanbul");
        // Idempotent: a key is its own key.
        for text in ["Straße", "ΟΔΟΣ", "E\u{301}", "İ", "ﬀ", "ǅ"] {
            assert_eq!(match_key(&match_key(text)), match_key(text), "{text}");
        }
    }

    #[test]
    fn invisible_text_is_blank() {
        assert!(is_blank_text("\u{200B}\u{FEFF} \u{2060}"));
        assert!(is_blank_text(""));
        assert_eq!(trim("\u{FEFF}Villa\u{200B} "), "Villa");
        assert_eq!(trim("a\u{200B}b"), "a\u{200B}b");
    }

    #[test]
    fn control_characters_are_refused_by_kind() {
        assert!(single_line_violation("a\u{0}b").unwrap().contains("NUL"));
        assert!(single_line_violation("a\tb").unwrap().contains("U+0009"));
        assert!(single_line_violation("a\u{85}b").is_some());
        assert_eq!(single_line_violation("Éldoret – Villa"), None);
        assert_eq!(free_text_violation("one\r\ntwo\tthree"), None);
        assert!(free_text_violation("bell\u{7}").unwrap().contains("U+0007"));
        assert!(free_text_violation("nul\u{0}").unwrap().contains("NUL"));
    }

    #[test]
    fn free_text_controls_are_the_ones_its_pattern_allows() {
        let pattern = free_text_pattern();
        assert!(pattern.contains("\\u0000-\\u0008\\u000B-\\u000C\\u000E-\\u001F"));
        for c in ['\t', '\n', '\r'] {
            assert!(free_text_violation(&c.to_string()).is_none());
        }
        // Free text refuses exactly the single-line controls but those three.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let refused = within(c, &CONTROLS) && !['\t', '\n', '\r'].contains(&c);
            assert_eq!(within(c, &FREE_TEXT_REFUSED), refused, "{:?}", c);
        }
        assert!(
            single_line_pattern().contains("\\u2000-\\u200F"),
            "{}",
            single_line_pattern()
        );
    }
}
