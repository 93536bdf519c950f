//! `spin:variables` end to end: a spin-sdk 7 guest reads its component
//! variables, rendered from app variables given by the manifest, the
//! environment, a `.env` file and `--variable`.

mod support;

use support::{App, guest_wasm};

fn manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "variables"

[variables]
greeting = {{ default = "hello" }}
audience = {{ default = "world" }}
secret_key = {{ required = true, secret = true }}

[[trigger.http]]
route = "/vars/..."
component = "reader"

[component.reader]
source = "{}"
[component.reader.variables]
message = "{{{{ greeting }}}}, {{{{ audience }}}}!"
key = "{{{{ secret_key }}}}"
"#,
        guest_wasm("variables-reader").display()
    )
}

#[tokio::test]
async fn component_variable_renders_manifest_defaults() {
    let app = App::new(&manifest());
    let spindle = app.start_with(&["--variable", "secret_key=s3cret"]);
    let reply = spindle.get("/vars/message").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello, world!"));
    assert_eq!(spindle.get("/vars/key").await.body, "s3cret");
}

#[tokio::test]
async fn command_line_and_environment_override_defaults() {
    let app = App::new(&manifest());
    let spindle = app.start_with_env(
        &[
            "--variable",
            "secret_key=k",
            "--variable",
            "audience=spindle",
        ],
        &[("SPIN_VARIABLE_GREETING", "howdy")],
    );
    assert_eq!(spindle.get("/vars/message").await.body, "howdy, spindle!");
}

#[tokio::test]
async fn dot_env_beside_the_manifest_provides_values() {
    let app = App::new(&manifest());
    let env_file = app.manifest_path().with_file_name(".env");
    std::fs::write(&env_file, "SPIN_VARIABLE_SECRET_KEY=from-dotenv\n").expect("write .env");
    let spindle = app.start();
    assert_eq!(spindle.get("/vars/key").await.body, "from-dotenv");
}

#[tokio::test]
async fn undefined_variable_is_the_interfaces_undefined_error() {
    let app = App::new(&manifest());
    let spindle = app.start_with(&["--variable", "secret_key=k"]);
    let reply = spindle.get("/vars/nope").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.body.starts_with("Error::Undefined("),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn invalid_name_is_the_interfaces_invalid_name_error() {
    let app = App::new(&manifest());
    let spindle = app.start_with(&["--variable", "secret_key=k"]);
    let reply = spindle.get("/vars/Not-Valid").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.body.starts_with("Error::InvalidName("),
        "{}",
        reply.body
    );
}

#[test]
fn missing_required_variable_stops_up_naming_it() {
    let (code, stderr) = App::new(&manifest()).run_up_expecting_failure();
    assert_ne!(code, 0);
    assert!(stderr.contains("`secret_key` is required"), "{stderr}");
}

#[tokio::test]
async fn an_env_variables_provider_reads_its_prefix_and_its_dotenv_file() {
    let app = App::new(&manifest());
    let config = app.dir().join("runtime-config.toml");
    std::fs::write(
        app.dir().join("app.env"),
        "MYAPP_AUDIENCE=\"provider file\"\n",
    )
    .expect("write the dotenv file");
    std::fs::write(
        &config,
        "[[variables_provider]]\ntype = \"env\"\nprefix = \"MYAPP\"\ndotenv_path = \"app.env\"\n",
    )
    .expect("write the runtime config");
    let spindle = app.start_with_env(
        &[
            "--runtime-config-file",
            config.to_str().expect("utf-8 path"),
        ],
        &[("MYAPP_SECRET_KEY", "from-provider-env")],
    );
    assert_eq!(
        spindle.get("/vars/message").await.body,
        "hello, provider file!"
    );
    assert_eq!(spindle.get("/vars/key").await.body, "from-provider-env");
}

#[tokio::test]
async fn a_secret_store_variables_provider_stops_start_up_naming_it() {
    let app = App::new(&manifest());
    let config = app.dir().join("runtime-config.toml");
    std::fs::write(
        &config,
        "[[variables_provider]]\ntype = \"vault\"\nurl = \"http://127.0.0.1:8200\"\n",
    )
    .expect("write the runtime config");
    let (code, stderr) = app.run_up_expecting_failure_with(&[
        "--runtime-config-file",
        config.to_str().expect("utf-8 path"),
        "--variable",
        "secret_key=k",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("variables_provider") && stderr.contains("vault"),
        "{stderr}"
    );
}

/// Spin 3's `wasi:config/store` reads the same component variables.
#[tokio::test]
async fn wasi_config_reads_the_component_variables() {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "config"

[variables]
audience = {{ default = "world" }}

[[trigger.http]]
route = "/..."
component = "reader"

[component.reader]
source = "{}"
[component.reader.variables]
greeting = "hello, {{{{ audience }}}}"
mode = "test"
"#,
        guest_wasm("config-reader").display()
    );
    let app = App::new(&manifest);
    let spindle = app.start_with(&["--variable", "audience=config"]);
    let reply = spindle.get("/greeting").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello, config"));
    assert_eq!(spindle.get("/missing").await.status, 404);
    let all = spindle.get("/").await;
    assert_eq!(
        (all.status, all.body.as_str()),
        (200, "greeting=hello, config\nmode=test\n")
    );
}
