//! Triggers turn an outside event into a call on a component instance.
//!
//! Each trigger owns its routing; the engine hands it one `InstancePre` per
//! component. Admission is per component and shared by its triggers, so a
//! component that is both HTTP- and NATS-triggered has one concurrency limit.

pub mod admission;
pub mod http;
pub mod nats;
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::{self, LoadedComponent};
use admission::Admission;

/// Each loaded component's admission control, by id.
pub type Admissions = HashMap<String, Arc<Admission>>;

/// One admission per component, sized by its `max_concurrency`.
pub fn admissions(components: &[LoadedComponent]) -> Admissions {
    components
        .iter()
        .map(|loaded| {
            let limit = engine::max_concurrency(&loaded.config) as usize;
            (loaded.config.id.clone(), Arc::new(Admission::new(limit)))
        })
        .collect()
}
