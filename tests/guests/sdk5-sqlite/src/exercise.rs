// Included by lib.rs once per interface version (`api` is the spin-sdk
// module of that version): the same checks against each.

/// Creates a table, inserts a row of every value type with parameters and
/// reads it back.
pub fn exercise(label: &str, table: &str) -> Result<(), String> {
    let connection = api::Connection::open(label).map_err(describe)?;
    connection
        .execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} \
                 (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, missing TEXT)"
            ),
            &[],
        )
        .map_err(describe)?;
    connection
        .execute(&format!("DELETE FROM {table}"), &[])
        .map_err(describe)?;
    connection
        .execute(
            &format!("INSERT INTO {table} (id, name, score, data, missing) VALUES (?, ?, ?, ?, ?)"),
            &[
                api::Value::Integer(7),
                api::Value::Text("seven".into()),
                api::Value::Real(7.5),
                api::Value::Blob(vec![0, 255, 7]),
                api::Value::Null,
            ],
        )
        .map_err(describe)?;
    let result = connection
        .execute(
            &format!("SELECT id, name, score, data, missing FROM {table} WHERE id = ?"),
            &[api::Value::Integer(7)],
        )
        .map_err(describe)?;
    if result.columns != ["id", "name", "score", "data", "missing"] {
        return Err(format!("columns: {:?}", result.columns));
    }
    let row = result.rows().next().ok_or("no row came back")?;
    let matches = row.get::<i64>("id") == Some(7)
        && row.get::<&str>("name") == Some("seven")
        && row.get::<f64>("score") == Some(7.5)
        && row.get::<&[u8]>("data") == Some(&[0, 255, 7][..])
        && matches!(result.rows[0].values[4], api::Value::Null);
    if matches {
        Ok(())
    } else {
        Err(format!("row read back differs: {:?}", result.rows[0].values))
    }
}

/// The answer for what went wrong: the interface's error case, as the
/// test expects to see it.
fn describe(error: api::Error) -> String {
    match error {
        api::Error::AccessDenied => "access-denied".to_owned(),
        api::Error::NoSuchDatabase => "no-such-database".to_owned(),
        other => format!("{other:?}"),
    }
}
