//! One client's WebSocket, driven over its raw TCP stream.
//!
//! After the upgrade the stream is taken back from hyper
//! ([`Socket::from_upgraded`]) and read and written here, with the framing
//! of `rainbow_protocol::websocket`. The point is what an idle connection
//! holds: no buffer at all.
//!
//! - Reading waits for readiness, then reads into a buffer on the thread's
//!   stack and decodes the frames in it. Only bytes that do not make a whole
//!   frame yet (or frames left while the driver paused reading) are copied to
//!   the heap (`input`), which is freed again as soon as it is empty.
//! - Writing encodes frames into `output`, writes what the socket takes, and
//!   frees `output` once it has drained.
//! - Pings are answered and a client's close frame is echoed here, as
//!   tungstenite did; the driver sees every message.

use std::io;
use std::task::{Context, Poll, ready};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rainbow_protocol::websocket::{self, Decoded, Decoder, FrameError, Message, OpCode};
use tokio::net::TcpStream;

/// Bytes read per `read(2)` into the stack buffer (and the least room kept
/// in `input` while a frame is incomplete).
const READ_CHUNK: usize = 4096;

/// Queued output above which pings go unanswered: a client that sends pings
/// but does not read cannot make the gateway buffer pongs without bound (RFC
/// 6455 §5.5.3 allows answering only the latest ping; tungstenite kept one).
const PONG_LIMIT: usize = 16 * 1024;

/// What the socket hands the driver: a message, or the error that ends the
/// stream of messages.
pub type Incoming = Result<Message, FrameError>;

/// What one read did.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Data (or nothing yet) was read; the connection is open.
    Open,
    /// The client closed the TCP stream.
    Eof,
}

/// What one poll of [`Socket::poll_io`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Everything queued was written.
    Flushed,
    /// The socket has data (or an error) to read.
    Readable,
}

/// A client's WebSocket over a TCP stream (see the module documentation).
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read but not decoded: an incomplete frame, or frames left when
    /// the driver stopped taking messages. Empty (unallocated) otherwise.
    input: Vec<u8>,
    /// `input` holds frames the driver has not taken yet.
    backlog: bool,
    /// Encoded frames; `output[written..]` is not written yet. Empty
    /// (unallocated) once drained.
    output: Vec<u8>,
    written: usize,
}

impl Socket {
    /// Takes the TCP stream (and any bytes hyper read past the handshake)
    /// back from an upgraded connection. `None` if the connection is not a
    /// TCP stream served by the gateway's listener (`server::listener`).
    pub fn from_upgraded(upgraded: Upgraded, max_message: usize) -> Option<Socket> {
        let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
        let input = parts.read_buf.to_vec();
        Some(Socket {
            stream: parts.io.into_inner(),
            decoder: Decoder::new(max_message),
            backlog: !input.is_empty(),
            input,
            output: Vec::new(),
            written: 0,
        })
    }

    /// A socket over a stream that has just been upgraded (for tests).
    #[cfg(test)]
    pub fn new(stream: TcpStream, max_message: usize) -> Socket {
        Socket {
            stream,
            decoder: Decoder::new(max_message),
            input: Vec::new(),
            backlog: false,
            output: Vec::new(),
            written: 0,
        }
    }

    /// Whether frames read earlier wait to be handed over ([`Socket::resume`]).
    pub fn has_backlog(&self) -> bool {
        self.backlog
    }

    /// Bytes queued for writing.
    pub fn queued(&self) -> usize {
        self.output.len() - self.written
    }

    /// Heap bytes held by the buffers (0 for an idle connection).
    pub fn buffered_capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }

    /// Flushes what is queued and, when `reading`, waits for data to read.
    pub fn poll_io(&mut self, cx: &mut Context<'_>, reading: bool) -> Poll<io::Result<Io>> {
        if self.queued() > 0 {
            match self.poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(Io::Flushed)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if reading {
            ready!(self.stream.poll_read_ready(cx))?;
            return Poll::Ready(Ok(Io::Readable));
        }
        Poll::Pending
    }

    /// Reads once (if the socket has data) and hands each decoded message to
    /// `handle` until it returns `false`; whatever is left stays for
    /// [`Socket::resume`] or the next read.
    pub fn read(&mut self, handle: &mut dyn FnMut(Incoming) -> bool) -> io::Result<Read> {
        if !self.input.is_empty() {
            if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
                // Doubling as data arrives: a frame of n bytes costs O(log n)
                // reallocations, and never more room than twice what came.
                self.input.reserve(READ_CHUNK);
            }
            return match self.stream.try_read_buf(&mut self.input) {
                Ok(0) => Ok(Read::Eof),
                Ok(_) => {
                    self.resume(handle);
                    Ok(Read::Open)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Open),
                Err(e) => Err(e),
            };
        }
        // On the thread's stack: nothing of it stays with the connection.
        let mut chunk = [0u8; READ_CHUNK];
        let n = match self.stream.try_read(&mut chunk) {
            Ok(0) => return Ok(Read::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Open),
            Err(e) => return Err(e),
        };
        let (consumed, _) = self.decode(&mut chunk[..n], handle);
        let rest = &chunk[consumed..n];
        if !rest.is_empty() {
            // Room for what arrived and the next read, not for what a frame
            // header announces: the buffer grows with the data only.
            let mut input = Vec::with_capacity(rest.len() + READ_CHUNK);
            input.extend_from_slice(rest);
            self.input = input;
        }
        Ok(Read::Open)
    }

    /// Hands over the messages already in `input` (after the driver stopped
    /// taking them, or after a read into `input`).
    pub fn resume(&mut self, handle: &mut dyn FnMut(Incoming) -> bool) {
        let mut input = std::mem::take(&mut self.input);
        let (consumed, needed) = self.decode(&mut input, handle);
        input.drain(..consumed);
        if input.is_empty() {
            // Dropping it frees the buffer: `self.input` stays unallocated.
            return;
        }
        let keep = input.len() + READ_CHUNK;
        if input.capacity() > 2 * keep && input.len() < needed {
            // A large frame went through; keep room for what is here.
            input.shrink_to(keep);
        }
        self.input = input;
    }

    /// Decodes frames from the start of `buf` into `handle`. Returns the
    /// bytes consumed and, when it stopped at an incomplete frame, how many
    /// bytes that frame needs (0 otherwise). Sets `backlog` when `handle`
    /// stopped it with frames left.
    fn decode(&mut self, buf: &mut [u8], handle: &mut dyn FnMut(Incoming) -> bool) -> (usize, usize) {
        let mut at = 0;
        self.backlog = false;
        loop {
            match self.decoder.decode(&mut buf[at..]) {
                Ok(Decoded::Incomplete { needed }) => return (at, needed),
                Ok(Decoded::Frame { consumed, message }) => {
                    at += consumed;
                    let Some(message) = message else { continue };
                    self.answer(&message);
                    let more = handle(Ok(message));
                    if !more {
                        self.backlog = at < buf.len();
                        return (at, 0);
                    }
                }
                Err(e) => {
                    // Nothing after a framing error is read: drop it all.
                    handle(Err(e));
                    return (buf.len(), 0);
                }
            }
        }
    }

    /// Queues the protocol's own answers: a pong for a ping, the echo of a
    /// close frame.
    fn answer(&mut self, message: &Message) {
        match message {
            Message::Ping(payload) if self.queued() < PONG_LIMIT => self.queue(OpCode::Pong, payload),
            Message::Ping(_) => {}
            Message::Close(Some((code, reason))) => self.queue_close(*code, reason),
            Message::Close(None) => self.queue(OpCode::Close, &[]),
            Message::Data { .. } | Message::Pong(_) => {}
        }
    }

    fn compact(&mut self) {
        if self.written > 0 && self.written * 2 >= self.output.len() {
            self.output.drain(..self.written);
            self.written = 0;
        }
    }

    /// Queues a frame.
    pub fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        self.compact();
        websocket::encode(opcode, payload, &mut self.output);
    }

    /// Queues a close frame.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        self.compact();
        websocket::encode_close(code, reason, &mut self.output);
    }

    fn drained(&mut self) {
        // Free the buffer: an idle connection holds none.
        self.output = Vec::new();
        self.written = 0;
    }

    /// Writes what the socket takes now, without waiting.
    pub fn try_flush(&mut self) -> io::Result<()> {
        while self.queued() > 0 {
            match self.stream.try_write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.drained();
        Ok(())
    }

    /// Writes everything queued.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.queued() > 0 {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(&self.output[self.written..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                // Readiness was cleared: the next poll registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.drained();
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(max_message: usize) -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::new(server, max_message), client)
    }

    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        websocket::encode_masked(fin, opcode, payload, [1, 2, 3, 4], &mut out);
        out
    }

    /// Waits for data and reads until `want` messages (or an error) arrived.
    async fn receive(socket: &mut Socket, want: usize) -> Vec<Incoming> {
        let mut got = Vec::new();
        while got.len() < want {
            let io = std::future::poll_fn(|cx| socket.poll_io(cx, true)).await.unwrap();
            if io == Io::Readable {
                let read = socket.read(&mut |m| {
                    got.push(m);
                    true
                });
                assert_eq!(read.unwrap(), Read::Open);
            }
        }
        got
    }

    fn binary(payload: &[u8]) -> Incoming {
        Ok(Message::Data { text: false, payload: Bytes::copy_from_slice(payload) })
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_buffered_only_until_whole() {
        let (mut socket, mut client) = pair(1 << 20).await;
        let frame = masked(true, OpCode::Binary, b"hello");
        client.write_all(&frame[..4]).await.unwrap();
        // Half a frame: nothing yet, and the part is kept.
        while socket.buffered_capacity() == 0 {
            std::future::poll_fn(|cx| socket.poll_io(cx, true)).await.unwrap();
            socket.read(&mut |m| panic!("{m:?}")).unwrap();
        }
        client.write_all(&frame[4..]).await.unwrap();
        assert_eq!(receive(&mut socket, 1).await, [binary(b"hello")]);
        assert_eq!(socket.buffered_capacity(), 0, "an idle socket holds no buffer");

        // A message larger than a read, in many frames.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut wire = masked(false, OpCode::Binary, &big[..60_000]);
        wire.extend(masked(true, OpCode::Continuation, &big[60_000..]));
        client.write_all(&wire).await.unwrap();
        assert_eq!(receive(&mut socket, 1).await, [binary(&big)]);
        assert_eq!(socket.buffered_capacity(), 0);
    }

    /// Issue 14, finding 6: a frame header announcing 1 MiB made the socket
    /// reserve 1 MiB before any of it arrived.
    #[tokio::test]
    async fn the_buffer_grows_with_the_data_not_with_the_announced_size() {
        let (mut socket, mut client) = pair(1 << 20).await;
        let frame = masked(true, OpCode::Binary, &vec![7u8; 1 << 20]);
        // The header and a few bytes of the payload.
        client.write_all(&frame[..64]).await.unwrap();
        while socket.buffered_capacity() == 0 {
            std::future::poll_fn(|cx| socket.poll_io(cx, true)).await.unwrap();
            socket.read(&mut |m| panic!("{m:?}")).unwrap();
        }
        assert!(socket.buffered_capacity() <= 2 * READ_CHUNK, "{} bytes reserved", socket.buffered_capacity());
        // The rest arrives: the message is whole, and the buffer is freed.
        client.write_all(&frame[64..]).await.unwrap();
        assert_eq!(receive(&mut socket, 1).await, [binary(&vec![7u8; 1 << 20])]);
        assert_eq!(socket.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_close_is_echoed() {
        let (mut socket, mut client) = pair(1024).await;
        let mut wire = masked(true, OpCode::Ping, b"p1");
        wire.extend(masked(true, OpCode::Close, b"\x03\xe8bye"));
        client.write_all(&wire).await.unwrap();
        let got = receive(&mut socket, 2).await;
        assert_eq!(got[0], Ok(Message::Ping(Bytes::from_static(b"p1"))));
        assert_eq!(got[1], Ok(Message::Close(Some((1000, "bye".into())))));
        socket.flush().await.unwrap();
        assert_eq!(socket.buffered_capacity(), 0, "the output buffer is freed once written");
        let mut answer = [0u8; 11];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"\x8a\x02p1\x88\x05\x03\xe8bye");
    }

    #[tokio::test]
    async fn pongs_for_a_client_that_does_not_read_are_bounded() {
        let (mut socket, mut client) = pair(1024).await;
        let ping = masked(true, OpCode::Ping, &[7; 125]);
        let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
        client.write_all(&flood).await.unwrap();
        // Nothing is flushed here, as when the client's receive window is full.
        receive(&mut socket, 1000).await;
        assert!(socket.queued() < PONG_LIMIT + 2 + 125, "{} bytes of pongs queued", socket.queued());
    }

    #[tokio::test]
    async fn a_paused_reader_keeps_the_rest_for_later() {
        let (mut socket, mut client) = pair(1024).await;
        let mut wire = masked(true, OpCode::Binary, b"one");
        wire.extend(masked(true, OpCode::Text, b"two"));
        wire.extend(&masked(true, OpCode::Binary, b"three")[..5]);
        client.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            std::future::poll_fn(|cx| socket.poll_io(cx, true)).await.unwrap();
            socket
                .read(&mut |m| {
                    got.push(m);
                    false
                })
                .unwrap();
        }
        assert_eq!(got, [binary(b"one")]);
        assert!(socket.has_backlog());
        socket.resume(&mut |m| {
            got.push(m);
            true
        });
        assert!(!socket.has_backlog());
        assert_eq!(got[1], Ok(Message::Data { text: true, payload: Bytes::from_static(b"two") }));
        // The incomplete third frame waits for the rest.
        assert!(socket.buffered_capacity() > 0);
        client.write_all(&masked(true, OpCode::Binary, b"three")[5..]).await.unwrap();
        assert_eq!(receive(&mut socket, 1).await, [binary(b"three")]);
        assert_eq!(socket.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn framing_errors_are_reported_and_eof_seen() {
        let (mut socket, mut client) = pair(16).await;
        client.write_all(&masked(true, OpCode::Binary, &[0; 17])).await.unwrap();
        assert_eq!(receive(&mut socket, 1).await, [Err(FrameError::TooBig { size: 17, max: 16 })]);
        drop(client);
        loop {
            std::future::poll_fn(|cx| socket.poll_io(cx, true)).await.unwrap();
            if socket.read(&mut |_| true).unwrap() == Read::Eof {
                break;
            }
        }
    }

    #[tokio::test]
    async fn frames_are_written_unmasked_and_large_ones_whole() {
        let (mut socket, mut client) = pair(16).await;
        let big = vec![9u8; 300_000];
        socket.queue(OpCode::Binary, &big);
        socket.queue(OpCode::Ping, &[]);
        let reader = tokio::spawn(async move {
            let mut all = vec![0u8; 10 + 300_000 + 2];
            client.read_exact(&mut all).await.unwrap();
            all
        });
        socket.flush().await.unwrap();
        let all = reader.await.unwrap();
        assert_eq!(&all[..2], b"\x82\x7f");
        assert_eq!(u64::from_be_bytes(all[2..10].try_into().unwrap()), 300_000);
        assert!(all[10..300_010].iter().all(|b| *b == 9));
        assert_eq!(&all[300_010..], b"\x89\x00");
        assert_eq!(socket.buffered_capacity(), 0);
    }
}
