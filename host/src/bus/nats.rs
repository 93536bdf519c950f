//! The NATS bus: one async-nats client per host, reconnecting on its own.

use async_nats::{ConnectOptions, HeaderMap};

use super::{Message, PUBLISH_TIMEOUT, PublishError};

/// A connection to a NATS server.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

impl NatsBus {
    /// Connects to `url`. The server need not be up yet: the client retries
    /// in the background, so a host starts while NATS restarts.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = ConnectOptions::new()
            .name("spindle")
            .retry_on_initial_connect()
            .connect(url)
            .await
            // The URL may carry credentials: name the key, not the value.
            .map_err(|error| anyhow::anyhow!("[messaging] url: cannot connect to NATS: {error}"))?;
        Ok(Self { client })
    }

    /// The client, for subscribers.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes and waits until the client has written it to the server.
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            headers.append(name.as_str(), value.as_str());
        }
        let sent = async {
            self.client
                .publish_with_headers(message.subject, headers, message.body)
                .await
                .map_err(|error| PublishError::Unavailable(error.to_string()))?;
            self.client
                .flush()
                .await
                .map_err(|error| PublishError::Unavailable(error.to_string()))
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, sent)
            .await
            .map_err(|_| PublishError::Unavailable("no answer from NATS in time".into()))?
    }
}
