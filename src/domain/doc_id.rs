//! Document names: [`DocId`], checked once where a name comes in (a URL, a token) and then
//! carried by every message, log line and store key that concerns the document.

use std::fmt;
use std::sync::Arc;

/// Longest document name accepted, in characters (all allowed characters are ASCII).
const MAX_DOC_ID_LEN: usize = 128;

/// A document name: 1–128 characters of `A-Z a-z 0-9 . _ -`.
///
/// The name appears in URLs, log lines and database keys, so the alphabet is kept to characters
/// that need no escaping anywhere. Cloning is cheap (shared string), because every message that
/// concerns a document carries its id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(Arc<str>);

/// Why a document name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDocId {
    #[error("document name is empty")]
    Empty,
    #[error("document name is longer than {MAX_DOC_ID_LEN} characters")]
    TooLong,
    #[error("document name may contain only A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
    #[error("document name cannot be '.' or '..'")]
    DotSegment,
}

impl DocId {
    /// Checks `raw` against the naming rules.
    pub fn parse(raw: &str) -> Result<Self, InvalidDocId> {
        if raw.is_empty() {
            return Err(InvalidDocId::Empty);
        }
        if raw.len() > MAX_DOC_ID_LEN {
            return Err(InvalidDocId::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidDocId::BadCharacter);
        }
        // URLs treat these as path segments to resolve, so such a document could never be
        // opened or deleted by its URL.
        if raw == "." || raw == ".." {
            return Err(InvalidDocId::DotSegment);
        }
        Ok(Self(raw.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({})", &self.0)
    }
}

impl AsRef<str> for DocId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "Doc-1", "notes_2026.md", &"x".repeat(MAX_DOC_ID_LEN)] {
            assert_eq!(DocId::parse(ok).map(|d| d.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(DocId::parse(""), Err(InvalidDocId::Empty));
        assert_eq!(
            DocId::parse(&"x".repeat(MAX_DOC_ID_LEN + 1)),
            Err(InvalidDocId::TooLong)
        );
        assert_eq!(DocId::parse("."), Err(InvalidDocId::DotSegment));
        assert_eq!(DocId::parse(".."), Err(InvalidDocId::DotSegment));
        assert!(DocId::parse("...").is_ok());
        for bad in ["a b", "a/b", "ä", "a%20", "..\u{0}", "doc?x", "é"] {
            assert_eq!(
                DocId::parse(bad),
                Err(InvalidDocId::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
