//! One message-triggered component: its instances, each handling several
//! messages at once and reused for many, its `message-handler` export called
//! under the component's timeout, and the guest's answer turned into what
//! the trigger does with the message.
//!
//! The export is `async`, so one instance runs up to [`MESSAGES_AT_ONCE`]
//! calls of it together, as the HTTP trigger does with WASI 0.3 handlers:
//! while one message waits on its database or the bus, the others run. Each
//! instance is a task owning its store and running its event loop; messages
//! go to the first instance with room, and a new one starts only when all
//! are full (the messages that arrive while it starts wait for it rather
//! than start more). An instance is let go after
//! [`MAX_MESSAGES_PER_INSTANCE`] messages and after
//! [`IDLE_INSTANCE_TIMEOUT`] without one.
//!
//! A trap poisons an instance, and an overrun cannot be cut out of it:
//! either stops that instance alone. wasmtime does not say which call
//! trapped, so each message the instance was running is run again in an
//! instance of its own: the one at fault fails there with the reason (and
//! is redelivered with backoff), the others are handled as if nothing
//! happened. Which message a host call belongs to (its reply subject, its
//! trace) comes from the guest task making it ([`crate::calls`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use wasmtime::Engine;
use wasmtime::component::{Accessor, ComponentExportIndex, InstancePre, TypedFunc};

use crate::bus::Message;
use crate::capabilities::AppCapabilities;
use crate::capabilities::messaging::to_guest;
use crate::engine::{self, InstanceState, LoadedComponent};
use crate::manifest;
use crate::metrics;
use crate::platform::{self, HandlerError};

/// Messages one instance handles at once.
const MESSAGES_AT_ONCE: usize = 16;

/// Messages one instance handles before it is replaced, as an HTTP
/// instance's requests are capped: what a guest leaks per call stays bounded.
const MAX_MESSAGES_PER_INSTANCE: usize = 128;

/// An instance with no message for this long is released.
const IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The interface and function of the export.
const HANDLER_INTERFACE: &str = "spindle:platform/message-handler@0.1.0";
const HANDLER_FUNCTION: &str = "handle";

/// `handle: async func(message: message) -> result<_, handler-error>`.
type HandleFunc = TypedFunc<(platform::Message,), (Result<(), HandlerError>,)>;

/// The guest's answer.
type Answer = Result<(), HandlerError>;

/// Where the answers to an instance's running calls go, by call number
/// (not by task: wasmtime reuses a task's id once its call is over).
#[derive(Default)]
struct Answers {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    calls: u64,
}

/// Which instance a message may run in.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// Any instance with room.
    Shared,
    /// An instance of its own, after a shared one stopped under it.
    Alone,
}

/// What the handler made of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Handled: acknowledge.
    Done,
    /// The guest asked for a redelivery after this long.
    Retry(Duration),
    /// The guest refused it for good: dead-letter with this reason.
    Reject(String),
    /// The call trapped or overran: redeliver with backoff, naming why.
    Failed(String),
}

/// Makes instances of one message-triggered component and calls them.
pub struct MessageHandler {
    component: Arc<manifest::Component>,
    timeout: Duration,
    factory: Arc<Factory>,
    instances: Arc<Instances>,
}

/// What starting an instance takes.
struct Factory {
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
    component: Arc<manifest::Component>,
    pre: InstancePre<InstanceState>,
    /// Where `handle` is among the component's exports.
    handle: ComponentExportIndex,
}

/// The instances taking messages, in the order they started.
#[derive(Default)]
struct Instances {
    taking: Mutex<Vec<Taking>>,
    next_id: AtomicU64,
}

/// An instance that takes messages, as the dispatcher holds it.
struct Taking {
    worker: Arc<Worker>,
    /// Its queue; dropped (closed) to retire it.
    jobs: mpsc::UnboundedSender<Job>,
    /// Messages given to it in all.
    given: usize,
    /// Its task, stopped when one of its messages overruns.
    task: AbortHandle,
}

/// What an instance and the callers of its messages share.
struct Worker {
    id: u64,
    /// Messages given to it and not yet answered.
    load: AtomicUsize,
    /// Why it stopped, told to the messages it had not answered.
    stopped_because: Mutex<Option<String>>,
}

/// One message on its way to an instance.
struct Job {
    message: Message,
    span: tracing::Span,
    answer: oneshot::Sender<Answer>,
}

impl MessageHandler {
    /// Checks that `loaded` exports `spindle:platform/message-handler`.
    pub fn new(
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        loaded: &LoadedComponent,
    ) -> anyhow::Result<Self> {
        let component = loaded.config.clone();
        let handle = handle_export(&loaded.pre).ok_or_else(|| {
            anyhow::anyhow!(
                "component `{}` is NATS-triggered but does not export \
                 {HANDLER_INTERFACE} (with `{HANDLER_FUNCTION}`)",
                component.id
            )
        })?;
        // The generated bindings check the export's types once, here.
        platform::MessageComponentPre::new(loaded.pre.clone()).map_err(|error| {
            anyhow::anyhow!(
                "component `{}`: its {HANDLER_INTERFACE} export does not match ({error})",
                component.id
            )
        })?;
        let factory = Factory {
            engine: engine.clone(),
            capabilities: capabilities.clone(),
            component: component.clone(),
            pre: loaded.pre.clone(),
            handle,
        };
        Ok(Self {
            timeout: engine::call_timeout(&component),
            component,
            factory: Arc::new(factory),
            instances: Arc::default(),
        })
    }

    /// Runs the handler on `message` in an instance with room, or a new
    /// one; what it publishes is traced under `span`. When that instance
    /// stops under it (another message trapped or overran there, or this
    /// one did), the message runs again in an instance of its own.
    pub async fn handle(&self, message: &Message, span: tracing::Span) -> Outcome {
        match self.run(Placement::Shared, message, span.clone()).await {
            Ok(outcome) => outcome,
            Err(_) => match self.run(Placement::Alone, message, span).await {
                Ok(outcome) => outcome,
                Err(why) => {
                    tracing::warn!(component = %self.component.id, "message handler failed: {why}");
                    Outcome::Failed(why)
                }
            },
        }
    }

    /// The guest's answer to `message`, or why its instance stopped first.
    async fn run(
        &self,
        placement: Placement,
        message: &Message,
        span: tracing::Span,
    ) -> Result<Outcome, String> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            message: message.clone(),
            span,
            answer,
        };
        let worker = self.instances.dispatch(job, &self.factory, placement)?;
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(Ok(()))) => Ok(Outcome::Done),
            Ok(Ok(Err(HandlerError::Retry(ms)))) => {
                Ok(Outcome::Retry(Duration::from_millis(u64::from(ms))))
            }
            Ok(Ok(Err(HandlerError::Reject(reason)))) => Ok(Outcome::Reject(reason)),
            Ok(Err(_)) => Err(worker.why_stopped()),
            Err(_) => {
                let why = format!("the handler did not finish within {:?}", self.timeout);
                self.instances.stop(&worker, why.clone());
                Ok(Outcome::Failed(why))
            }
        }
    }
}

/// The export index of `handle` in the message-handler interface.
fn handle_export(pre: &InstancePre<InstanceState>) -> Option<ComponentExportIndex> {
    let component = pre.component();
    let (_, interface) = component.get_export(None, HANDLER_INTERFACE)?;
    let (_, function) = component.get_export(Some(&interface), HANDLER_FUNCTION)?;
    Some(function)
}

impl Instances {
    /// Gives `job` to the first instance with room (or, `Alone`, to none),
    /// starting one when none has; the instance is retired once it was given
    /// its last message.
    fn dispatch(
        self: &Arc<Self>,
        job: Job,
        factory: &Arc<Factory>,
        placement: Placement,
    ) -> Result<Arc<Worker>, String> {
        let mut taking = self.lock();
        let shared = taking
            .iter()
            .position(Taking::has_room)
            .filter(|_| placement == Placement::Shared);
        let index = shared.unwrap_or_else(|| {
            taking.push(self.start(factory));
            taking.len() - 1
        });
        let chosen = &mut taking[index];
        chosen.given += 1;
        chosen.worker.load.fetch_add(1, Ordering::Relaxed);
        let worker = chosen.worker.clone();
        let sent = chosen.jobs.send(job);
        let last = match placement {
            Placement::Shared => chosen.given >= MAX_MESSAGES_PER_INSTANCE,
            Placement::Alone => true,
        };
        if last || sent.is_err() {
            // Closing its queue: it ends after the messages it has.
            taking.remove(index);
        }
        match sent {
            Ok(()) => Ok(worker),
            Err(_) => Err(worker.why_stopped()),
        }
    }

    /// Starts an instance's task. Called under the lock, so the task cannot
    /// look for itself in the list before it is there.
    fn start(self: &Arc<Self>, factory: &Arc<Factory>) -> Taking {
        let worker = Arc::new(Worker {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            load: AtomicUsize::new(0),
            stopped_because: Mutex::new(None),
        });
        let (jobs, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_instance(
            factory.clone(),
            self.clone(),
            worker.clone(),
            queue,
        ));
        Taking {
            worker,
            jobs,
            given: 0,
            task: task.abort_handle(),
        }
    }

    /// Stops `worker`'s instance where it is; its messages fail with `why`.
    fn stop(&self, worker: &Worker, why: String) {
        worker.stop_because(why);
        if let Some(stopped) = self.remove(worker.id) {
            stopped.task.abort();
        }
    }

    /// Retires `worker` if it has no message: none can be on its way, as
    /// they are given under the lock.
    fn release_if_idle(&self, worker: &Worker) {
        let mut taking = self.lock();
        if worker.load.load(Ordering::Relaxed) == 0 {
            taking.retain(|taking| taking.worker.id != worker.id);
        }
    }

    fn remove(&self, id: u64) -> Option<Taking> {
        let mut taking = self.lock();
        let index = taking.iter().position(|taking| taking.worker.id == id)?;
        Some(taking.remove(index))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Taking>> {
        self.taking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Taking {
    fn has_room(&self) -> bool {
        self.worker.load.load(Ordering::Relaxed) < MESSAGES_AT_ONCE
    }
}

impl Worker {
    fn stop_because(&self, why: String) {
        let mut stopped = self.lock_stopped();
        stopped.get_or_insert(why);
    }

    fn why_stopped(&self) -> String {
        self.lock_stopped()
            .clone()
            .unwrap_or_else(|| "the handler's instance stopped".to_string())
    }

    fn lock_stopped(&self) -> MutexGuard<'_, Option<String>> {
        self.stopped_because
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One instance's life: started, serving its queue, gone. It leaves the
/// list before its queue is dropped, so no message is given to it after.
async fn run_instance(
    factory: Arc<Factory>,
    instances: Arc<Instances>,
    worker: Arc<Worker>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let mut answers = Answers::default();
    if let Err(error) = factory
        .serve(&instances, &worker, &mut queue, &mut answers)
        .await
    {
        tracing::warn!(component = %factory.component.id, "message handler instance stopped: {error:?}");
        // Before the answers go: their callers read it when they do.
        worker.stop_because(format!("the handler trapped: {error}"));
    }
    instances.remove(worker.id);
    drop(answers);
    drop(queue);
}

impl Factory {
    /// Instantiates the component and runs the messages of `queue` in it
    /// until the queue closes; returns the trap that ended it early, with
    /// the answers of the calls it cut short left in `answers`.
    async fn serve(
        &self,
        instances: &Instances,
        worker: &Worker,
        queue: &mut mpsc::UnboundedReceiver<Job>,
        answers: &mut Answers,
    ) -> wasmtime::Result<()> {
        let started = Instant::now();
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let handle: HandleFunc = instance.get_typed_func(&mut store, self.handle)?;
        metrics::instance_started(&self.component.id, started.elapsed());
        let _released = ReleasedOnDrop(self.component.clone());
        store
            .run_concurrent(async |accessor| {
                let mut calls = FuturesUnordered::new();
                loop {
                    tokio::select! {
                        Some((call, result)) = calls.next() => finish(worker, answers, call, result)?,
                        job = queue.recv() => match job {
                            Some(job) => calls.push(start(accessor, handle, job, answers)?),
                            None => break,
                        },
                        _ = tokio::time::sleep(IDLE_INSTANCE_TIMEOUT), if calls.is_empty() => {
                            instances.release_if_idle(worker);
                        }
                    }
                }
                while let Some((call, result)) = calls.next().await {
                    finish(worker, answers, call, result)?;
                }
                Ok::<_, wasmtime::Error>(())
            })
            .await?
    }
}

/// Starts the guest call for `job`, recording which message its task
/// handles and where its answer goes; the future ends with the call.
fn start<'a>(
    accessor: &'a Accessor<InstanceState>,
    handle: HandleFunc,
    job: Job,
    answers: &mut Answers,
) -> wasmtime::Result<impl Future<Output = (u64, wasmtime::Result<Answered>)> + 'a> {
    let Job {
        message,
        span,
        answer,
    } = job;
    let (call, begun) = accessor.with(|mut store| {
        let call = handle.start_call_concurrent(&mut store, (to_guest(message.clone()),))?;
        let begun = store.get().begin_message(call.task(), &message, span);
        Ok::<_, wasmtime::Error>((call, begun))
    })?;
    let task = call.task();
    answers.calls += 1;
    let number = answers.calls;
    answers.waiting.insert(number, answer);
    Ok(async move {
        let result = handle.finish_call_concurrent(accessor, call).await;
        accessor.with(|mut store| store.get().end_message(task, begun));
        (number, result)
    })
}

/// What the export returned.
type Answered = (Result<(), HandlerError>,);

/// Passes a finished call's answer on; a trap ends the instance.
fn finish(
    worker: &Worker,
    answers: &mut Answers,
    call: u64,
    result: wasmtime::Result<Answered>,
) -> wasmtime::Result<()> {
    worker.load.fetch_sub(1, Ordering::Relaxed);
    let (answered,) = result?;
    if let Some(answer) = answers.waiting.remove(&call) {
        // The caller may have given up (its timeout, a shutdown).
        let _ = answer.send(answered);
    }
    Ok(())
}

/// Counts an instance out of the metrics when it goes.
struct ReleasedOnDrop(Arc<manifest::Component>);

impl Drop for ReleasedOnDrop {
    fn drop(&mut self) {
        metrics::instance_released(&self.0.id);
    }
}
