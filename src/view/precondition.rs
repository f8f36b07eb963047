//! Conditional writes (RFC 9110 §13.1.1–2): `If-Match` and `If-None-Match` on PUT,
//! PATCH and DELETE, evaluated against the listing as the write's transaction found it
//! (locked), so two editors holding the same ETag cannot both succeed. Its list of
//! entity-tags ([`TagList`]) is also how `If-None-Match` is read on GET.

use crate::domain::Property;
use crate::view::Encoding;

/// What a write requires of the listing's current representation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// `If-Match`: one of these (strong comparison), or any (`*`).
    pub if_match: Option<TagList>,
    /// `If-None-Match`: none of these (weak comparison), or none at all (`*`).
    pub if_none_match: Option<TagList>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagList {
    Any,
    Tags(Vec<EntityTag>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    /// With its quotes, as sent.
    pub opaque: String,
}

impl Precondition {
    /// Whether a write may replace or delete `current` (RFC 9110 §13.2.2: If-Match
    /// first, then If-None-Match).
    pub fn allows(&self, current: &Property) -> bool {
        let etag = item_etag(current);
        let same = |tag: &EntityTag| variant_base(&tag.opaque) == etag;
        if let Some(list) = &self.if_match {
            let matched = match list {
                TagList::Any => true,
                TagList::Tags(tags) => tags.iter().any(|tag| !tag.weak && same(tag)),
            };
            if !matched {
                return false;
            }
        }
        match &self.if_none_match {
            None => true,
            Some(TagList::Any) => false,
            Some(TagList::Tags(tags)) => !tags.iter().any(same),
        }
    }

    /// Parses the field lines of `If-Match` and of `If-None-Match` (each possibly
    /// several lines, combined as one list: RFC 9110 §5.3). The error names the field.
    pub fn parse<'a>(
        if_match: impl Iterator<Item = &'a [u8]>,
        if_none_match: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Precondition, String> {
        Ok(Precondition {
            if_match: TagList::parse(if_match).map_err(|e| format!("If-Match: {e}"))?,
            if_none_match: TagList::parse(if_none_match)
                .map_err(|e| format!("If-None-Match: {e}"))?,
        })
    }
}

impl TagList {
    /// `None` when no line was sent.
    pub fn parse<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Option<TagList>, String> {
        let mut any = false;
        let mut tags = Vec::new();
        let mut seen = false;
        for line in lines {
            let line =
                std::str::from_utf8(line).map_err(|_| "must be ASCII entity-tags".to_owned())?;
            // An empty field line is an empty list: as good as absent (RFC 9110 §5.6.1).
            if line.trim().is_empty() {
                continue;
            }
            seen = true;
            for member in list_members(line)? {
                if member == "*" {
                    any = true;
                    continue;
                }
                tags.push(EntityTag::parse(member)?);
            }
        }
        match (seen, any, tags.is_empty()) {
            (false, _, _) => Ok(None),
            (true, true, true) => Ok(Some(TagList::Any)),
            (true, true, false) => Err("`*` cannot be combined with entity-tags".to_owned()),
            (true, false, true) => Err("must be `*` or a list of entity-tags".to_owned()),
            (true, false, false) => Ok(Some(TagList::Tags(tags))),
        }
    }

    /// Whether the list names `etag` by weak comparison (RFC 9110 §8.8.3.2: the opaque
    /// parts are equal, `W/` on either side aside), `*` naming any: `If-None-Match` on
    /// GET, against the ETag of the variant that would be sent.
    pub fn matches_weakly(&self, etag: &str) -> bool {
        let etag = etag.strip_prefix("W/").unwrap_or(etag);
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.iter().any(|tag| tag.opaque == etag),
        }
    }
}

impl EntityTag {
    fn parse(member: &str) -> Result<EntityTag, String> {
        let (weak, opaque) = match member.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, member),
        };
        let quoted = opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"');
        let inner_ok = quoted
            && opaque[1..opaque.len() - 1]
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b));
        if !inner_ok {
            return Err(format!(
                "`{}` is not an entity-tag (a quoted string such as \"3f-9c1e\", or W/\"…\")",
                member.escape_default()
            ));
        }
        Ok(EntityTag {
            weak,
            opaque: opaque.to_owned(),
        })
    }
}

/// The members of a comma-separated list whose entity-tags may hold commas inside
/// their quotes (`"a,b", W/"c"`); empty members are skipped (RFC 9110 §5.6.1).
fn list_members(line: &str) -> Result<Vec<&str>, String> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (at, byte) in line.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                members.push(line[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("an entity-tag's quote is not closed".to_owned());
    }
    members.push(line[start..].trim());
    Ok(members.into_iter().filter(|m| !m.is_empty()).collect())
}

/// The ETag `GET /properties/{id}/` sends for `property` without content coding: its
/// JSON body's (see `CachedResponse::new`).
pub fn item_etag(property: &Property) -> String {
    let body = serde_json::to_vec(property).unwrap_or_default();
    super::envelope::strong_etag(&body)
}

/// An ETag of any encoding's variant, as the identity variant's: every variant names
/// the same state of the listing.
fn variant_base(opaque: &str) -> String {
    for encoding in [Encoding::Gzip, Encoding::Brotli] {
        let suffix = format!("-{}\"", encoding.token());
        if let Some(base) = opaque.strip_suffix(&suffix) {
            return format!("{base}\"");
        }
    }
    opaque.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property() -> Property {
        Property {
            id: 1,
            title: "Villa".into(),
            description: String::new(),
            price: "10.00".parse().unwrap(),
            location: "Lamu".into(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        }
    }

    fn pre(if_match: &[&str], if_none_match: &[&str]) -> Result<Precondition, String> {
        Precondition::parse(
            if_match.iter().map(|l| l.as_bytes()),
            if_none_match.iter().map(|l| l.as_bytes()),
        )
    }

    #[test]
    fn if_match_compares_strongly_with_every_variant_of_the_current_etag() {
        let current = item_etag(&property());
        let gzip = format!("{}-gzip\"", current.trim_end_matches('"'));
        assert!(pre(&[&current], &[]).unwrap().allows(&property()));
        assert!(pre(&[&gzip], &[]).unwrap().allows(&property()));
        assert!(
            pre(&["\"other\"", &current], &[])
                .unwrap()
                .allows(&property()),
            "a list"
        );
        assert!(
            pre(&["\"other\"", &current], &[])
                .unwrap()
                .allows(&property())
        );
        assert!(pre(&["\"other\"", ""], &[]).is_ok());
        let with_comma = "\"a,b\"";
        assert!(
            pre(&[&format!("W/{with_comma}, {current}")], &[])
                .unwrap()
                .allows(&property())
        );
        assert!(pre(&["\"unclosed, \"x\""], &[]).is_err());
        assert!(!pre(&["\"stale-etag\""], &[]).unwrap().allows(&property()));
        assert!(
            !pre(&[&format!("W/{current}")], &[])
                .unwrap()
                .allows(&property()),
            "weak never matches"
        );
        assert!(pre(&["*"], &[]).unwrap().allows(&property()));
    }

    #[test]
    fn if_none_match_refuses_the_current_state() {
        let current = item_etag(&property());
        assert!(!pre(&[], &["*"]).unwrap().allows(&property()));
        assert!(
            !pre(&[], &[&format!("W/{current}")])
                .unwrap()
                .allows(&property())
        );
        assert!(pre(&[], &["\"older\""]).unwrap().allows(&property()));
        assert_eq!(pre(&[], &[]).unwrap(), Precondition::default());
        assert_eq!(
            pre(&[""], &[" "]).unwrap(),
            Precondition::default(),
            "empty lines are no lists"
        );
    }

    #[test]
    fn malformed_lists_are_refused_naming_the_field() {
        for bad in ["stale", "\"a\" \"b\"", "*, \"a\"", "\"a\"b\""] {
            let error = pre(&[bad], &[]).unwrap_err();
            assert!(error.starts_with("If-Match: "), "{bad}: {error}");
        }
        assert!(
            pre(&[], &["W/x"])
                .unwrap_err()
                .starts_with("If-None-Match: ")
        );
    }
}
