//! The fan-out floor: subscribers kept as bare sockets, each publication
//! written with one non-blocking `send(2)` per subscriber.
//!
//! A socket that cannot take the whole frame at once (a full send buffer) or
//! has failed is dropped and counted, never retried, so the bench sees that
//! delivery as lost rather than late.

use std::io::Write;
use std::sync::atomic::Ordering;

use rainbow_protocol::websocket::{self, OpCode};
use tokio::net::TcpStream;

use super::Shared;

/// Adds a handshaken WebSocket to `channel`. Nothing reads it again.
pub(super) fn subscribe(stream: TcpStream, channel: &str, shared: &Shared) -> anyhow::Result<()> {
    let socket = stream.into_std()?;
    shared.channels().entry(channel.to_string()).or_default().push(socket);
    shared.counts.subscribers.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes `body` as a text frame to every subscriber of `channel` from
/// `shared.threads` threads; drops those that did not take it whole.
/// Returns how many did.
pub(super) fn publish(shared: &Shared, channel: &str, body: &[u8]) -> u64 {
    let mut frame = Vec::with_capacity(body.len() + websocket::MAX_HEADER);
    websocket::encode(OpCode::Text, body, &mut frame);
    let frame = &frame[..];
    let mut channels = shared.channels();
    let Some(subscribers) = channels.get_mut(channel) else { return 0 };
    let share = subscribers.len().div_ceil(shared.threads.max(1)).max(1);
    let failed: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let writers: Vec<_> = subscribers
            .chunks(share)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for (i, mut socket) in part.iter().enumerate() {
                        if !matches!(socket.write(frame), Ok(k) if k == frame.len()) {
                            failed.push(n * share + i);
                        }
                    }
                    failed
                })
            })
            .collect();
        // A writer thread only calls `write`, which does not panic.
        writers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
    });
    let failed: Vec<usize> = failed.into_iter().flatten().collect();
    let sent = (subscribers.len() - failed.len()) as u64;
    for &i in failed.iter().rev() {
        subscribers.swap_remove(i);
    }
    let counts = &shared.counts;
    counts.publications.fetch_add(1, Ordering::Relaxed);
    counts.delivered.fetch_add(sent, Ordering::Relaxed);
    counts.dropped.fetch_add(failed.len() as u64, Ordering::Relaxed);
    sent
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    use super::super::Floor;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_of_the_channel_gets_the_publication_as_a_text_frame() {
        let floor = Floor::bind("127.0.0.1:0".parse().unwrap(), 2, None).await.unwrap();
        let addr = floor.local_addr().unwrap();
        let counts = floor.counts();
        tokio::spawn(floor.serve(std::future::pending()));
        let mut subscribers = Vec::new();
        for _ in 0..5 {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/sub/room")).await.unwrap();
            subscribers.push(ws);
        }
        let (mut other, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/sub/elsewhere")).await.unwrap();
        let url = crate::http::HttpUrl::resolve(&format!("http://{addr}/pub/room")).await.unwrap();
        let mut publisher = crate::http::Client::new(url);
        let answer = publisher.post(&[], bytes::Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"delivered 5\n"[..]));
        for ws in &mut subscribers {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("hello".into()));
        }
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(100), other.next()).await;
        assert!(nothing.is_err(), "another channel's subscriber got {nothing:?}");
        // A subscriber that went away is dropped at the next publication.
        drop(subscribers.pop());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..2 {
            publisher.post(&[], bytes::Bytes::from_static(b"again")).await.unwrap();
        }
        assert!(counts.summary().contains("1 subscribers dropped"), "{}", counts.summary());
        // Without --forward, a WebSocket anywhere else is refused.
        assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/connect/")).await.is_err());
    }
}
