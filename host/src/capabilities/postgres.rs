//! `spin:postgres/postgres@4.2.0` (not yet implemented: guests importing it fail to link).

use wasmtime::component::Linker;

use super::HostSettings;
use crate::engine;
use crate::manifest::{App, RuntimeConfig};

/// Per-app state, built once at start-up.
pub struct AppState;

impl AppState {
    /// Validates the app's grants against the runtime config.
    pub async fn configure(
        _app: &App,
        _runtime_config: &RuntimeConfig,
        _settings: &HostSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self)
    }

    /// The state one instance of `component` gets.
    pub fn instance_state(&self, _component: &str) -> InstanceState {
        InstanceState
    }
}

/// Per-instance state.
pub struct InstanceState;

/// Links the interface.
pub fn add_to_linker(_linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    Ok(())
}
