//! What the host knows about each guest call running in one instance: the
//! span its capability calls are traced under and, for a message handler,
//! the message it is handling (whose reply subject it may publish to).
//!
//! An instance of an `async` export runs several calls at once, and a host
//! import does not say which of them made it. The component model does: a
//! call of an export is a guest task, and wasmtime gives both the task an
//! export call starts ([`TypedFuncCallConcurrent::task`]) and the stack of
//! tasks behind a host call (`async_call_stack`, whose last item is the
//! export call). Callers that cannot name the task (wasi-http's dispatch of
//! an HTTP request) record the call as the instance's latest instead.
//!
//! [`TypedFuncCallConcurrent::task`]: wasmtime::component::TypedFuncCallConcurrent::task

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::AsContextMut;
use wasmtime::component::GuestTaskId;

/// One instance's running calls, shared by its capabilities' states.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Running>>);

#[derive(Default)]
struct Running {
    /// The call started last, for host calls whose task is not known.
    latest: Call,
    /// Each running export call, and which [`Calls::begin`] recorded it.
    by_task: HashMap<GuestTaskId, (Begun, Call)>,
    begun: u64,
}

/// One [`Calls::begin`], to end exactly what it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begun(u64);

/// One running call, as its host calls see it.
#[derive(Clone)]
pub struct Call {
    /// Parent of the spans of the call's capability calls.
    pub span: tracing::Span,
    /// The message a message handler's call was started for.
    pub message: Option<Arc<HandledMessage>>,
}

/// What a message handler's host calls need of the message it handles.
#[derive(Debug, Default)]
pub struct HandledMessage {
    /// The subject it may answer on.
    pub reply_to: Option<String>,
    /// The trace its publishes continue when traces are off here.
    pub traceparent: Option<String>,
}

impl Default for Call {
    fn default() -> Self {
        Self {
            span: tracing::Span::none(),
            message: None,
        }
    }
}

impl Calls {
    /// Records `call` as the one running when no task is known.
    pub fn set_latest(&self, call: Call) {
        self.lock().latest = call;
    }

    /// Records `call` as export call `task`, until [`Calls::end`].
    pub fn begin(&self, task: GuestTaskId, call: Call) -> Begun {
        let mut running = self.lock();
        running.begun += 1;
        let begun = Begun(running.begun);
        running.by_task.insert(task, (begun, call));
        begun
    }

    /// Forgets export call `task`, which returned. A task id is reused once
    /// its call is over, so the record is forgotten only if no later call
    /// took the id over in between.
    pub fn end(&self, task: GuestTaskId, begun: Begun) {
        let mut running = self.lock();
        if running
            .by_task
            .get(&task)
            .is_some_and(|(now, _)| *now == begun)
        {
            running.by_task.remove(&task);
        }
    }

    /// The call a host call belongs to: export call `task` when it is
    /// recorded, else the latest.
    pub fn of(&self, task: Option<GuestTaskId>) -> Call {
        let running = self.lock();
        task.and_then(|task| running.by_task.get(&task))
            .map_or(&running.latest, |(_, call)| call)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The export call behind the host call now running in `store`, if the
/// store runs concurrent calls.
pub fn root_task(mut store: impl AsContextMut) -> Option<GuestTaskId> {
    let mut store = store.as_context_mut();
    store.async_call_stack().ok()?.last()
}
