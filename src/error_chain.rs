//! One line about an error chain. Libraries often repeat their source's message in their
//! own (`error connecting to server: Connection refused (os error 111)` above
//! `Connection refused (os error 111)`), so printing the whole chain says one thing
//! twice; the innermost message is the real cause.

use std::error::Error;

/// The innermost message of `error`'s chain.
pub fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error connecting to server: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_innermost_message_is_kept() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(root_cause(&error), "Connection refused (os error 111)");
    }
}
