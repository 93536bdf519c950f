//! Triggers turn an outside event into a call on a component instance.
//!
//! Each trigger owns its routing and admission; the engine only hands it one
//! `InstancePre` per component.

pub mod http;
