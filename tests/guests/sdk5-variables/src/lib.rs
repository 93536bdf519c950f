//! Checks `fermyon:spin/variables@2.0.0` as an app built with spin-sdk 3.x or 5.x
//! uses it: `GET /?name=<variable>` answers 200 with the value, or 404 /
//! 400 / 500 naming the interface's error.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables::{self, Error};

#[http_component]
fn handle(request: Request) -> Response {
    let name = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .unwrap_or_default()
        .to_owned();
    match variables::get(&name) {
        Ok(value) => Response::new(200, value),
        Err(Error::Undefined(message)) => Response::new(404, format!("undefined: {message}")),
        Err(Error::InvalidName(message)) => Response::new(400, format!("invalid-name: {message}")),
        Err(error) => Response::new(500, format!("{error:?}")),
    }
    .into_response()
}
