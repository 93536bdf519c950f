//! Test guest: SQLite through spin-sdk, one scenario per request, chosen by
//! the query string (`?op=roundtrip&db=default`). `roundtrip` uses the SDK's
//! own (async) `Connection`; `sync-roundtrip` the interface's synchronous
//! functions, which the SDK keeps under `sqlite::wit`. Answers 200 with what
//! it read back, or 500 with the interface error's Debug text.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::sqlite::{Connection, Error, Value};

/// Runs the scenario named by the query and reports its outcome.
#[http_service]
async fn handle(req: Request) -> Result<impl IntoResponse, http::Error> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let (status, body) = match run(&query).await {
        Ok(result) => (200, result),
        Err(error) => (500, format!("{error:?}")),
    };
    http::Response::builder().status(status).body(body)
}

/// One row holding every kind of value, bound as parameters.
fn sample_row() -> [Value; 5] {
    [
        Value::Integer(-7),
        Value::Real(2.5),
        Value::text("héllo"),
        Value::blob([0, 1, 255]),
        Value::Null,
    ]
}

async fn run(query: &str) -> Result<String, Error> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
            .unwrap_or_else(|| "default".to_owned())
    };
    let db = param("db");
    match param("op").as_str() {
        "open" => {
            Connection::open(&db).await?;
            Ok("opened".into())
        }
        "roundtrip" => roundtrip(&db).await,
        "sync-roundtrip" => sync_roundtrip(&db),
        "seeded" => {
            let db = Connection::open(&db).await?;
            let mut result = db
                .execute("SELECT id, name FROM seeded ORDER BY id", [])
                .await?;
            let mut names = Vec::new();
            while let Some(row) = result.next().await {
                let id: i64 = row.get(0).unwrap_or_default();
                let name: &str = row.get(1).unwrap_or_default();
                names.push(format!("{id}:{name}"));
            }
            result.result().await?;
            Ok(names.join(","))
        }
        "escape" => escape(&db, &param("file")).await,
        other => Err(Error::Io(format!("unknown op `{other}`"))),
    }
}

/// Tries to reach `file` from the granted database (ATTACH, VACUUM INTO);
/// answers each attempt's outcome, `;`-separated.
async fn escape(db: &str, file: &str) -> Result<String, Error> {
    let db = Connection::open(db).await?;
    let mut outcomes = Vec::new();
    for statement in [
        format!("ATTACH DATABASE '{file}' AS other"),
        format!("VACUUM INTO '{file}'"),
    ] {
        let outcome = match db.execute(statement, []).await {
            Ok(result) => result.result().await,
            Err(error) => Err(error),
        };
        outcomes.push(match outcome {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("{error:?}"),
        });
    }
    Ok(outcomes.join(";"))
}

/// Creates a table, inserts [`sample_row`] and reads it back by its rowid.
async fn roundtrip(db: &str) -> Result<String, Error> {
    let db = Connection::open(db).await?;
    db.execute(
        "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)",
        [],
    )
    .await?
    .result()
    .await?;
    db.execute(
        "INSERT INTO things (i, r, t, b, n) VALUES (?, ?, ?, ?, ?)",
        sample_row(),
    )
    .await?
    .result()
    .await?;
    let id = db.last_insert_rowid().await;
    let changes = db.changes().await;
    let result = db
        .execute(
            "SELECT id AS row_id, i, r, t, b, n FROM things WHERE id = ?1",
            [Value::Integer(id)],
        )
        .await?;
    let columns = result.columns().join(",");
    let rows = result.collect().await?;
    Ok(describe(
        id,
        changes,
        &columns,
        rows.iter().map(|row| &row.values),
    ))
}

/// [`roundtrip`] through the interface's synchronous functions.
fn sync_roundtrip(db: &str) -> Result<String, Error> {
    use spin_sdk::sqlite::wit::sqlite::Connection;
    let db = Connection::open(db)?;
    db.execute(
        "CREATE TABLE IF NOT EXISTS sync_things (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)",
        &[],
    )?;
    db.execute(
        "INSERT INTO sync_things (i, r, t, b, n) VALUES (?, ?, ?, ?, ?)",
        &sample_row(),
    )?;
    let id = db.last_insert_rowid();
    let changes = db.changes();
    let result = db.execute(
        "SELECT id AS row_id, i, r, t, b, n FROM sync_things WHERE id = $1",
        &[Value::Integer(id)],
    )?;
    let columns = result.columns.join(",");
    Ok(describe(
        id,
        changes,
        &columns,
        result.rows.iter().map(|row| &row.values),
    ))
}

/// `id=1 changes=1 columns=a,b rows=[Integer(1)|Text(x)]`.
fn describe<'a>(
    id: i64,
    changes: u64,
    columns: &str,
    rows: impl Iterator<Item = &'a Vec<Value>>,
) -> String {
    let rows: Vec<String> = rows
        .map(|values| {
            let cells: Vec<String> = values.iter().map(render).collect();
            format!("[{}]", cells.join("|"))
        })
        .collect();
    format!(
        "id={id} changes={changes} columns={columns} rows={}",
        rows.join(",")
    )
}

fn render(value: &Value) -> String {
    match value {
        Value::Integer(i) => format!("Integer({i})"),
        Value::Real(r) => format!("Real({r})"),
        Value::Text(t) => format!("Text({t})"),
        Value::Blob(b) => {
            let hex: Vec<String> = b.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("Blob({})", hex.join(" "))
        }
        Value::Null => "Null".to_owned(),
    }
}
