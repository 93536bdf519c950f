//! The {{name}} component: handles messages on `{{name}}.>`.
//!
//! A request (a message with a reply subject) is answered with a greeting
//! for its body; any other message is logged. Returning
//! `HandlerError::Retry(ms)` asks for the message again later,
//! `HandlerError::Reject(reason)` dead-letters it.

wit_bindgen::generate!({
    path: "wit",
    world: "spindle:platform/message-component",
    generate_all,
});

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};
use spindle::platform::messaging;

struct Handler;

impl Guest for Handler {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(&message.body).into_owned();
        let Some(reply_to) = message.reply_to else {
            println!("{{name}}: {} says {body}", message.subject);
            return Ok(());
        };
        let reply = format!("Hello, {body}! ({{name}} on {})", message.subject);
        // A reply that cannot be sent now is worth another try shortly.
        messaging::publish(reply_to, reply.into_bytes(), Vec::new())
            .await
            .map_err(|error| {
                eprintln!("{{name}}: could not reply: {error:?}");
                HandlerError::Retry(500)
            })
    }
}

export!(Handler);
