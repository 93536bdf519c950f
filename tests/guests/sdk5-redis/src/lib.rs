//! Checks `fermyon:spin/redis@2.0.0` as an app built with spin-sdk 3.x or 5.x
//! uses it: `GET /?prefix=<p>`, with the server's address in the `x-redis`
//! header, runs every call on keys that start with `<p>` and answers 200
//! `ok`, 500 naming the step that went wrong, or 403 naming the
//! interface's error when the connection is refused. It leaves `<p>:greeting`
//! = `hello world` and the set `<p>:set` = {a, c}, and publishes
//! `published` on `<p>:channel`, for the caller to check.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

#[http_component]
fn handle(request: Request) -> Response {
    let address = request
        .header("x-redis")
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_owned();
    let prefix = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("prefix="))
        .unwrap_or_default()
        .to_owned();
    let connection = match Connection::open(&address) {
        Ok(connection) => connection,
        Err(error) => return Response::new(403, error_text(&error)).into_response(),
    };
    match exercise(&connection, &prefix) {
        Ok(()) => Response::new(200, "ok"),
        Err(failure) => Response::new(500, failure),
    }
    .into_response()
}

fn error_text(error: &Error) -> String {
    match error {
        Error::InvalidAddress => "invalid-address".into(),
        Error::TooManyConnections => "too-many-connections".into(),
        Error::TypeError => "type-error".into(),
        Error::Other(message) => format!("other: {message}"),
    }
}

/// `step: error` for a call that failed.
fn step(what: &'static str) -> impl Fn(Error) -> String {
    move |error| format!("{what}: {}", error_text(&error))
}

fn check<T: std::fmt::Debug + PartialEq>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn exercise(redis: &Connection, prefix: &str) -> Result<(), String> {
    let greeting = format!("{prefix}:greeting");
    let counter = format!("{prefix}:counter");
    let set = format!("{prefix}:set");
    // Values as `Vec`s: spin-sdk 3 takes `&Vec<u8>`, spin-sdk 5 `&[u8]`.
    let (hello, published) = (b"hello".to_vec(), b"published".to_vec());

    redis.set(&greeting, &hello).map_err(step("set"))?;
    check(
        "get",
        redis.get(&greeting).map_err(step("get"))?,
        Some(b"hello".to_vec()),
    )?;
    check(
        "get of a missing key",
        redis
            .get(&format!("{prefix}:missing"))
            .map_err(step("get missing"))?,
        None,
    )?;
    check("incr", redis.incr(&counter).map_err(step("incr"))?, 1)?;
    check("incr again", redis.incr(&counter).map_err(step("incr"))?, 2)?;
    check(
        "incr of text",
        redis.incr(&greeting).err().map(|e| error_text(&e)),
        Some("other: ERR value is not an integer or out of range".into()),
    )?;
    let members = ["a", "b", "c"].map(String::from);
    check("sadd", redis.sadd(&set, &members).map_err(step("sadd"))?, 3)?;
    let mut listed = redis.smembers(&set).map_err(step("smembers"))?;
    listed.sort();
    check("smembers", listed, members.to_vec())?;
    check(
        "srem",
        redis.srem(&set, &["b".into()]).map_err(step("srem"))?,
        1,
    )?;
    let appended = redis
        .execute(
            "APPEND",
            &[
                RedisParameter::Binary(greeting.clone().into_bytes()),
                RedisParameter::Binary(b" world".to_vec()),
            ],
        )
        .map_err(step("execute APPEND"))?;
    check("execute APPEND", appended, vec![RedisResult::Int64(11)])?;
    let fetched = redis
        .execute(
            "MGET",
            &[
                RedisParameter::Binary(greeting.clone().into_bytes()),
                RedisParameter::Binary(format!("{prefix}:missing").into_bytes()),
            ],
        )
        .map_err(step("execute MGET"))?;
    check(
        "execute MGET",
        fetched,
        vec![
            RedisResult::Binary(b"hello world".to_vec()),
            RedisResult::Nil,
        ],
    )?;
    let expired = redis
        .execute(
            "EXPIRE",
            &[
                RedisParameter::Binary(counter.clone().into_bytes()),
                RedisParameter::Int64(600),
            ],
        )
        .map_err(step("execute EXPIRE"))?;
    check("execute EXPIRE", expired, vec![RedisResult::Int64(1)])?;
    check(
        "del",
        redis
            .del(&[counter, format!("{prefix}:missing")])
            .map_err(step("del"))?,
        1,
    )?;
    redis
        .publish(&format!("{prefix}:channel"), &published)
        .map_err(step("publish"))
}
