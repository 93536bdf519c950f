//! The embedded bus: a broadcast channel inside the host process.

use tokio::sync::broadcast;

use super::Message;

/// Messages kept for a slow subscriber before it starts missing them.
const CAPACITY: usize = 4096;

/// Delivers published messages to the subscribers of this process.
#[derive(Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<Message>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl InProcessBus {
    /// Hands `message` to every current subscriber; with none, it is dropped,
    /// as a core NATS server drops a message nobody listens to.
    pub fn publish(&self, message: Message) {
        let _ = self.sender.send(message);
    }

    /// Every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_receive_what_is_published_after_they_subscribe() {
        let bus = InProcessBus::default();
        bus.publish(Message {
            subject: "lost".into(),
            body: "nobody listens".into(),
            headers: vec![],
        });
        let mut receiver = bus.subscribe();
        let message = Message {
            subject: "order.created".into(),
            body: "{}".into(),
            headers: vec![("traceparent".into(), "00-x".into())],
        };
        bus.publish(message.clone());
        assert_eq!(receiver.recv().await.expect("a message"), message);
    }
}
