//! `$1`, `$2`, ... mean "the first, second parameter" on both backends.
//!
//! PostgreSQL reads them that way. SQLite treats `$1` as a *named* parameter
//! numbered by first appearance, so `... a = $2 WHERE id = $1` would bind
//! backwards; it is rewritten to `?NNN`, SQLite's explicit positional form.
//! Quoted strings, quoted identifiers and comments are left alone.

/// Rewrites `$N` placeholders to `?N` outside quotes and comments.
pub fn to_sqlite(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                copy_until(&mut chars, &mut out, c);
            }
            '[' => {
                out.push(c);
                copy_until(&mut chars, &mut out, ']');
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                copy_until(&mut chars, &mut out, '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                copy_block_comment(&mut chars, &mut out);
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            _ => out.push(c),
        }
    }
    out
}

fn copy_until(chars: &mut impl Iterator<Item = char>, out: &mut String, end: char) {
    for c in chars.by_ref() {
        out.push(c);
        if c == end {
            return;
        }
    }
}

fn copy_block_comment(chars: &mut impl Iterator<Item = char>, out: &mut String) {
    let mut previous = '\0';
    for c in chars.by_ref() {
        out.push(c);
        if previous == '*' && c == '/' {
            return;
        }
        previous = c;
    }
}

#[cfg(test)]
mod tests {
    use super::to_sqlite;

    #[test]
    fn dollar_numbers_become_explicit_positions() {
        assert_eq!(
            to_sqlite("UPDATE t SET a = $2 WHERE id = $1"),
            "UPDATE t SET a = ?2 WHERE id = ?1"
        );
        assert_eq!(to_sqlite("SELECT $10"), "SELECT ?10");
    }

    #[test]
    fn quoted_text_and_comments_are_untouched() {
        let statement = "SELECT '$1', \"$2\", [$3], `$4` -- $5\n/* $6 */ FROM t WHERE x = $1";
        assert_eq!(
            to_sqlite(statement),
            "SELECT '$1', \"$2\", [$3], `$4` -- $5\n/* $6 */ FROM t WHERE x = ?1"
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_the_string() {
        assert_eq!(to_sqlite("SELECT 'it''s $1', $1"), "SELECT 'it''s $1', ?1");
    }

    #[test]
    fn named_dollar_parameters_are_not_positions() {
        assert_eq!(to_sqlite("SELECT $name, $1"), "SELECT $name, ?1");
    }
}
