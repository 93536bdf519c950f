//! `spin:sqlite`, end to end: the `sqlite-ops` guest runs statements through
//! spin-sdk's async `Connection` and through the interface's synchronous
//! functions against the real `spindle up`.

mod support;

use support::{App, Spindle, guest_wasm};

/// A spin.toml with one component, `db`, on `/db`, granted `databases`.
fn manifest(databases: &[&str]) -> String {
    let databases: Vec<String> = databases
        .iter()
        .map(|label| format!("\"{label}\""))
        .collect();
    format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"sqlite-test\"\n\
         [[trigger.http]]\nroute = \"/db\"\ncomponent = \"db\"\n\
         [component.db]\nsource = \"{}\"\nsqlite_databases = [{}]\n",
        guest_wasm("sqlite-ops").display(),
        databases.join(", ")
    )
}

/// Runs one scenario (`op=roundtrip`, ...) and expects a 200.
async fn ok(spindle: &Spindle, query: &str) -> String {
    let reply = spindle.get(&format!("/db?{query}")).await;
    assert_eq!(reply.status, 200, "{query}: {reply:?}");
    reply.body
}

/// What `sqlite-ops` reports after inserting its sample row as row `id`.
fn sample_row_read_back(id: i64) -> String {
    format!(
        "id={id} changes=1 columns=row_id,i,r,t,b,n \
         rows=[Integer({id})|Integer(-7)|Real(2.5)|Text(héllo)|Blob(00 01 ff)|Null]"
    )
}

#[tokio::test]
async fn every_value_type_round_trips_through_the_async_api() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();

    assert_eq!(ok(&spindle, "op=roundtrip").await, sample_row_read_back(1));
    assert_eq!(ok(&spindle, "op=roundtrip").await, sample_row_read_back(2));
}

#[tokio::test]
async fn every_value_type_round_trips_through_the_sync_api() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();

    assert_eq!(
        ok(&spindle, "op=sync-roundtrip").await,
        sample_row_read_back(1)
    );
    assert_eq!(
        ok(&spindle, "op=sync-roundtrip").await,
        sample_row_read_back(2)
    );
}

#[tokio::test]
async fn database_not_granted_is_access_denied() {
    let app = App::new(&manifest(&["default"]));
    let runtime_config = app.manifest_path().with_file_name("runtime-config.toml");
    // Configured for the app, but not granted to this component.
    std::fs::write(
        &runtime_config,
        "[sqlite_database.other]\ntype = \"spin\"\n",
    )
    .expect("writing the runtime config");
    let spindle = app.start_with(&[
        "--runtime-config-file",
        runtime_config.to_str().expect("a UTF-8 path"),
    ]);

    let reply = spindle.get("/db?op=open&db=other").await;

    assert_eq!(reply.status, 500, "{reply:?}");
    assert_eq!(reply.body, "Error::AccessDenied");
}

#[tokio::test]
async fn attach_and_vacuum_into_are_access_denied() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();
    let file = app.dir().join("elsewhere.db");

    let reply = spindle
        .get(&format!("/db?op=escape&file={}", file.display()))
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Error::AccessDenied;Error::AccessDenied");
    assert!(!file.exists(), "VACUUM INTO wrote {}", file.display());
}

#[tokio::test]
async fn sqlite_flag_seeds_the_default_database_before_serving() {
    let app = App::new(&manifest(&["default"]));
    let seed = app.manifest_path().with_file_name("seed.sql");
    std::fs::write(
        &seed,
        "CREATE TABLE seeded (id INTEGER PRIMARY KEY, name TEXT);\n\
         INSERT INTO seeded (name) VALUES ('alpha');\n",
    )
    .expect("writing the seed file");
    let spindle = app.start_with(&[
        "--sqlite",
        &format!("@{}", seed.display()),
        "--sqlite",
        "INSERT INTO seeded (name) VALUES ('beta')",
    ]);

    assert_eq!(ok(&spindle, "op=seeded").await, "1:alpha,2:beta");
}
