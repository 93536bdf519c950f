//! Bad manifests stop `spindle up` before it binds: exit code non-zero and one
//! last line `Error: …` that names the problem — the line an operator reads.

mod support;

use support::{App, guest_wasm, run_up_expecting_failure};

/// Checks that the run failed and that its last stderr line is the error, the
/// only line that mentions `key_fact`. Returns that line for further checks.
fn assert_failed_naming(exit_code: i32, stderr: &str, key_fact: &str) -> String {
    assert_ne!(exit_code, 0, "spindle up succeeded; stderr:\n{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("spindle up failed ({exit_code}) without a word on stderr"));
    assert!(
        last.starts_with("Error: "),
        "the last stderr line is not the error:\n{stderr}"
    );
    assert!(
        last.contains(key_fact),
        "the error does not mention {key_fact:?}:\n{stderr}"
    );
    let mentions = stderr
        .lines()
        .filter(|line| line.contains(key_fact))
        .count();
    assert_eq!(
        mentions, 1,
        "{key_fact:?} is reported more than once:\n{stderr}"
    );
    last.to_owned()
}

/// The start of every manifest here: a valid application header.
const HEADER: &str = "spin_manifest_version = 2\n\n[application]\nname = \"bad-app\"\n";

#[test]
fn unknown_component_key_is_rejected() {
    let manifest = format!(
        "{HEADER}
[[trigger.http]]
route = \"/x\"
component = \"x\"

[component.x]
source = \"{}\"
sorce = \"typo.wasm\"
",
        guest_wasm("hello").display()
    );

    let (code, stderr) = run_up_expecting_failure(&manifest);

    assert_failed_naming(code, &stderr, "unknown field `sorce`");
}

#[test]
fn trigger_naming_a_missing_component_is_rejected() {
    let manifest = format!(
        "{HEADER}
[[trigger.http]]
route = \"/x\"
component = \"ghost\"

[component.x]
source = \"{}\"
",
        guest_wasm("hello").display()
    );

    let (code, stderr) = run_up_expecting_failure(&manifest);

    assert_failed_naming(code, &stderr, "ghost");
}

#[test]
fn route_without_leading_slash_is_rejected() {
    let manifest = format!(
        "{HEADER}
[[trigger.http]]
route = \"no-slash\"
component = \"x\"

[component.x]
source = \"{}\"
",
        guest_wasm("hello").display()
    );

    let (code, stderr) = run_up_expecting_failure(&manifest);

    assert_failed_naming(code, &stderr, "no-slash");
}

#[test]
fn missing_wasm_file_is_reported_with_a_build_hint() {
    // Relative to the manifest, as `spin new` writes it, and never built.
    let manifest = format!(
        "{HEADER}
[[trigger.http]]
route = \"/x\"
component = \"x\"

[component.x]
source = \"target/wasm32-wasip2/release/never_built.wasm\"
"
    );

    let (code, stderr) = run_up_expecting_failure(&manifest);

    let error = assert_failed_naming(code, &stderr, "never_built.wasm");
    assert!(
        error.contains("spindle build"),
        "the error does not say how to build it: {error}"
    );
}

#[test]
fn missing_manifest_file_is_reported_with_its_path() {
    let app = App::without_manifest();

    let (code, stderr) = app.run_up_expecting_failure();

    assert_failed_naming(code, &stderr, &app.manifest_path().display().to_string());
}

#[test]
fn bad_max_request_body_is_rejected_naming_the_key() {
    for (value, problem) in [
        ("\"16MB\"", "\"16MB\" is not a valid size"),
        ("0", "\"0\" is not a valid size"),
    ] {
        let manifest = format!(
            "{HEADER}
[[trigger.http]]
route = \"/x\"
component = \"x\"

[component.x]
source = \"{}\"

[component.x.tool.spindle]
max_request_body = {value}
",
            guest_wasm("hello").display()
        );

        let (code, stderr) = run_up_expecting_failure(&manifest);

        let error = assert_failed_naming(code, &stderr, "tool.spindle.max_request_body");
        assert!(error.contains(problem), "{error}");
    }
}
