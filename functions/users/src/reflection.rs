//! gRPC server reflection (`grpc.reflection.v1.ServerReflection`) for the
//! app's gRPC services, so that grpcurl and the like can list and call them
//! without the `.proto` files.
//!
//! The descriptors are compiled from `proto/` by the build script and
//! embedded; the reflection service's own come with tonic-reflection, which
//! also gives the messages. The call is a bidirectional stream: each request
//! is answered as it arrives.

use demo_kit::grpc::{self, Code, Reply};
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use spin_sdk::http::Request;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as Asked;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as Answer;
use tonic_reflection::pb::v1::{
    ErrorResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServerReflectionResponse, ServiceResponse,
};

/// The reflection service's full name.
pub const SERVICE: &str = "grpc.reflection.v1.ServerReflection";

/// The app's descriptors, as demo-kit's build script wrote them.
const APP_DESCRIPTORS: &[u8] = demo_kit::proto::DESCRIPTORS;

/// Answers a `ServerReflectionInfo` stream.
pub async fn serve(request: Request) -> Reply {
    let mut incoming = grpc::Incoming::new(request);
    let (mut sender, reply) = grpc::server_stream();
    spin_sdk::wasip3::spawn(async move {
        let files = files();
        while let Some(asked) = incoming.next::<ServerReflectionRequest>().await {
            let asked = match asked {
                Ok(asked) => asked,
                Err(status) => return sender.finish(Err(status)).await,
            };
            if sender.send(&answer(&files, asked)).await.is_err() {
                return;
            }
        }
        sender.finish(Ok(())).await;
    });
    reply
}

/// Every file this service describes: the app's and reflection's own.
fn files() -> Vec<FileDescriptorProto> {
    [
        APP_DESCRIPTORS,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    // Both sets are built into this component; one that did not decode
    // would fail the test that lists the services.
    .filter_map(|bytes| FileDescriptorSet::decode(bytes).ok())
    .flat_map(|set| set.file)
    .collect()
}

fn answer(
    files: &[FileDescriptorProto],
    asked: ServerReflectionRequest,
) -> ServerReflectionResponse {
    let message = match &asked.message_request {
        Some(Asked::ListServices(_)) => Answer::ListServicesResponse(ListServiceResponse {
            service: services(files)
                .map(|name| ServiceResponse { name })
                .collect(),
        }),
        Some(Asked::FileContainingSymbol(symbol)) => {
            found(files.iter().find(|file| defines(file, symbol)))
        }
        Some(Asked::FileByFilename(name)) => {
            found(files.iter().find(|file| file.name() == name.as_str()))
        }
        _ => Answer::ErrorResponse(ErrorResponse {
            error_code: Code::Unimplemented as i32,
            error_message: "only list_services, file_by_filename and \
                            file_containing_symbol are supported"
                .into(),
        }),
    };
    ServerReflectionResponse {
        valid_host: asked.host.clone(),
        original_request: Some(asked),
        message_response: Some(message),
    }
}

/// The full names of the services in `files`.
fn services(files: &[FileDescriptorProto]) -> impl Iterator<Item = String> + '_ {
    files.iter().flat_map(|file| {
        file.service
            .iter()
            .map(move |service| format!("{}.{}", file.package(), service.name()))
    })
}

/// Whether `file` defines `symbol`: a service, one of its methods, or a
/// message, by full name.
fn defines(file: &FileDescriptorProto, symbol: &str) -> bool {
    let Some(local) = symbol
        .strip_prefix(file.package())
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return false;
    };
    let top = local.split('.').next().unwrap_or(local);
    file.service.iter().any(|service| service.name() == top)
        || file
            .message_type
            .iter()
            .any(|message| message.name() == top)
        || file.enum_type.iter().any(|kind| kind.name() == top)
}

/// The file (none of ours imports another), or `NOT_FOUND`.
fn found(file: Option<&FileDescriptorProto>) -> Answer {
    match file {
        Some(file) => Answer::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: vec![file.encode_to_vec()],
        }),
        None => Answer::ErrorResponse(ErrorResponse {
            error_code: Code::NotFound as i32,
            error_message: "no such symbol or file".into(),
        }),
    }
}
