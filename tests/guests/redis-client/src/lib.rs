//! Test guest: `GET /?<prefix> ` with the server's address in the `x-redis`
//! header runs every `spin:redis` call on keys that start with `<prefix>`
//! and answers 200 `ok`, or 500 naming the first step that went wrong (an
//! error from `open` is answered as `open: <error>`).

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

#[http_service]
async fn run(req: Request) -> Result<impl IntoResponse, http::Error> {
    let address = req
        .headers()
        .get("x-redis")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let prefix = req.uri().query().unwrap_or_default().to_owned();
    let (status, body) = match exercise(&address, &prefix).await {
        Ok(()) => (200, "ok".to_string()),
        Err(failure) => (500, failure),
    };
    http::Response::builder().status(status).body(body)
}

fn check<T: std::fmt::Debug + PartialEq>(step: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{step}: got {got:?}, want {want:?}"))
    }
}

/// Turns an interface error into the failure of `step`.
fn fail(step: &'static str) -> impl Fn(Error) -> String {
    move |error| format!("{step}: {error:?}")
}

async fn exercise(address: &str, prefix: &str) -> Result<(), String> {
    let redis = Connection::open(address)
        .await
        .map_err(|error| format!("open: {error:?}"))?;
    let key = |name: &str| format!("{prefix}{name}");

    redis
        .set(key("plain"), b"value")
        .await
        .map_err(fail("set"))?;
    let value = redis.get(key("plain")).await.map_err(fail("get"))?;
    check("get", value, Some(b"value".to_vec()))?;
    check(
        "incr",
        redis.incr(key("count")).await.map_err(fail("incr"))?,
        1,
    )?;
    check(
        "incr",
        redis.incr(key("count")).await.map_err(fail("incr"))?,
        2,
    )?;
    let added = redis
        .sadd(key("set"), ["a", "b", "c"])
        .await
        .map_err(fail("sadd"))?;
    check("sadd", added, 3)?;
    check(
        "srem",
        redis.srem(key("set"), ["b"]).await.map_err(fail("srem"))?,
        1,
    )?;
    let mut members = redis.smembers(key("set")).await.map_err(fail("smembers"))?;
    members.sort();
    check("smembers", members, vec!["a".to_string(), "c".to_string()])?;
    let replies = redis
        .execute(
            "INCRBY",
            [
                RedisParameter::Binary(key("count").into_bytes()),
                RedisParameter::Int64(40),
            ],
        )
        .await
        .map_err(fail("execute"))?;
    check("execute", replies, vec![RedisResult::Int64(42)])?;
    // `plain` holds a string: INCR on it is the server's error, not a trap.
    match redis.incr(key("plain")).await {
        Err(Error::Other(message)) if message.contains("not an integer") => {}
        other => return Err(format!("incr on a string: got {other:?}")),
    }
    redis
        .publish(key("channel"), b"hello")
        .await
        .map_err(fail("publish"))?;
    let deleted = redis
        .del([key("plain"), key("count"), key("set")])
        .await
        .map_err(fail("del"))?;
    check("del", deleted, 3)?;
    Ok(())
}
