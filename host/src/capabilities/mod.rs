//! Host interfaces granted to guests, one module per capability.
//!
//! Every capability has the same shape: its `Config` from the runtime config,
//! an `AppState` built once by `configure`, a cheap per-instance
//! `InstanceState`, and one `add_to_linker`. None reaches into another's state.
