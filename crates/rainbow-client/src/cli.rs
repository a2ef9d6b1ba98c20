//! The `rainbow client` command line: [`ClientArgs`] (clap) and [`run`].
//!
//! ```text
//! rainbow client URL send TYPE DATA [--qos 1] [--device-id ID] [--os OS] [--timeout SECS]
//! rainbow client URL listen [--device-id ID] [--os OS]
//! ```
//!
//! `send` prints the reply payload to stdout. `listen` prints each message
//! from the gateway as `type=<t> qos=<q> <payload>` (payload as lossy UTF-8),
//! answering qos 1/2 with an empty reply, until Ctrl-C or the gateway closes.
//! [`run`] returns the error; printing it to stderr and exiting non-zero is
//! the binary's job (the gateway's `main`), so this module holds no process
//! handling and no library logic.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use rainbow_protocol::Qos;

use crate::config::random_device_id;
use crate::{Client, ClientConfig, ClientError, DeviceIn, Event};

/// Connect to a Rainbow gateway as a client.
#[derive(Debug, Clone, Parser)]
#[command(name = "rainbow-client")]
pub struct ClientArgs {
    /// The gateway's WebSocket URL, e.g. ws://127.0.0.1:1984/connect/ (may
    /// carry query parameters for the connect hook).
    pub url: String,
    /// The device id to present (default: random hex).
    #[arg(long, global = true)]
    pub device_id: Option<String>,
    /// The client OS to present.
    #[arg(long, global = true, default_value = "rainbow-cli")]
    pub os: String,
    /// Send the device id and OS as query parameters instead of headers.
    #[arg(long, global = true, value_enum, default_value_t = DeviceInArg::Headers)]
    pub device_in: DeviceInArg,
    /// Seconds to wait for the handshake and for a reply.
    #[arg(long, global = true, default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
    /// What to do once connected.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// Where the device parameters go, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceInArg {
    /// `X-DEVICEID` / `X-CLIENT-OS` headers.
    Headers,
    /// `X-DEVICEID` / `X-CLIENT-OS` query parameters.
    Query,
}

/// The client subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Send one message and print the reply payload.
    Send {
        /// The message type (0..=65535).
        #[arg(value_name = "TYPE")]
        message_type: u16,
        /// The payload, sent as UTF-8 bytes.
        data: String,
        /// The qos level: 0, 1 or 2.
        #[arg(long, default_value = "1", value_parser = parse_qos)]
        qos: Qos,
    },
    /// Print every message from the gateway, answering qos 1/2 automatically.
    Listen,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?} is not a usable timeout: {e}"))
}

fn parse_qos(s: &str) -> Result<Qos, String> {
    s.parse::<u8>().ok().and_then(Qos::from_u8).ok_or_else(|| format!("qos must be 0, 1 or 2, not {s:?}"))
}

impl ClientArgs {
    /// The [`ClientConfig`] these arguments describe (no reconnection).
    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(self.url.clone())
            .device_id(self.device_id.clone().unwrap_or_else(random_device_id))
            .os(self.os.clone())
            .device_in(match self.device_in {
                DeviceInArg::Headers => DeviceIn::Headers,
                DeviceInArg::Query => DeviceIn::Query,
            })
            .connect_timeout(self.timeout)
            .request_timeout(self.timeout)
    }
}

/// Runs one `rainbow client` invocation. Returns when the reply was printed
/// (`send`), or on Ctrl-C or a normal close (1000 or 1001) by the gateway
/// (`listen`); any other close while listening is returned as
/// [`ClientError::Closed`].
pub async fn run(args: ClientArgs) -> Result<(), ClientError> {
    let (client, events) = Client::connect(args.config()).await?;
    match args.command {
        ClientCommand::Send { message_type, data, qos } => {
            // Nobody reads events here: messages the gateway pushes are
            // still answered, then discarded.
            drop(events);
            let result = client.send(message_type, data, qos).await;
            client.close().await;
            let reply = result?;
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (e.g. piped to `head`) is not the gateway's fault.
            let _ = stdout.write_all(&reply).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush());
            Ok(())
        }
        ClientCommand::Listen => listen(&client, events).await,
    }
}

/// One line of `listen` output: `type=<t> qos=<q> <payload>\n`.
fn listen_line(msg: &crate::ServerMessage) -> String {
    format!("type={} qos={} {}\n", msg.message_type, msg.qos.as_u8(), String::from_utf8_lossy(&msg.payload))
}

async fn listen(client: &Client, mut events: crate::Events) -> Result<(), ClientError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut ctrl_c => {
                client.close().await;
                return Ok(());
            }
        };
        match event {
            Some(Event::Message(msg)) => {
                let line = listen_line(&msg);
                let mut stdout = std::io::stdout().lock();
                if stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                    // Nobody reads our output any more.
                    client.close().await;
                    return Ok(());
                }
            }
            // 1000: normal close; 1001: the gateway is going away.
            Some(Event::Closed { code: Some(1000 | 1001), .. }) | None => return Ok(()),
            Some(Event::Closed { code, reason }) => return Err(ClientError::Closed { code, reason }),
            Some(Event::Reconnected) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_send_with_flags_after_the_subcommand() {
        let args = ClientArgs::try_parse_from([
            "rainbow-client",
            "ws://127.0.0.1:1/connect/",
            "send",
            "7",
            "{}",
            "--qos",
            "2",
            "--device-id",
            "dev",
            "--os",
            "ios",
            "--timeout",
            "1.5",
        ])
        .unwrap();
        assert_eq!(args.device_id.as_deref(), Some("dev"));
        assert_eq!(args.os, "ios");
        assert_eq!(args.timeout, Duration::from_millis(1500));
        match args.command {
            ClientCommand::Send { message_type, data, qos } => {
                assert_eq!((message_type, data.as_str(), qos), (7, "{}", Qos::ExactlyOnce));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn listen_prints_one_line_per_message() {
        let msg = crate::ServerMessage {
            message_type: 3,
            qos: Qos::ExactlyOnce,
            dup: false,
            payload: bytes::Bytes::from_static(b"{\"a\":1} \xff"),
        };
        assert_eq!(listen_line(&msg), "type=3 qos=2 {\"a\":1} \u{fffd}\n");
    }

    #[test]
    fn defaults_and_bad_values() {
        let args = ClientArgs::try_parse_from(["rainbow-client", "ws://h/connect/", "listen"]).unwrap();
        assert_eq!(args.os, "rainbow-cli");
        assert_eq!(args.timeout, Duration::from_secs(10));
        assert!(args.device_id.is_none());
        assert!(ClientArgs::try_parse_from(["c", "ws://h/", "send", "1", "x", "--qos", "3"]).is_err());
        assert!(ClientArgs::try_parse_from(["c", "ws://h/", "send", "1", "x", "--timeout", "-1"]).is_err());
        assert!(ClientArgs::try_parse_from(["c", "ws://h/", "send", "70000", "x"]).is_err());
    }
}
