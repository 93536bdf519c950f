//! Load generators for `benches/run`. Each prints one tab-separated result
//! line on stdout (what the script records) and its progress on stderr.
//!
//! - `nats-drive`: publishes messages with a reply subject, at most
//!   `--window` unanswered, and times until every reply is back.
//! - `nats-echo`: the native peer of the `nats-echo` guest: answers each
//!   message on its reply subject, in a queue group.
//! - `grpc-user`, `grpc-drive`, `grpc-users`: gRPC `GetUser` through the
//!   demo's users service and through its native peer (see [`grpc`]).
//! - `saga`: signs up users on the demo app, places orders (closed or open
//!   loop) and times each from when it was due to its final event, hop by
//!   hop (see [`saga`]).

mod grpc;
mod saga;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Load generators for benches/run")]
enum Command {
    /// Publishes `--messages` requests to `--subject`, times all replies.
    NatsDrive {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 256)]
        window: usize,
    },
    /// Answers every message on `--subject` with `echo: <body>`.
    NatsEcho {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        subject: String,
    },
    /// Signs a user up on the demo app; prints `user_id  token  profile`.
    GrpcUser {
        /// The demo app, e.g. http://127.0.0.1:3000.
        #[arg(long)]
        url: String,
    },
    /// Calls `UserService.GetUser` over h2c for `--seconds`, `--concurrency`
    /// calls at a time.
    GrpcDrive {
        /// The gRPC server, e.g. http://127.0.0.1:3000.
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// The native peer: `UserService.GetUser` in tonic, the profile in Redis.
    GrpcUsers {
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The demo's `jwt_secret`.
        #[arg(long)]
        secret: String,
        #[arg(long, default_value = "spindle-demo")]
        issuer: String,
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// The user and profile (JSON, as `GET /users/{id}` shows it) to serve.
        #[arg(long)]
        user: String,
        #[arg(long)]
        profile: String,
    },
    /// Orders through the demo app's saga.
    Saga {
        /// The demo app, e.g. http://127.0.0.1:3000.
        #[arg(long)]
        url: String,
        /// The app's NATS server, where the saga's final events go.
        #[arg(long)]
        nats: String,
        #[arg(long, default_value_t = 1000)]
        orders: usize,
        /// Closed loop: at most this many orders being placed at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Open loop instead: this many orders per second, on schedule.
        #[arg(long)]
        rate: Option<f64>,
        /// Orders are spread over this many users; each user's credit
        /// limit covers about 100 of them.
        #[arg(long, default_value_t = 10)]
        users: usize,
        /// Write each hop's p50, p99 and mean (ms) to this file.
        #[arg(long)]
        hops: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::NatsDrive {
            nats,
            subject,
            messages,
            window,
        } => nats_drive(&nats, &subject, messages, window).await,
        Command::NatsEcho { nats, subject } => nats_echo(&nats, &subject).await,
        Command::GrpcUser { url } => grpc::sign_up(&url).await,
        Command::GrpcDrive {
            url,
            token,
            user,
            concurrency,
            seconds,
        } => {
            let duration = Duration::from_secs(seconds);
            grpc::drive(&url, &token, &user, concurrency, duration).await
        }
        Command::GrpcUsers {
            port,
            secret,
            issuer,
            redis,
            user,
            profile,
        } => grpc::serve(port, &secret, &issuer, &redis, &user, &profile).await,
        Command::Saga {
            url,
            nats,
            orders,
            concurrency,
            rate,
            users,
            hops,
        } => {
            let pacing = match rate {
                Some(rate) => saga::Pacing::Open { rate },
                None => saga::Pacing::Closed { concurrency },
            };
            saga::run(&url, &nats, orders, users, pacing, hops.as_deref()).await
        }
    }
}

/// Prints `messages  seconds  messages/s` for a timed pass after a warm-up.
async fn nats_drive(
    url: &str,
    subject: &str,
    messages: usize,
    window: usize,
) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    round_trips(&client, subject, messages.min(1000), window).await?;
    let elapsed = round_trips(&client, subject, messages, window).await?;
    let seconds = elapsed.as_secs_f64();
    println!("{messages}\t{seconds:.3}\t{:.0}", messages as f64 / seconds);
    Ok(())
}

async fn round_trips(
    client: &async_nats::Client,
    subject: &str,
    messages: usize,
    window: usize,
) -> anyhow::Result<Duration> {
    let inbox = format!("bench.replies.{}", uuid::Uuid::new_v4().simple());
    let mut replies = client.subscribe(inbox.clone()).await?;
    client.flush().await?;
    let permits = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let publisher = {
        let (client, subject, permits) = (client.clone(), subject.to_string(), permits.clone());
        tokio::spawn(async move {
            for index in 0..messages {
                permits.acquire().await?.forget();
                let body = format!("message {index}");
                client
                    .publish_with_reply(subject.clone(), inbox.clone(), body.into())
                    .await?;
            }
            client.flush().await?;
            anyhow::Ok(())
        })
    };
    for received in 0..messages {
        match tokio::time::timeout(Duration::from_secs(30), replies.next()).await {
            Ok(Some(_)) => permits.add_permits(1),
            _ => bail!("only {received} of {messages} replies within 30 s of the last"),
        }
    }
    publisher.await??;
    Ok(started.elapsed())
}

async fn nats_echo(url: &str, subject: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let mut messages = client
        .queue_subscribe(subject.to_string(), "echo".into())
        .await?;
    client.flush().await?;
    println!("Ready");
    while let Some(message) = messages.next().await {
        if let Some(reply) = message.reply {
            let mut body = b"echo: ".to_vec();
            body.extend_from_slice(&message.payload);
            client.publish(reply, body.into()).await?;
        }
    }
    Ok(())
}
