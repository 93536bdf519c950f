//! The gRPC face of `users`: `spindle.demo.users.v1.UserService` from
//! `proto/`, on the same profiles, cache and token rules as the JSON API.
//!
//! The token comes in the `authorization` metadata, which is the same
//! header the JSON API reads, so `authenticate` serves both; its errors and
//! the JSON API's become gRPC statuses with the same messages.

use demo_kit::events::UserEvent;
use demo_kit::grpc::{self, Code, Reply, Status};
use demo_kit::token::authenticate;
use spin_sdk::http::Request;

use crate::{Profile, ProfileChange};

use demo_kit::proto::users::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    UpdateUserRequest, UpdateUserResponse, User,
};

const SERVICE: &str = "spindle.demo.users.v1.UserService";

/// `ListUsers` reads this many profiles per page unless asked otherwise.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// Answers one call of the service (or of server reflection).
pub async fn serve(request: Request) -> Reply {
    let method = match grpc::method(&request) {
        Some((SERVICE, method)) => method.to_string(),
        Some((crate::reflection::SERVICE, "ServerReflectionInfo")) => {
            return crate::reflection::serve(request).await;
        }
        _ => return grpc::status_only(&Status::new(Code::Unimplemented, "no such service")),
    };
    match method.as_str() {
        "GetUser" => grpc::unary(get_user(request).await),
        "CreateUser" => grpc::unary(create_user(request).await),
        "UpdateUser" => grpc::unary(update_user(request).await),
        "ListUsers" => list_users(request)
            .await
            .unwrap_or_else(|status| grpc::status_only(&status)),
        _ => grpc::status_only(&Status::new(Code::Unimplemented, "no such method")),
    }
}

async fn get_user(request: Request) -> Result<GetUserResponse, Status> {
    authenticate(&request).await?;
    let asked: GetUserRequest = grpc::read_message(request).await?;
    if asked.user_id.is_empty() {
        return Err(Status::new(Code::InvalidArgument, "user_id is required"));
    }
    let (profile, _) = crate::read_profile(&asked.user_id).await?;
    Ok(GetUserResponse {
        user: Some(profile.into()),
    })
}

async fn create_user(request: Request) -> Result<CreateUserResponse, Status> {
    let claims = authenticate(&request).await?;
    let asked: CreateUserRequest = grpc::read_message(request).await?;
    let email = asked.email.trim().to_lowercase();
    if !email.contains('@') {
        return Err(Status::new(
            Code::InvalidArgument,
            "email must be an email address",
        ));
    }
    let change = crate::checked(ProfileChange {
        name: Some(asked.name),
        bio: Some(asked.bio),
    })?;
    let user = UserEvent {
        user_id: claims.sub,
        email,
        name: change.name.unwrap_or_default(),
    };
    let created = crate::create_profile(&user, change.bio.as_deref().unwrap_or_default())
        .await
        .map_err(|error| Status::from(demo_kit::api::ApiError::from(error)))?;
    if !created {
        return Err(Status::new(
            Code::AlreadyExists,
            "you have a profile already; change it with UpdateUser",
        ));
    }
    let (profile, _) = crate::read_profile(&user.user_id).await?;
    Ok(CreateUserResponse {
        user: Some(profile.into()),
    })
}

async fn update_user(request: Request) -> Result<UpdateUserResponse, Status> {
    let claims = authenticate(&request).await?;
    let asked: UpdateUserRequest = grpc::read_message(request).await?;
    if claims.sub != asked.user_id {
        return Err(Status::new(
            Code::PermissionDenied,
            "you may change only your own profile",
        ));
    }
    let change = ProfileChange {
        name: asked.name,
        bio: asked.bio,
    };
    let profile = crate::update_profile(&asked.user_id, change).await?;
    Ok(UpdateUserResponse {
        user: Some(profile.into()),
    })
}

/// Streams every profile, a page at a time: each page is sent as soon as it
/// is read, so a long list never sits whole in memory.
async fn list_users(request: Request) -> Result<Reply, Status> {
    authenticate(&request).await?;
    let asked: ListUsersRequest = grpc::read_message(request).await?;
    let page_size = match asked.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size @ 1..=MAX_PAGE_SIZE => size,
        _ => {
            return Err(Status::new(
                Code::InvalidArgument,
                format!("page_size must be at most {MAX_PAGE_SIZE}"),
            ));
        }
    };
    let (mut sender, reply) = grpc::server_stream();
    spin_sdk::wasip3::spawn(async move {
        let mut after = String::new();
        loop {
            let page = match crate::page_after(&after, page_size).await {
                Ok(page) => page,
                Err(error) => return sender.finish(Err(error.into())).await,
            };
            for profile in &page {
                if sender.send(&User::from(profile.clone())).await.is_err() {
                    // The client went away.
                    return;
                }
            }
            match page.last() {
                Some(last) if page.len() == page_size as usize => after = last.user_id.clone(),
                _ => break,
            }
        }
        sender.finish(Ok(())).await;
    });
    Ok(reply)
}

impl From<Profile> for User {
    fn from(profile: Profile) -> Self {
        User {
            user_id: profile.user_id,
            email: profile.email,
            name: profile.name,
            bio: profile.bio,
            created_at: profile.created_at,
            updated_at: profile.updated_at,
        }
    }
}
