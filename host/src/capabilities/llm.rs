//! `fermyon:spin/llm@2.0.0`: linked so that apps importing it run (Spin's
//! SDKs pull it into many apps that never call it), with no model behind
//! it: this host runs no inferencing backend, and a manifest that grants
//! models (`ai_models`) is refused at start-up. A call answers the
//! interface's `model-not-supported`.

use wasmtime::component::{HasData, Linker};

use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-llm",
        imports: { default: trappable | tracing },
    });
}

use bindings::fermyon::spin::llm::{
    EmbeddingsResult, Error, Host, InferencingParams, InferencingResult, add_to_linker as link,
};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    link::<_, Llm>(linker, |_| NoModels)
}

struct Llm;

impl HasData for Llm {
    type Data<'a> = NoModels;
}

/// The host side: no model to run.
struct NoModels;

impl Host for NoModels {
    fn infer(
        &mut self,
        model: String,
        _prompt: String,
        _params: Option<InferencingParams>,
    ) -> wasmtime::Result<Result<InferencingResult, Error>> {
        tracing::debug!(%model, "LLM inferencing asked for; this host has no model");
        Ok(Err(Error::ModelNotSupported))
    }

    fn generate_embeddings(
        &mut self,
        model: String,
        _text: Vec<String>,
    ) -> wasmtime::Result<Result<EmbeddingsResult, Error>> {
        tracing::debug!(%model, "LLM embeddings asked for; this host has no model");
        Ok(Err(Error::ModelNotSupported))
    }
}
