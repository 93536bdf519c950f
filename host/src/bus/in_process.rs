//! The embedded bus: subscriptions inside the host process, with NATS's
//! subject matching and queue groups but no durability.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Message, PUBLISH_TIMEOUT, PublishError, RequestError, subject_matches};

/// Messages queued for one subscriber before publishers wait for it.
const SUBSCRIBER_CAPACITY: usize = 1024;

/// Delivers published messages to the subscribers of this process.
#[derive(Clone, Default)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    /// Spreads queue-group messages over the group's members.
    next_pick: AtomicUsize,
    next_inbox: AtomicU64,
}

struct Subscriber {
    pattern: String,
    queue_group: Option<String>,
    sender: mpsc::Sender<Message>,
}

impl InProcessBus {
    /// Hands `message` to every matching subscriber outside queue groups and
    /// to one member of each matching group. With nobody listening it is
    /// dropped, as a core NATS server drops it. A full subscriber makes the
    /// publisher wait (up to [`PUBLISH_TIMEOUT`]) rather than lose messages.
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        let targets = self.targets(&message.subject);
        for target in targets {
            match tokio::time::timeout(PUBLISH_TIMEOUT, target.send(message.clone())).await {
                Ok(_) => {} // A subscriber that went away just misses it.
                Err(_) => {
                    return Err(PublishError::Unavailable(format!(
                        "a subscriber of `{}` is not keeping up",
                        message.subject
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every message published from now on to subjects `pattern` matches;
    /// within `queue_group`, each message goes to one member.
    pub fn subscribe(&self, pattern: &str, queue_group: Option<String>) -> mpsc::Receiver<Message> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_CAPACITY);
        self.lock().push(Subscriber {
            pattern: pattern.to_string(),
            queue_group,
            sender,
        });
        receiver
    }

    /// Publishes `message` with a private reply subject and waits for the
    /// first answer on it.
    pub async fn request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let inbox = format!(
            "_INBOX.spindle.{}",
            self.inner.next_inbox.fetch_add(1, Ordering::Relaxed)
        );
        let mut replies = self.subscribe(&inbox, None);
        let subject = message.subject.clone();
        message.reply_to = Some(inbox);
        if self.targets(&subject).is_empty() {
            return Err(RequestError::NoResponders(subject));
        }
        self.publish(message)
            .await
            .map_err(|error| RequestError::Unavailable(error.to_string()))?;
        match tokio::time::timeout(timeout, replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => Err(RequestError::TimedOut),
        }
    }

    /// The channels `subject` goes to; forgets subscribers that are gone.
    fn targets(&self, subject: &str) -> Vec<mpsc::Sender<Message>> {
        let mut subscribers = self.lock();
        subscribers.retain(|subscriber| !subscriber.sender.is_closed());
        let mut targets = Vec::new();
        let mut groups: Vec<(&str, Vec<&mpsc::Sender<Message>>)> = Vec::new();
        for subscriber in subscribers
            .iter()
            .filter(|subscriber| subject_matches(&subscriber.pattern, subject))
        {
            match &subscriber.queue_group {
                None => targets.push(subscriber.sender.clone()),
                Some(group) => match groups.iter_mut().find(|(name, _)| name == group) {
                    Some((_, members)) => members.push(&subscriber.sender),
                    None => groups.push((group, vec![&subscriber.sender])),
                },
            }
        }
        let pick = self.inner.next_pick.fetch_add(1, Ordering::Relaxed);
        for (_, members) in groups {
            targets.push(members[pick % members.len()].clone());
        }
        targets
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // The list stays consistent even if a holder panicked: every change
        // is a single push or retain.
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str) -> Message {
        Message {
            subject: subject.into(),
            body: "{}".into(),
            ..Message::default()
        }
    }

    #[tokio::test]
    async fn subscribers_receive_matching_subjects_published_after_they_subscribe() {
        let bus = InProcessBus::default();
        bus.publish(message("order.lost")).await.expect("published");
        let mut orders = bus.subscribe("order.*", None);
        let mut everything = bus.subscribe(">", None);
        bus.publish(message("user.created"))
            .await
            .expect("published");
        bus.publish(message("order.created"))
            .await
            .expect("published");
        assert_eq!(
            orders.recv().await.expect("a message").subject,
            "order.created"
        );
        assert_eq!(
            everything.recv().await.expect("a message").subject,
            "user.created"
        );
        assert_eq!(
            everything.recv().await.expect("a message").subject,
            "order.created"
        );
        assert!(orders.try_recv().is_err(), "nothing else matched order.*");
    }

    #[tokio::test]
    async fn a_queue_group_shares_messages_between_its_members() {
        let bus = InProcessBus::default();
        let mut first = bus.subscribe("job", Some("workers".into()));
        let mut second = bus.subscribe("job", Some("workers".into()));
        for _ in 0..10 {
            bus.publish(message("job")).await.expect("published");
        }
        let (mut a, mut b) = (0, 0);
        while first.try_recv().is_ok() {
            a += 1;
        }
        while second.try_recv().is_ok() {
            b += 1;
        }
        assert_eq!(a + b, 10, "each message went to exactly one member");
        assert!(a > 0 && b > 0, "both members got work: {a} and {b}");
    }

    #[tokio::test]
    async fn a_request_gets_the_reply_sent_to_its_reply_subject() {
        let bus = InProcessBus::default();
        let mut service = bus.subscribe("echo", None);
        let responder = bus.clone();
        tokio::spawn(async move {
            let request = service.recv().await.expect("a request");
            let reply = Message {
                subject: request.reply_to.expect("a reply subject"),
                body: request.body,
                ..Message::default()
            };
            responder.publish(reply).await.expect("replied");
        });
        let reply = bus
            .request(message("echo"), Duration::from_secs(5))
            .await
            .expect("a reply");
        assert_eq!(reply.body, "{}");
        let unanswered = bus.request(message("nobody"), Duration::from_secs(5)).await;
        assert!(matches!(unanswered, Err(RequestError::NoResponders(_))));
    }
}
