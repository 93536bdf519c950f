//! Property tests of the manifest and runtime-config parsers and the small
//! grammars beneath them: no text makes them panic; every error is one line
//! naming the file; a manifest or runtime config printed from a spec parses
//! to what the spec says, and one with a bad value is refused naming it.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::{
    HttpRoute, KeyValueStoreConfig, OutboundPolicy, SyntaxError, check_component_id, check_route,
    check_variable_name, parse, parse_duration, parse_runtime_config, parse_size,
    template_references,
};

const MANIFEST: &str = "apps/demo/spin.toml";
const RUNTIME_CONFIG: &str = "/etc/spindle/runtime.toml";

/// The manifest's promise about its errors: one line that names the file.
fn check_error(path: &str, error: &anyhow::Error) -> Result<String, TestCaseError> {
    let message = format!("{error:#}");
    prop_assert!(
        !message.contains('\n'),
        "error is not one line: {message:?}"
    );
    prop_assert!(
        message.starts_with(path),
        "error does not name the file: {message:?}"
    );
    Ok(message)
}

/// A TOML basic string on one line (also usable as a key): `"` and `\`
/// escaped, control characters as `\uXXXX`.
fn quoted(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(text: &str) -> String {
    let bare = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { text.to_string() } else { quoted(text) }
}

/// A value for one field, and if it is a bad one, what the error must say.
#[derive(Debug, Clone)]
struct Pick<T> {
    value: T,
    fault: Option<&'static str>,
}

/// Mostly good values; now and then a bad one and the text of its error.
fn pick<T: Clone + Debug + 'static>(
    good: Vec<T>,
    bad: Vec<(T, &'static str)>,
) -> BoxedStrategy<Pick<T>> {
    let good = prop::sample::select(good).prop_map(|value| Pick { value, fault: None });
    if bad.is_empty() {
        return good.boxed();
    }
    let bad = prop::sample::select(bad).prop_map(|(value, fault)| Pick {
        value,
        fault: Some(fault),
    });
    prop_oneof![14 => good, 1 => bad].boxed()
}

#[derive(Debug, Clone)]
enum VariableKind {
    Default(&'static str),
    Required { secret: bool },
    Neither,
    Both,
}

#[derive(Debug, Clone)]
enum Size {
    Text(&'static str),
    Bytes(i64),
}

#[derive(Debug, Clone)]
struct ComponentSpec {
    id: Pick<&'static str>,
    source: Pick<&'static str>,
    hosts: Vec<Pick<&'static str>>,
    timeout: Option<Pick<&'static str>>,
    memory_limit: Option<Pick<&'static str>>,
    max_request_body: Option<Pick<Size>>,
    max_concurrency: Option<Pick<i64>>,
    allowed_publish: Vec<Pick<&'static str>>,
}

#[derive(Debug, Clone)]
struct NatsSpec {
    subject: Pick<&'static str>,
    component: usize,
    queue_group: Option<Pick<&'static str>>,
    max_deliver: Option<Pick<i64>>,
    ack_wait: Option<Pick<&'static str>>,
    dead_letter_subject: Option<Pick<&'static str>>,
}

/// A manifest, field by field. Component references are indices into
/// `components`; one past the end names a component that does not exist.
#[derive(Debug, Clone)]
struct ManifestSpec {
    name: Pick<&'static str>,
    base: Pick<Option<&'static str>>,
    variables: Vec<(Pick<&'static str>, Pick<VariableKind>)>,
    components: Vec<ComponentSpec>,
    http: Vec<(Pick<&'static str>, usize)>,
    nats: Vec<NatsSpec>,
}

fn component_spec() -> impl Strategy<Value = ComponentSpec> {
    let id = pick(
        vec!["hello", "a1-b2", "x", "orders"],
        vec![
            ("Hello", "is not a valid component id"),
            ("a--b", "is not a valid component id"),
            ("a\nb", "is not a valid component id"),
            ("-a", "is not a valid component id"),
        ],
    );
    let source = pick(
        vec!["a.wasm", "dir/b.wasm", "/abs/c.wasm", "é.wasm"],
        vec![("", "source"), (" ", "source")],
    );
    let host = pick(
        vec![
            "https://example.com",
            "https://{{ api_host }}:8443",
            "*://*:*",
            "postgres://db",
        ],
        vec![
            ("example.com", "allowed_outbound_hosts"),
            ("https://{{ nope }}", "allowed_outbound_hosts"),
            ("https://{{ api_host", "allowed_outbound_hosts"),
            ("https://{{ Bad }}", "allowed_outbound_hosts"),
        ],
    );
    let timeout = pick(
        vec!["30s", "500ms", "1h", " 2m "],
        vec![
            ("0s", "tool.spindle.timeout"),
            ("30", "tool.spindle.timeout"),
            ("1.5s", "tool.spindle.timeout"),
            ("99999999999999999999h", "tool.spindle.timeout"),
            ("18446744073709551615h", "tool.spindle.timeout"),
        ],
    );
    let memory_limit = pick(
        vec!["64MiB", "1GiB", "65536"],
        vec![
            ("0", "tool.spindle.memory_limit"),
            ("64MB", "tool.spindle.memory_limit"),
            ("99999999999999GiB", "tool.spindle.memory_limit"),
        ],
    );
    let max_request_body = pick(
        vec![Size::Text("1MiB"), Size::Bytes(1_048_576)],
        vec![
            (Size::Bytes(0), "tool.spindle.max_request_body"),
            (Size::Bytes(-1), "tool.spindle.max_request_body"),
            (Size::Text("x"), "tool.spindle.max_request_body"),
        ],
    );
    let max_concurrency = pick(
        vec![1i64, 8],
        vec![(0, "tool.spindle.max_concurrency"), (-1, "expected u32")],
    );
    let publish = pick(
        vec!["orders.created", "audit.>", "*"],
        vec![
            ("a..b", "tool.spindle.allowed_publish"),
            ("a b", "tool.spindle.allowed_publish"),
            ("a.>.b", "tool.spindle.allowed_publish"),
            ("a\nb", "tool.spindle.allowed_publish"),
        ],
    );
    (
        id,
        source,
        prop::collection::vec(host, 0..3),
        prop::option::of(timeout),
        prop::option::of(memory_limit),
        prop::option::of(max_request_body),
        prop::option::of(max_concurrency),
        prop::collection::vec(publish, 0..3),
    )
        .prop_map(
            |(
                id,
                source,
                hosts,
                timeout,
                memory_limit,
                max_request_body,
                max_concurrency,
                allowed_publish,
            )| {
                ComponentSpec {
                    id,
                    source,
                    hosts,
                    timeout,
                    memory_limit,
                    max_request_body,
                    max_concurrency,
                    allowed_publish,
                }
            },
        )
}

fn nats_spec() -> impl Strategy<Value = NatsSpec> {
    (
        pick(
            vec!["orders.*", "a.>", "x"],
            vec![
                ("a..b", "subject"),
                ("", "subject"),
                ("a b", "subject"),
                ("a\n", "subject"),
            ],
        ),
        0..16usize,
        prop::option::of(pick(
            vec!["workers"],
            vec![("a.b", "queue_group"), ("", "queue_group")],
        )),
        prop::option::of(pick(
            vec![3i64],
            vec![(0, "max_deliver"), (-3, "expected u32")],
        )),
        prop::option::of(pick(vec!["10s"], vec![("10", "ack_wait")])),
        prop::option::of(pick(
            vec!["dead.x"],
            vec![
                ("dead.*", "dead_letter_subject"),
                ("dead letter", "dead_letter_subject"),
            ],
        )),
    )
        .prop_map(
            |(subject, component, queue_group, max_deliver, ack_wait, dead_letter_subject)| {
                NatsSpec {
                    subject,
                    component,
                    queue_group,
                    max_deliver,
                    ack_wait,
                    dead_letter_subject,
                }
            },
        )
}

fn manifest_spec() -> impl Strategy<Value = ManifestSpec> {
    let name = pick(
        vec!["demo", "my app", "é"],
        vec![("", "[application] name"), (" ", "[application] name")],
    );
    let base = pick(
        vec![None, Some("/"), Some("/api"), Some("/api/")],
        vec![(Some("api"), "base"), (Some(""), "base")],
    );
    let variable = (
        pick(
            vec!["token", "a", "v2_token"],
            vec![
                ("Api", "[variables]"),
                ("a__b", "[variables]"),
                ("a-b", "[variables]"),
                ("a\nb", "[variables]"),
            ],
        ),
        pick(
            vec![
                VariableKind::Default("x"),
                VariableKind::Required { secret: true },
                VariableKind::Required { secret: false },
            ],
            vec![
                (VariableKind::Neither, "[variables]"),
                (VariableKind::Both, "[variables]"),
            ],
        ),
    );
    let route = pick(
        vec!["/", "/hello/...", "/users/:id", "/a/", "/..."],
        vec![
            ("hello", "is invalid"),
            ("/a//b", "is invalid"),
            ("/:", "is invalid"),
            ("/a\nb", "is invalid"),
            ("/.../x", "is invalid"),
        ],
    );
    (
        name,
        base,
        prop::collection::vec(variable, 0..3),
        prop::collection::vec(component_spec(), 1..4),
        prop::collection::vec((route, 0..16usize), 0..4),
        prop::collection::vec(nats_spec(), 0..3),
    )
        .prop_map(
            |(name, base, mut variables, mut components, mut http, mut nats)| {
                // TOML refuses a key given twice; that is not what is tested here.
                let mut seen = std::collections::HashSet::new();
                variables.retain(|(name, _)| seen.insert(name.value));
                let mut seen = std::collections::HashSet::new();
                components.retain(|component| seen.insert(component.id.value));
                // Now and then (1 in 16) a reference is to a component never
                // defined: the one past the end.
                let count = components.len();
                let resolve = |index: usize| if index == 15 { count } else { index % count };
                http.iter_mut()
                    .for_each(|(_, component)| *component = resolve(*component));
                nats.iter_mut()
                    .for_each(|trigger| trigger.component = resolve(trigger.component));
                ManifestSpec {
                    name,
                    base,
                    variables,
                    components,
                    http,
                    nats,
                }
            },
        )
}

impl ManifestSpec {
    fn component_id(&self, index: usize) -> &'static str {
        self.components.get(index).map_or("missing", |c| c.id.value)
    }

    /// Every bad value in the spec, with what its error must say.
    fn faults(&self) -> Vec<&'static str> {
        let mut faults: Vec<&'static str> = Vec::new();
        faults.extend(self.name.fault);
        faults.extend(self.base.fault);
        for (name, kind) in &self.variables {
            faults.extend(name.fault);
            faults.extend(kind.fault);
        }
        for component in &self.components {
            faults.extend(component.id.fault);
            faults.extend(component.source.fault);
            faults.extend(component.hosts.iter().filter_map(|h| h.fault));
            faults.extend(component.timeout.as_ref().and_then(|p| p.fault));
            faults.extend(component.memory_limit.as_ref().and_then(|p| p.fault));
            faults.extend(component.max_request_body.as_ref().and_then(|p| p.fault));
            faults.extend(component.max_concurrency.as_ref().and_then(|p| p.fault));
            faults.extend(component.allowed_publish.iter().filter_map(|p| p.fault));
        }
        let mut routes = std::collections::HashSet::new();
        for (route, component) in &self.http {
            faults.extend(route.fault);
            if *component >= self.components.len() {
                faults.push("which is not defined");
            }
            if route.fault.is_none() && !routes.insert(route.value) {
                faults.push("is given twice");
            }
        }
        for trigger in &self.nats {
            faults.extend(trigger.subject.fault);
            if trigger.component >= self.components.len() {
                faults.push("which is not defined");
            }
            faults.extend(trigger.queue_group.as_ref().and_then(|p| p.fault));
            faults.extend(trigger.max_deliver.as_ref().and_then(|p| p.fault));
            faults.extend(trigger.ack_wait.as_ref().and_then(|p| p.fault));
            faults.extend(trigger.dead_letter_subject.as_ref().and_then(|p| p.fault));
        }
        faults
    }

    fn render(&self) -> String {
        let mut text = String::from("spin_manifest_version = 2\n\n[application]\n");
        text += &format!("name = {}\n", quoted(self.name.value));
        if let Some(base) = self.base.value {
            text += &format!("[application.trigger.http]\nbase = {}\n", quoted(base));
        }
        text += "\n[variables]\napi_host = { default = \"example.com\" }\n";
        for (name, kind) in &self.variables {
            let value = match kind.value {
                VariableKind::Default(default) => format!("{{ default = {} }}", quoted(default)),
                VariableKind::Required { secret } => {
                    format!("{{ required = true, secret = {secret} }}")
                }
                VariableKind::Neither => "{ secret = true }".to_string(),
                VariableKind::Both => "{ default = \"x\", required = true }".to_string(),
            };
            text += &format!("{} = {value}\n", key(name.value));
        }
        for (route, component) in &self.http {
            text += &format!(
                "\n[[trigger.http]]\nroute = {}\ncomponent = {}\n",
                quoted(route.value),
                quoted(self.component_id(*component))
            );
        }
        for trigger in &self.nats {
            text += &format!(
                "\n[[trigger.nats]]\nsubject = {}\ncomponent = {}\n",
                quoted(trigger.subject.value),
                quoted(self.component_id(trigger.component))
            );
            if let Some(group) = &trigger.queue_group {
                text += &format!("queue_group = {}\n", quoted(group.value));
            }
            if let Some(max) = &trigger.max_deliver {
                text += &format!("max_deliver = {}\n", max.value);
            }
            if let Some(wait) = &trigger.ack_wait {
                text += &format!("ack_wait = {}\n", quoted(wait.value));
            }
            if let Some(dead) = &trigger.dead_letter_subject {
                text += &format!("dead_letter_subject = {}\n", quoted(dead.value));
            }
        }
        for component in &self.components {
            let table = format!("component.{}", key(component.id.value));
            text += &format!("\n[{table}]\nsource = {}\n", quoted(component.source.value));
            let hosts: Vec<String> = component.hosts.iter().map(|h| quoted(h.value)).collect();
            text += &format!("allowed_outbound_hosts = [{}]\n", hosts.join(", "));
            text += &format!("[{table}.tool.spindle]\n");
            if let Some(timeout) = &component.timeout {
                text += &format!("timeout = {}\n", quoted(timeout.value));
            }
            if let Some(limit) = &component.memory_limit {
                text += &format!("memory_limit = {}\n", quoted(limit.value));
            }
            match component.max_request_body.as_ref().map(|p| &p.value) {
                Some(Size::Text(size)) => text += &format!("max_request_body = {}\n", quoted(size)),
                Some(Size::Bytes(bytes)) => text += &format!("max_request_body = {bytes}\n"),
                None => {}
            }
            if let Some(concurrency) = &component.max_concurrency {
                text += &format!("max_concurrency = {}\n", concurrency.value);
            }
            let publish: Vec<String> = component
                .allowed_publish
                .iter()
                .map(|p| quoted(p.value))
                .collect();
            text += &format!("allowed_publish = [{}]\n", publish.join(", "));
        }
        text
    }
}

/// `n` of `unit`, when it fits.
fn scaled(n: u64, unit: &str) -> Option<u64> {
    let per_unit: u64 = match unit {
        "ms" | "" | "B" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(per_unit)
}

/// Lowercase letters and digits in words joined by single `separator`s,
/// the first a letter; read one character at a time.
fn model_separated_words(text: &str, separator: char) -> bool {
    let mut previous: Option<char> = None;
    for c in text.chars() {
        let ok = match previous {
            None => c.is_ascii_lowercase(),
            Some(p) if p == separator => c.is_ascii_lowercase() || c.is_ascii_digit(),
            Some(_) => c == separator || c.is_ascii_lowercase() || c.is_ascii_digit(),
        };
        if !ok {
            return false;
        }
        previous = Some(c);
    }
    previous.is_some_and(|last| last != separator)
}

/// A pool of pieces that sit at the grammars' edges.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a",
        "Z",
        "0",
        "-",
        "_",
        "--",
        "é",
        " ",
        "\n",
        "{{",
        "}}",
        "{{ a }}",
        "/",
        "//",
        ":",
        "...",
        ".",
        "*",
        ">",
        "ms",
        "s",
        "h",
        "MiB",
        "GiB",
        "B",
        "99999999999999999999",
    ])
}

fn near_text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..6).prop_map(|pieces| pieces.concat())
}

/// A valid manifest's text with a few edits: characters dropped or
/// inserted, lines repeated or dropped; TOML that is nearly right.
fn mangled_manifest() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0..4u8,
        prop::sample::select(vec![
            "\"", "[", "]", "=", "\n", "{{", "/", "...", ":", "é", "\0", "#", "[[", "{", "}", ",",
        ]),
    );
    (manifest_spec(), prop::collection::vec(edit, 1..4)).prop_map(|(spec, edits)| {
        let mut text = spec.render();
        for (at, how, insert) in edits {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let line = at.index(lines.len());
            match how {
                0 => {
                    lines.remove(line);
                }
                1 => {
                    let copy = lines[line].clone();
                    lines.insert(line, copy);
                }
                _ => {
                    let chars: Vec<char> = lines[line].chars().collect();
                    let column = at.index(chars.len() + 1);
                    let mut edited: String = chars[..column].iter().collect();
                    if how == 2 {
                        edited.push_str(insert);
                        edited.extend(&chars[column..]);
                    } else {
                        edited.extend(chars.iter().skip(column + 1));
                    }
                    lines[line] = edited;
                }
            }
            text = lines.join("\n");
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_manifest_or_a_one_line_error(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        mangled_manifest(),
    ]) {
        if let Err(error) = parse(&text, Path::new(MANIFEST)) {
            check_error(MANIFEST, &error)?;
        }
    }

    #[test]
    fn a_manifest_parses_to_what_it_says_or_names_its_fault(spec in manifest_spec()) {
        let text = spec.render();
        let faults = spec.faults();
        let app = match parse(&text, Path::new(MANIFEST)) {
            Ok(app) => app,
            Err(error) => {
                let message = check_error(MANIFEST, &error)?;
                prop_assert!(!faults.is_empty(), "refused a good manifest: {message}\n{text}");
                if let [fault] = faults.as_slice() {
                    prop_assert!(message.contains(fault), "{fault:?} not in {message:?}");
                }
                return Ok(());
            }
        };
        prop_assert!(faults.is_empty(), "accepted {faults:?}:\n{text}");
        prop_assert_eq!(&app.name, spec.name.value);
        prop_assert_eq!(&app.http_base, spec.base.value.unwrap_or("/"));
        prop_assert_eq!(app.variables.len(), spec.variables.len() + 1);
        for (name, kind) in &spec.variables {
            let variable = &app.variables[name.value];
            match kind.value {
                VariableKind::Default(default) => {
                    prop_assert_eq!(variable.default.as_deref(), Some(default));
                    prop_assert!(!variable.required);
                }
                VariableKind::Required { secret } => {
                    prop_assert!(variable.required && variable.default.is_none());
                    prop_assert_eq!(variable.secret, secret);
                }
                _ => prop_assert!(false, "a bad variable was accepted"),
            }
        }
        prop_assert_eq!(app.components.len(), spec.components.len());
        for component in &spec.components {
            let parsed = &app.components[component.id.value];
            prop_assert_eq!(&parsed.source, &Path::new("apps/demo").join(component.source.value));
            let hosts: Vec<&str> = component.hosts.iter().map(|h| h.value).collect();
            prop_assert_eq!(&parsed.allowed_outbound_hosts, &hosts);
            let settings = &parsed.spindle;
            prop_assert_eq!(settings.timeout, component.timeout.as_ref().map(|t| parse_duration(t.value).unwrap_or_default()));
            prop_assert_eq!(settings.max_concurrency, component.max_concurrency.as_ref().map(|c| c.value as u32));
            let publish: Vec<&str> = component.allowed_publish.iter().map(|p| p.value).collect();
            prop_assert_eq!(&settings.allowed_publish, &publish);
        }
        let routes: Vec<(HttpRoute, &str)> = spec
            .http
            .iter()
            .map(|(route, component)| (HttpRoute::Route(route.value.to_string()), spec.component_id(*component)))
            .collect();
        let parsed: Vec<(HttpRoute, &str)> = app
            .http_triggers
            .iter()
            .map(|trigger| (trigger.route.clone(), trigger.component.as_str()))
            .collect();
        prop_assert_eq!(parsed, routes);
        prop_assert_eq!(app.nats_triggers.len(), spec.nats.len());
        for (trigger, spec_trigger) in app.nats_triggers.iter().zip(&spec.nats) {
            prop_assert_eq!(&trigger.subject, spec_trigger.subject.value);
            prop_assert_eq!(&trigger.component, spec.component_id(spec_trigger.component));
            prop_assert_eq!(trigger.queue_group.as_deref(), spec_trigger.queue_group.as_ref().map(|g| g.value));
            prop_assert_eq!(i64::from(trigger.max_deliver), spec_trigger.max_deliver.as_ref().map_or(5, |m| m.value));
            let dead = spec_trigger.dead_letter_subject.as_ref().map_or_else(
                || format!("spindle.dead-letter.{}", trigger.component),
                |d| d.value.to_string(),
            );
            prop_assert_eq!(&trigger.dead_letter_subject, &dead);
        }
    }

    #[test]
    fn durations_and_sizes_read_back_what_was_written(
        n in prop_oneof![0u64..1000, any::<u64>()],
        unit in prop::sample::select(vec!["ms", "s", "m", "h", "", "B", "KiB", "MiB", "GiB", "d", "MB"]),
        space in prop::sample::select(vec!["", " ", "  "]),
    ) {
        let text = format!("{space}{n}{space}{unit}{space}");
        let is_duration = matches!(unit, "ms" | "s" | "m" | "h");
        let is_size = matches!(unit, "" | "B" | "KiB" | "MiB" | "GiB");
        let expected = |fits: bool| if n > 0 && fits { scaled(n, unit) } else { None };
        prop_assert_eq!(
            parse_duration(&text).ok(),
            expected(is_duration).map(Duration::from_millis),
            "{:?}", text
        );
        prop_assert_eq!(parse_size(&text).ok(), expected(is_size), "{:?}", text);
    }

    #[test]
    fn grammars_never_panic_and_ids_follow_the_model(text in prop_oneof![near_text(), any::<String>()]) {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = check_route(&text);
        let _ = template_references(&text);
        prop_assert_eq!(check_component_id(&text).is_ok(), model_separated_words(&text, '-'), "{:?}", text);
        prop_assert_eq!(check_variable_name(&text).is_ok(), model_separated_words(&text, '_'), "{:?}", text);
    }

    #[test]
    fn templates_give_back_the_names_put_in(
        parts in prop::collection::vec(
            (
                prop::sample::select(vec!["", "https://", "a}", "}", "}}", ":", " ", "é"]),
                prop::sample::select(vec!["host", "port", "api_key"]),
                prop::sample::select(vec!["", " ", "  "]),
            ),
            0..4,
        ),
        tail in prop::sample::select(vec!["", "/x", "}", "}}"]),
    ) {
        let mut template = String::new();
        for (text, name, space) in &parts {
            template += &format!("{text}{{{{{space}{name}{space}}}}}");
        }
        template += tail;
        let names: Vec<String> = parts.iter().map(|(_, name, _)| name.to_string()).collect();
        prop_assert_eq!(template_references(&template), Ok(names), "{:?}", template);
        let unterminated = format!("{template}{{{{ host");
        prop_assert_eq!(
            template_references(&unterminated),
            Err(SyntaxError::UnterminatedTemplate(unterminated.clone()))
        );
    }

    #[test]
    fn a_route_error_quotes_the_route(route in near_text()) {
        if let Err(error) = check_route(&route) {
            let SyntaxError::Route(quoted, _) = &error else {
                return Err(TestCaseError::fail(format!("not a route error: {error:?}")));
            };
            prop_assert_eq!(quoted, &route);
        }
    }
}

/// A runtime config, table by table, each value good or bad.
#[derive(Debug, Clone)]
struct RuntimeSpec {
    key_value: Vec<(Pick<&'static str>, Pick<StoreKind>)>,
    databases: Vec<(&'static str, Pick<&'static str>)>,
    messaging: Option<Pick<&'static str>>,
    policies: Vec<PolicySpec>,
    providers: Vec<Pick<Provider>>,
}

/// An `[[outbound_http]]` entry: host, timeout, breaker_failures.
type PolicySpec = (
    Pick<&'static str>,
    Pick<Option<&'static str>>,
    Pick<Option<i64>>,
);

#[derive(Debug, Clone)]
enum StoreKind {
    Spin(Option<&'static str>),
    Redis(&'static str),
    Unknown,
}

#[derive(Debug, Clone)]
enum Provider {
    Env(Option<&'static str>, Option<&'static str>),
    Vault,
}

fn runtime_spec() -> impl Strategy<Value = RuntimeSpec> {
    let store = (
        pick(vec!["default", "cache", "a.b", "é", "a\nb"], vec![]),
        pick(
            vec![
                StoreKind::Spin(None),
                StoreKind::Spin(Some("data/kv.db")),
                StoreKind::Spin(Some("/var/kv.db")),
                StoreKind::Redis("redis://localhost:6379"),
                StoreKind::Redis("rediss://user:pw@host"),
            ],
            vec![
                (StoreKind::Redis("http://localhost"), "[key_value_store."),
                (StoreKind::Redis("redis:/x"), "[key_value_store."),
                (StoreKind::Unknown, "azure_cosmos"),
            ],
        ),
    );
    let database = (
        prop::sample::select(vec!["orders", "users"]),
        pick(
            vec!["postgres://app@localhost/orders", "postgresql://x"],
            vec![("mysql://x", "[database."), ("", "[database.")],
        ),
    );
    let messaging = pick(
        vec!["nats://localhost:4222", "tls://nats:4222"],
        vec![("http://x", "[messaging]")],
    );
    let policy = (
        pick(
            vec!["*", "*.example.com", "api.example.com"],
            vec![
                ("http://x", "[[outbound_http]]"),
                ("a*b", "[[outbound_http]]"),
                ("", "[[outbound_http]]"),
                ("*.*.x", "[[outbound_http]]"),
                ("a b", "[[outbound_http]]"),
            ],
        ),
        pick(
            vec![None, Some("1500ms")],
            vec![(Some("1.5s"), "is not a valid duration")],
        ),
        pick(vec![None, Some(3i64)], vec![(Some(0), "breaker_failures")]),
    );
    let provider = pick(
        vec![
            Provider::Env(None, None),
            Provider::Env(Some("APP"), Some("app.env")),
        ],
        vec![(Provider::Vault, "vault")],
    );
    (
        prop::collection::vec(store, 0..3),
        prop::collection::vec(database, 0..2),
        prop::option::of(messaging),
        prop::collection::vec(policy, 0..3),
        prop::collection::vec(provider, 0..2),
    )
        .prop_map(
            |(mut key_value, mut databases, messaging, policies, providers)| {
                let mut seen = std::collections::HashSet::new();
                key_value.retain(|(label, _)| seen.insert(label.value));
                let mut seen = std::collections::HashSet::new();
                databases.retain(|(label, _)| seen.insert(*label));
                RuntimeSpec {
                    key_value,
                    databases,
                    messaging,
                    policies,
                    providers,
                }
            },
        )
}

impl RuntimeSpec {
    fn faults(&self) -> Vec<&'static str> {
        let mut faults = Vec::new();
        faults.extend(self.key_value.iter().filter_map(|(_, kind)| kind.fault));
        faults.extend(self.databases.iter().filter_map(|(_, url)| url.fault));
        faults.extend(self.messaging.as_ref().and_then(|m| m.fault));
        for (host, timeout, failures) in &self.policies {
            faults.extend(host.fault);
            faults.extend(timeout.fault);
            faults.extend(failures.fault);
        }
        faults.extend(self.providers.iter().filter_map(|p| p.fault));
        faults
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for (label, kind) in &self.key_value {
            text += &format!("[key_value_store.{}]\n", key(label.value));
            text += &match kind.value {
                StoreKind::Spin(None) => "type = \"spin\"\n".to_string(),
                StoreKind::Spin(Some(path)) => {
                    format!("type = \"spin\"\npath = {}\n", quoted(path))
                }
                StoreKind::Redis(url) => format!("type = \"redis\"\nurl = {}\n", quoted(url)),
                StoreKind::Unknown => "type = \"azure_cosmos\"\n".to_string(),
            };
        }
        for (label, url) in &self.databases {
            text += &format!("[database.{label}]\nurl = {}\n", quoted(url.value));
        }
        if let Some(messaging) = &self.messaging {
            text += &format!("[messaging]\nurl = {}\n", quoted(messaging.value));
        }
        for (host, timeout, failures) in &self.policies {
            text += &format!("[[outbound_http]]\nhost = {}\n", quoted(host.value));
            if let Some(timeout) = timeout.value {
                text += &format!("timeout = {}\n", quoted(timeout));
            }
            if let Some(failures) = failures.value {
                text += &format!("breaker_failures = {failures}\n");
            }
        }
        for provider in &self.providers {
            text += "[[variables_provider]]\n";
            text += &match provider.value {
                Provider::Env(prefix, dotenv) => {
                    let mut table = "type = \"env\"\n".to_string();
                    if let Some(prefix) = prefix {
                        table += &format!("prefix = {}\n", quoted(prefix));
                    }
                    if let Some(dotenv) = dotenv {
                        table += &format!("dotenv_path = {}\n", quoted(dotenv));
                    }
                    table
                }
                Provider::Vault => "type = \"vault\"\nurl = \"http://vault\"\n".to_string(),
            };
        }
        text
    }
}

/// Host names as a person compares them: case does not matter.
fn model_policy_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(domain) => {
            let labels: Vec<&str> = host.split('.').collect();
            let domain_labels: Vec<&str> = domain.split('.').collect();
            labels.len() > domain_labels.len()
                && labels[labels.len() - domain_labels.len()..] == domain_labels[..]
                && labels[..labels.len() - domain_labels.len()]
                    .iter()
                    .all(|l| !l.is_empty())
        }
        None => pattern == host,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_runtime_config_or_a_one_line_error(text in prop_oneof![
        any::<String>(),
        runtime_spec().prop_flat_map(|spec| {
            let text = spec.render();
            (Just(text.clone()), 0..=text.len(), prop::sample::select(vec!["", "\"", "[", "]", "=", "\n", "é", "\0"]))
                .prop_map(|(text, at, insert)| {
                    let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                    format!("{}{insert}{}", &text[..at], &text[at..])
                })
        }),
    ]) {
        if let Err(error) = parse_runtime_config(&text, Path::new(RUNTIME_CONFIG)) {
            check_error(RUNTIME_CONFIG, &error)?;
        }
    }

    #[test]
    fn a_runtime_config_parses_to_what_it_says_or_names_its_fault(spec in runtime_spec()) {
        let text = spec.render();
        let faults = spec.faults();
        let config = match parse_runtime_config(&text, Path::new(RUNTIME_CONFIG)) {
            Ok(config) => config,
            Err(error) => {
                let message = check_error(RUNTIME_CONFIG, &error)?;
                prop_assert!(!faults.is_empty(), "refused a good config: {message}\n{text}");
                if let [fault] = faults.as_slice() {
                    prop_assert!(message.contains(fault), "{fault:?} not in {message:?}");
                }
                return Ok(());
            }
        };
        prop_assert!(faults.is_empty(), "accepted {faults:?}:\n{text}");
        prop_assert_eq!(config.key_value_stores.len(), spec.key_value.len());
        for (label, kind) in &spec.key_value {
            let expected = match kind.value {
                StoreKind::Spin(path) => KeyValueStoreConfig::Spin {
                    path: path.map(|path| Path::new("/etc/spindle").join(path)),
                },
                StoreKind::Redis(url) => KeyValueStoreConfig::Redis { url: url.into() },
                StoreKind::Unknown => unreachable!("a fault"),
            };
            prop_assert_eq!(&config.key_value_stores[label.value], &expected);
        }
        for (label, url) in &spec.databases {
            prop_assert_eq!(&config.databases[*label].url, url.value);
        }
        prop_assert_eq!(config.messaging.map(|m| m.url), spec.messaging.as_ref().map(|m| m.value.to_string()));
        let hosts: Vec<&str> = config.outbound_http.iter().map(|p| p.host.as_str()).collect();
        let expected: Vec<&str> = spec.policies.iter().map(|(host, ..)| host.value).collect();
        prop_assert_eq!(hosts, expected);
        for (provider, spec_provider) in config.variables_providers.iter().zip(&spec.providers) {
            let super::VariablesProvider::Env { prefix, dotenv_path } = provider;
            let Provider::Env(spec_prefix, spec_dotenv) = spec_provider.value else {
                unreachable!("a fault")
            };
            prop_assert_eq!(prefix.as_deref(), spec_prefix);
            prop_assert_eq!(dotenv_path.clone(), spec_dotenv.map(|d| PathBuf::from("/etc/spindle").join(d)));
        }
    }

    #[test]
    fn outbound_policies_match_hosts_without_case(
        pattern in prop_oneof![
            Just("*".to_string()),
            prop::collection::vec(prop::sample::select(vec!["api", "Example", "com", "x"]), 1..3)
                .prop_map(|labels| labels.join(".")),
            prop::collection::vec(prop::sample::select(vec!["Example", "com", "x"]), 1..3)
                .prop_map(|labels| format!("*.{}", labels.join("."))),
        ],
        host in prop::collection::vec(prop::sample::select(vec!["api", "example", "EXAMPLE", "com", "x", "a"]), 1..4)
            .prop_map(|labels| labels.join(".").to_ascii_lowercase()),
    ) {
        let policy = OutboundPolicy {
            host: pattern.clone(),
            timeout: None,
            retries: None,
            breaker_failures: None,
            breaker_cooldown: None,
        };
        prop_assert_eq!(policy.matches(&host), model_policy_matches(&pattern, &host), "{} vs {}", pattern, host);
    }
}
