//! Test guest: a component for the WASI 0.2 `wasi:http/proxy` world, exporting
//! `wasi:http/incoming-handler@0.2.x` — built without spin-sdk so it checks that
//! the host still serves components written before WASI 0.3.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The whole body of every answer.
const BODY: &[u8] = b"hello from wasi 0.2\n";

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    /// Answers 200 `hello from wasi 0.2`, whatever was asked.
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken only once");
        // The response must be handed back before its body is written: the
        // host starts sending headers as soon as it has the response.
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("the stream is taken only once");
        stream
            .blocking_write_and_flush(BODY)
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(Hello);
