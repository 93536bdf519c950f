//! Test guest: `POST /` with a JSON body of SQL steps runs them against the
//! component's managed database and answers with their results.
//!
//! Body: `{"transaction": bool, "commit": bool, "steps": [step, ...]}` where a
//! step is `{"query": sql, "params": [...]}`, `{"execute": sql, "params":
//! [...]}` or `{"publish": subject, "body": text}` (transactions only).
//! Params and cells are JSON: null, bool, integer, float, string,
//! `{"bytes": [..]}`, `{"timestamp": micros}`. Answers 200 with
//! `{"results": [...]}`, or 500 with `{"error": "..."}` after the first
//! failing step (an open transaction is then dropped, i.e. rolled back).

use serde_json::{Value as Json, json};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::http_service;
use spindle_sdk::sql::{self, RowSet, Transaction, Value};

#[http_service]
async fn run(req: Request) -> impl IntoResponse {
    let outcome = match req.into_body().bytes().await {
        Ok(body) => match serde_json::from_slice::<Json>(&body) {
            Ok(plan) => run_plan(&plan).await,
            Err(error) => Err(format!("bad request body: {error}")),
        },
        Err(error) => Err(format!("reading the body: {error:?}")),
    };
    match outcome {
        Ok(results) => (StatusCode::OK, json!({ "results": results }).to_string()),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": error }).to_string(),
        ),
    }
}

async fn run_plan(plan: &Json) -> Result<Vec<Json>, String> {
    let steps = plan["steps"].as_array().cloned().unwrap_or_default();
    if !plan["transaction"].as_bool().unwrap_or(false) {
        let mut results = Vec::new();
        for step in &steps {
            results.push(run_step(None, step).await?);
        }
        return Ok(results);
    }
    let transaction = Transaction::begin().await.map_err(|e| format!("{e:?}"))?;
    let mut results = Vec::new();
    for step in &steps {
        results.push(run_step(Some(&transaction), step).await?);
    }
    if plan["commit"].as_bool().unwrap_or(true) {
        transaction.commit().await.map_err(|e| format!("{e:?}"))?;
    } else {
        transaction.rollback().await.map_err(|e| format!("{e:?}"))?;
    }
    Ok(results)
}

async fn run_step(transaction: Option<&Transaction>, step: &Json) -> Result<Json, String> {
    let params = step["params"]
        .as_array()
        .map(|params| params.iter().map(to_value).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    if let Some(statement) = step["query"].as_str() {
        let rows = match transaction {
            Some(tx) => tx.query(statement.to_string(), params).await,
            None => sql::query(statement.to_string(), params).await,
        };
        return rows
            .map(|rows| row_set_json(&rows))
            .map_err(|e| format!("{e:?}"));
    }
    if let Some(statement) = step["execute"].as_str() {
        let affected = match transaction {
            Some(tx) => tx.execute(statement.to_string(), params).await,
            None => sql::execute(statement.to_string(), params).await,
        };
        return affected.map(|n| json!(n)).map_err(|e| format!("{e:?}"));
    }
    if let Some(subject) = step["publish"].as_str() {
        let tx = transaction.ok_or("publish needs a transaction")?;
        let body = step["body"].as_str().unwrap_or_default();
        return tx
            .publish(subject.to_string(), body.as_bytes().to_vec(), Vec::new())
            .await
            .map(|()| json!("published"))
            .map_err(|e| format!("{e:?}"));
    }
    Err(format!("unknown step {step}"))
}

fn to_value(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().ok_or("number out of range")?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) if o.contains_key("bytes") => {
            Value::Bytes(serde_json::from_value(o["bytes"].clone()).map_err(|e| e.to_string())?)
        }
        Json::Object(o) if o.contains_key("timestamp") => Value::Timestamp(
            o["timestamp"]
                .as_i64()
                .ok_or("timestamp must be an integer")?,
        ),
        other => return Err(format!("no sql value for {other}")),
    })
}

fn row_set_json(rows: &RowSet) -> Json {
    let cells: Vec<Json> = rows
        .rows
        .iter()
        .map(|row| row.iter().map(value_json).collect())
        .collect();
    json!({ "columns": rows.columns, "rows": cells })
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Integer(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": b }),
        Value::Timestamp(t) => json!({ "timestamp": t }),
    }
}
