//! Receiving: a subscription's messages, each a [`Delivery`] that the
//! receiver settles the same way whichever bus it came from.
//!
//! JetStream keeps a message until it is acked, and redelivers it on a nak
//! or once its ack wait runs out. Core NATS and the in-process bus keep
//! nothing, so a subscription redelivers by itself: a message to retry waits
//! here for its delay and then comes out of `next` again, counted as the
//! next attempt. Those waiting messages are bounded in number and in delay,
//! so a guest cannot make the host hold messages without end.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::nats::{self, PullMessages};
use super::{Message, PublishError};

/// Messages one subscription holds for local redelivery at most.
pub const MAX_LOCAL_REDELIVERIES: usize = 1024;

/// The longest a message waits for local redelivery, whatever the handler
/// asked for.
pub const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(60);

/// Messages arriving for one subscription.
pub struct Subscription {
    source: Source,
    redeliveries: LocalRedeliveries,
    /// Messages whose redelivery delay has passed.
    due: mpsc::UnboundedReceiver<Redelivery>,
}

/// A message back from local redelivery: its next attempt, and the slot it
/// held while it waited.
type Redelivery = (Message, u32, OwnedSemaphorePermit);

/// Where a subscription's messages come from.
pub(super) enum Source {
    /// The in-process bus.
    InProcess(mpsc::Receiver<Message>),
    /// A core NATS subscription (at most once).
    Core(async_nats::Subscriber),
    /// A JetStream pull consumer (at least once, acked by the receiver).
    JetStream(Box<PullMessages>),
}

impl Subscription {
    pub(super) fn new(source: Source) -> Self {
        let (sender, due) = mpsc::unbounded_channel();
        Self {
            source,
            redeliveries: LocalRedeliveries {
                slots: Arc::new(Semaphore::new(MAX_LOCAL_REDELIVERIES)),
                sender,
            },
            due,
        }
    }

    /// The next message (a due redelivery first); `None` once the
    /// subscription has ended.
    pub async fn next(&mut self) -> Option<Delivery> {
        tokio::select! {
            biased;
            // The message is out of the queue: its slot is free again.
            Some((message, attempt, _slot)) = self.due.recv() => {
                Some(Delivery::local(message, attempt, self.redeliveries.clone()))
            }
            delivery = next_from(&mut self.source, &self.redeliveries) => delivery,
        }
    }
}

/// The next message from the bus itself, as its first delivery.
async fn next_from(source: &mut Source, redeliveries: &LocalRedeliveries) -> Option<Delivery> {
    let local = |message| Delivery::local(message, 1, redeliveries.clone());
    match source {
        Source::InProcess(receiver) => receiver.recv().await.map(local),
        Source::Core(subscriber) => subscriber
            .next()
            .await
            .map(|message| local(nats::from_nats(message))),
        Source::JetStream(messages) => loop {
            match messages.next().await? {
                Ok(message) => return Some(Delivery::jetstream(message)),
                // Heartbeat gaps and reconnects surface here; the stream
                // recovers on its own.
                Err(error) => tracing::warn!("JetStream consumer: {error}"),
            }
        },
    }
}

/// Where a delivery goes back to for redelivery: a slot each, taken when
/// the retry is asked for and given back when the message comes out again
/// (the channel is unbounded; the slots bound it).
#[derive(Clone)]
struct LocalRedeliveries {
    slots: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<Redelivery>,
}

/// One received message and how to settle it.
pub struct Delivery {
    message: Message,
    attempt: u32,
    settle: Settle,
}

enum Settle {
    /// No broker-side state: redelivered by the subscription.
    Local(LocalRedeliveries),
    /// Acked, nak'd or terminated with the server.
    JetStream(Box<jetstream::Message>),
}

impl Delivery {
    fn local(message: Message, attempt: u32, redeliveries: LocalRedeliveries) -> Self {
        Self {
            message,
            attempt,
            settle: Settle::Local(redeliveries),
        }
    }

    fn jetstream(raw: jetstream::Message) -> Self {
        let attempt = raw
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        Self {
            message: nats::from_nats(raw.message.clone()),
            attempt,
            settle: Settle::JetStream(Box::new(raw)),
        }
    }

    /// The message as published.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Which delivery this is, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the server redelivers the message unless told, now and
    /// then, that it is still being worked on ([`Delivery::in_progress`]).
    pub fn needs_progress(&self) -> bool {
        matches!(self.settle, Settle::JetStream(_))
    }

    /// Handled: nobody sees it again.
    pub async fn ack(&self) -> Result<(), PublishError> {
        self.with_server(AckKind::Ack).await
    }

    /// Never redeliver (it was dead-lettered).
    pub async fn terminate(&self) -> Result<(), PublishError> {
        self.with_server(AckKind::Term).await
    }

    /// Still working: restart the server's ack-wait clock.
    pub async fn in_progress(&self) -> Result<(), PublishError> {
        self.with_server(AckKind::Progress).await
    }

    /// Not yet: deliver it again after `delay` (at most
    /// [`MAX_REDELIVERY_DELAY`] when the subscription redelivers by itself).
    /// Fails, and the caller must dead-letter it, when the subscription
    /// already holds [`MAX_LOCAL_REDELIVERIES`] messages.
    pub async fn retry(&self, delay: Duration) -> Result<(), RetryError> {
        let redeliveries = match &self.settle {
            Settle::JetStream(_) => {
                return Ok(self.with_server(AckKind::Nak(Some(delay))).await?);
            }
            Settle::Local(redeliveries) => redeliveries,
        };
        let slot = redeliveries
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| RetryError::QueueFull)?;
        let (message, attempt) = (self.message.clone(), self.attempt + 1);
        let sender = redeliveries.sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay.min(MAX_REDELIVERY_DELAY)).await;
            // A subscription that ended takes no more messages.
            let _ = sender.send((message, attempt, slot));
        });
        Ok(())
    }

    async fn with_server(&self, kind: AckKind) -> Result<(), PublishError> {
        match &self.settle {
            Settle::Local(_) => Ok(()),
            Settle::JetStream(raw) => raw
                .ack_with(kind)
                .await
                .map_err(|error| PublishError::Unavailable(error.to_string())),
        }
    }
}

/// Why a message could not be set aside for redelivery.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The server did not take the nak; it redelivers after the ack wait.
    #[error(transparent)]
    Server(#[from] PublishError),
    /// The subscription holds as many messages for redelivery as it may.
    #[error("{MAX_LOCAL_REDELIVERIES} messages already wait for redelivery")]
    QueueFull,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription() -> (mpsc::Sender<Message>, Subscription) {
        let (sender, receiver) = mpsc::channel(8);
        (sender, Subscription::new(Source::InProcess(receiver)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_message_comes_back_as_the_next_attempt_after_its_delay() {
        let (sender, mut subscription) = subscription();
        sender.send(Message::default()).await.unwrap();
        let first = subscription.next().await.unwrap();
        assert_eq!(first.attempt(), 1);
        first.retry(Duration::from_secs(5)).await.unwrap();
        let started = tokio::time::Instant::now();
        let again = subscription.next().await.unwrap();
        assert_eq!(again.attempt(), 2);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_chosen_delay_is_capped() {
        let (sender, mut subscription) = subscription();
        sender.send(Message::default()).await.unwrap();
        let first = subscription.next().await.unwrap();
        first.retry(Duration::from_secs(3600)).await.unwrap();
        let started = tokio::time::Instant::now();
        subscription.next().await.unwrap();
        assert!(started.elapsed() <= MAX_REDELIVERY_DELAY + Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_a_retry_is_refused_and_a_slot_frees_when_one_comes_back() {
        let (sender, mut subscription) = subscription();
        sender.send(Message::default()).await.unwrap();
        let delivery = subscription.next().await.unwrap();
        for _ in 0..MAX_LOCAL_REDELIVERIES {
            delivery.retry(Duration::from_secs(1)).await.unwrap();
        }
        assert!(matches!(
            delivery.retry(Duration::from_secs(1)).await,
            Err(RetryError::QueueFull)
        ));
        subscription.next().await.unwrap();
        delivery.retry(Duration::from_secs(1)).await.unwrap();
    }
}
