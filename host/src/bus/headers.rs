//! What a message header may hold, checked where a header is written (by a
//! guest or by the host) so that no send ever meets a header the broker
//! client refuses.
//!
//! The rules are NATS's: a name is printable ASCII without `:`; a value has
//! no CR or LF. Values the host writes from text it does not control (a
//! trap's message, a guest's reject reason) go through [`single_line`].

/// Longest header value the host writes from free text, in bytes.
pub const MAX_HOST_HEADER_VALUE: usize = 512;

/// Why a header pair cannot travel on the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    /// The name is empty, or has a character other than printable ASCII, or `:`.
    #[error("header name `{0}` must be non-empty printable ASCII without `:`")]
    Name(String),
    /// The value of the named header has a line break.
    #[error("the value of header `{0}` must not contain a line break")]
    Value(String),
}

/// Checks every pair; the first bad one is the error.
pub fn check_headers(headers: &[(String, String)]) -> Result<(), InvalidHeader> {
    headers
        .iter()
        .try_for_each(|(name, value)| check_header(name, value))
}

/// Checks one pair.
pub fn check_header(name: &str, value: &str) -> Result<(), InvalidHeader> {
    if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
        return Err(InvalidHeader::Name(name.chars().take(64).collect()));
    }
    if value.contains(['\r', '\n']) {
        return Err(InvalidHeader::Value(name.to_string()));
    }
    Ok(())
}

/// `text` as one line of at most [`MAX_HOST_HEADER_VALUE`] bytes: runs of
/// whitespace (line breaks included) become one space, and a cut ends in `…`.
pub fn single_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() <= MAX_HOST_HEADER_VALUE {
        return joined;
    }
    let ellipsis = '…';
    let mut end = MAX_HOST_HEADER_VALUE - ellipsis.len_utf8();
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &joined[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string())]
    }

    #[test]
    fn ordinary_headers_pass() {
        assert_eq!(check_headers(&pair("traceparent", "00-ab-cd-01")), Ok(()));
        assert_eq!(
            check_headers(&pair("x-Mixed_Case.1", "with: colon")),
            Ok(())
        );
    }

    #[test]
    fn a_line_break_in_a_value_is_refused() {
        assert_eq!(
            check_headers(&pair("reason", "one\ntwo")),
            Err(InvalidHeader::Value("reason".into()))
        );
        assert!(check_headers(&pair("reason", "one\rtwo")).is_err());
    }

    #[test]
    fn names_with_colons_spaces_or_non_ascii_are_refused() {
        for name in ["", "a:b", "a b", "naïve", "tab\t"] {
            assert!(
                matches!(check_header(name, "v"), Err(InvalidHeader::Name(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn single_line_joins_lines_and_keeps_short_text() {
        assert_eq!(
            single_line("wasm trap:\n  unreachable\r\n at f"),
            "wasm trap: unreachable at f"
        );
        assert_eq!(single_line("short"), "short");
    }

    #[test]
    fn single_line_cuts_long_text_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let line = single_line(&long);
        assert!(line.len() <= MAX_HOST_HEADER_VALUE, "{}", line.len());
        assert!(line.ends_with('…'));
        assert!(check_header("reason", &line).is_ok());
    }
}
