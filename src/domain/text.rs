//! The character rules every text input obeys, wherever it comes from (a JSON body, a
//! query string, a CLI flag, an import row): one rule per kind of text, so HTTP, the CLI
//! and import accept and refuse exactly the same values on both backends.
//!
//! - Single-line text (titles, locations, filters) holds no control character at all.
//! - Free text (descriptions) may hold tabs and line breaks, but no other control
//!   character: NUL would make PostgreSQL fail, the rest corrupt terminals and exports.
//! - Text made only of spaces and invisible characters (zero-width space, BOM, …) is
//!   blank, and invisible characters at either end are trimmed like spaces.

/// Characters that render as nothing: format characters and fillers that a text can be
/// made of and still look empty.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

fn is_blank_char(c: char) -> bool {
    c.is_whitespace() || is_invisible(c)
}

/// Trims spaces and invisible characters at both ends.
pub fn trim(raw: &str) -> &str {
    raw.trim_matches(is_blank_char)
}

/// Why `text` breaks the rule for single-line text, if it does.
pub fn single_line_violation(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "must not contain control characters (found {})",
            describe(c)
        )
    })
}

/// Why `text` breaks the rule for free text, if it does: tab, line feed and carriage
/// return are allowed.
pub fn free_text_violation(text: &str) -> Option<String> {
    text.chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_text_is_blank() {
        assert_eq!(trim("\u{200B}\u{FEFF} \u{2060}"), "");
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
}
