//! Checks SQLite as an app built with spin-sdk 5 uses it:
//! `GET /?api=v2|v3&db=<label>` runs the same checks through
//! `fermyon:spin/sqlite@2.0.0` (`v2`) or `spin:sqlite/sqlite@3.0.0` (`v3`,
//! which also reports `last-insert-rowid` and `changes`) and answers 200
//! `ok`, 403 with the interface's error when the host refuses the database,
//! or 500 with what went wrong.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

mod v2 {
    use spin_sdk::sqlite as api;
    include!("exercise.rs");
}

mod v3 {
    use spin_sdk::sqlite3 as api;
    include!("exercise.rs");

    /// What only 3.0.0 has: the counters of the connection's last insert.
    pub fn counters(label: &str) -> Result<(), String> {
        let connection = api::Connection::open(label).map_err(describe)?;
        connection
            .execute(
                "CREATE TABLE IF NOT EXISTS counted (id INTEGER PRIMARY KEY)",
                &[],
            )
            .map_err(describe)?;
        connection
            .execute("INSERT INTO counted (id) VALUES (NULL), (NULL)", &[])
            .map_err(describe)?;
        let rowid = connection.last_insert_rowid();
        let changes = connection.changes();
        if changes == 2 && rowid >= 2 {
            Ok(())
        } else {
            Err(format!("changes {changes}, last-insert-rowid {rowid}"))
        }
    }
}

#[http_component]
fn handle(request: Request) -> Response {
    let query = request.query();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let label = param("db").unwrap_or_else(|| "default".to_owned());
    let result = match param("api").as_deref() {
        Some("v2") => v2::exercise(&label, "sdk5_v2"),
        Some("v3") => v3::exercise(&label, "sdk5_v3").and_then(|()| v3::counters(&label)),
        other => return Response::new(400, format!("unknown api {other:?}")),
    };
    respond(result)
}

fn respond(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => Response::new(200, "ok"),
        Err(reason) if reason == "access-denied" => Response::new(403, reason),
        Err(reason) => Response::new(500, reason),
    }
    .into_response()
}
