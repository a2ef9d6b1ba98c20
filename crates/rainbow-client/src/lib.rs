//! A tokio client for Rainbow v1, the realtime WebSocket gateway protocol
//! (docs/protocol.md §2, §3 and §12).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use rainbow_client::{Client, ClientConfig, Event, Qos};
//!
//! # async fn demo() -> Result<(), rainbow_client::ClientError> {
//! let config = ClientConfig::new("ws://127.0.0.1:1984/connect/")
//!     .device_id("device-1")
//!     .os("linux")
//!     .handler(|msg| Some(format!("got type {}", msg.message_type).into()));
//! let (client, mut events) = Client::connect(config).await?;
//! let reply = client.send(1, r#"{"id": 100}"#, Qos::AtLeastOnce).await?;
//! println!("{}", String::from_utf8_lossy(&reply));
//! while let Some(event) = events.next().await {
//!     if let Event::Message(msg) = event {
//!         println!("{} {:?}", msg.message_type, msg.payload);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - [`config`]: [`ClientConfig`], [`ReconnectPolicy`], [`DeviceIn`], [`Handler`].
//! - [`Client`]: sends, with qos 0/1/2, and close.
//! - [`Events`]: the bounded stream of [`Event`]s (messages from the gateway,
//!   closes, reconnects).
//! - [`ClientError`]: every failure, saying which side failed.
//! - [`cli`]: the `rainbow client` command line.
//!
//! The wire format and the QoS state machines are not here: they come from
//! [`rainbow_protocol`], which this crate drives over tokio-tungstenite.
#![warn(missing_docs)]

pub mod cli;
mod client;
pub mod config;
mod connection;
mod error;
mod event;
mod handshake;

pub use client::Client;
pub use config::{ClientConfig, DeviceIn, Handler, ReconnectPolicy};
pub use error::ClientError;
pub use event::{Event, Events, ServerMessage};
pub use handshake::{CLIENT_OS_HEADER, DEVICE_ID_HEADER};
pub use rainbow_protocol::{DecodeError, Qos};
