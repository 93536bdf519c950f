//! The small string grammars of the manifest: ids, variable names, `{{ var }}`
//! templates, HTTP routes, durations and sizes. Pure and reusable, so the HTTP
//! router and the variables capability check strings the same way as `load`.

use std::time::Duration;

/// Why a string does not follow one of the manifest's grammars.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A component id that is not lower kebab-case.
    #[error(
        "`{0}` is not a valid component id (use kebab-case: lowercase letters and digits in words separated by single '-', starting with a letter)"
    )]
    ComponentId(String),
    /// A variable name that is not lower_snake_case.
    #[error(
        "`{0}` is not a valid variable name (use lower_snake_case: lowercase letters and digits in words separated by single '_', starting with a letter)"
    )]
    VariableName(String),
    /// `{{` without a matching `}}`.
    #[error("unterminated `{{{{` in template \"{0}\"")]
    UnterminatedTemplate(String),
    /// A route that breaks the route grammar; the second field says how.
    #[error("route \"{0}\" is invalid: {1}")]
    Route(String, &'static str),
    /// A duration that is not `<integer><unit>` with unit ms, s, m or h.
    #[error(
        "\"{0}\" is not a valid duration (expected a positive whole number with a unit: ms, s, m or h, e.g. \"30s\")"
    )]
    Duration(String),
    /// A size that is not `<integer>[unit]` with unit B, KiB, MiB or GiB.
    #[error(
        "\"{0}\" is not a valid size (expected a positive whole number of bytes, optionally with a unit: B, KiB, MiB or GiB, e.g. \"64MiB\")"
    )]
    Size(String),
}

/// Checks a component id: kebab-case, starting with a lowercase letter.
pub fn check_component_id(id: &str) -> Result<(), SyntaxError> {
    if is_separated_words(id, '-') {
        Ok(())
    } else {
        Err(SyntaxError::ComponentId(id.to_owned()))
    }
}

/// Checks a variable name: lower_snake_case, starting with a lowercase letter.
pub fn check_variable_name(name: &str) -> Result<(), SyntaxError> {
    if is_separated_words(name, '_') {
        Ok(())
    } else {
        Err(SyntaxError::VariableName(name.to_owned()))
    }
}

/// Lowercase ASCII letters and digits in non-empty words joined by single
/// `separator`s, the first character a letter.
fn is_separated_words(s: &str, separator: char) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split(separator).all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// The variable names a `{{ name }}` template refers to, in order of
/// appearance (repeats kept). Whitespace inside the braces is optional.
pub fn template_references(template: &str) -> Result<Vec<String>, SyntaxError> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after_open = &rest[open + 2..];
        let close = after_open
            .find("}}")
            .ok_or_else(|| SyntaxError::UnterminatedTemplate(template.to_owned()))?;
        let name = after_open[..close].trim();
        check_variable_name(name)?;
        names.push(name.to_owned());
        rest = &after_open[close + 2..];
    }
    Ok(names)
}

/// Checks an HTTP route: starts with `/`; segments are literals or `:name`;
/// a final `/...` is a trailing wildcard (`/...` alone matches everything).
/// One trailing `/` is allowed; empty segments elsewhere are not.
pub fn check_route(route: &str) -> Result<(), SyntaxError> {
    let invalid = |why| Err(SyntaxError::Route(route.to_owned(), why));
    let Some(path) = route.strip_prefix('/') else {
        return invalid("it must start with '/'");
    };
    // No request path holds one, and Spin's route headers cannot carry one.
    if route.contains(char::is_control) {
        return invalid("it has a control character");
    }
    if path.is_empty() {
        return Ok(());
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return invalid("it has an empty segment ('//')");
        }
        if *segment == "..." && index + 1 != segments.len() {
            return invalid("the wildcard '...' may only be the last segment");
        }
        if let Some(name) = segment.strip_prefix(':')
            && (name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return invalid("a ':name' segment needs a name of letters, digits or '_'");
        }
    }
    if route.ends_with("/.../") {
        return invalid("the wildcard '...' may only be the last segment");
    }
    Ok(())
}

/// Parses a duration such as `"500ms"`, `"30s"`, `"5m"` or `"1h"`; zero is
/// rejected because every duration in the manifest is a limit.
pub fn parse_duration(text: &str) -> Result<Duration, SyntaxError> {
    let invalid = || SyntaxError::Duration(text.to_owned());
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    let millis = number.checked_mul(millis_per_unit).ok_or_else(invalid)?;
    Ok(Duration::from_millis(millis))
}

/// Parses a size in bytes such as `"65536"`, `"512KiB"`, `"64MiB"` or
/// `"1GiB"`; zero is rejected because every size in the manifest is a limit.
pub fn parse_size(text: &str) -> Result<u64, SyntaxError> {
    let invalid = || SyntaxError::Size(text.to_owned());
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let bytes_per_unit: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(bytes_per_unit).ok_or_else(invalid)
}

/// Splits `"64MiB"` into `(64, "MiB")`; `None` without a positive number.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    (number > 0).then(|| (number, text[digits..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_ids_are_accepted() {
        for id in ["hello", "hello-world", "a1-b2", "x"] {
            assert_eq!(check_component_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn non_kebab_ids_are_rejected() {
        for id in [
            "", "Hello", "1abc", "-a", "a-", "a--b", "a_b", "a.b", "héllo",
        ] {
            assert!(check_component_id(id).is_err(), "{id}");
        }
    }

    #[test]
    fn snake_names_are_accepted_and_others_rejected() {
        for name in ["api_key", "a", "v2_token"] {
            assert_eq!(check_variable_name(name), Ok(()), "{name}");
        }
        for name in ["", "Api", "_a", "a_", "a__b", "a-b", "2a"] {
            assert!(check_variable_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn template_references_are_found_with_or_without_spaces() {
        assert_eq!(
            template_references("https://{{host}}:{{ port }}/{{  host }}"),
            Ok(vec!["host".into(), "port".into(), "host".into()])
        );
        assert_eq!(template_references("plain"), Ok(vec![]));
    }

    #[test]
    fn unterminated_template_is_rejected() {
        assert_eq!(
            template_references("a {{ b"),
            Err(SyntaxError::UnterminatedTemplate("a {{ b".into()))
        );
    }

    #[test]
    fn template_with_bad_name_is_rejected() {
        assert_eq!(
            template_references("{{ Bad-Name }}"),
            Err(SyntaxError::VariableName("Bad-Name".into()))
        );
        assert!(template_references("{{}}").is_err());
    }

    #[test]
    fn valid_routes_are_accepted() {
        for route in [
            "/",
            "/...",
            "/hello",
            "/hello/",
            "/a/b/...",
            "/users/:id",
            "/u/:user_id/...",
        ] {
            assert_eq!(check_route(route), Ok(()), "{route}");
        }
    }

    #[test]
    fn invalid_routes_are_rejected() {
        for route in [
            "", "hello", "//", "/a//b", "/a/.../b", "/.../", "/a/:", "/a/:b-c",
        ] {
            assert!(check_route(route).is_err(), "{route}");
        }
    }

    #[test]
    fn route_with_a_control_character_is_rejected() {
        // Found by the router's property tests: "/\n" was accepted, and its route
        // lost the spin-matched-route and spin-component-route headers.
        for route in ["/\n", "/a\tb", "/x/\u{7f}/..."] {
            assert_eq!(
                check_route(route),
                Err(SyntaxError::Route(
                    route.into(),
                    "it has a control character"
                )),
                "{route:?}"
            );
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn durations_without_unit_or_zero_are_rejected() {
        for text in ["30", "0s", "s", "1.5s", "-1s", "10 days", ""] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn sizes_parse_binary_units_and_bare_bytes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for text in ["0", "64MB", "MiB", "1.5GiB", "99999999999999GiB", ""] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }
}
