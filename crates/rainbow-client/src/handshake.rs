//! Opening one WebSocket connection to the gateway: building the handshake
//! request from a [`ClientConfig`] (URL, query, device parameters, headers),
//! the tokio-tungstenite settings, and turning handshake failures into
//! [`ClientError`]s.
//!
//! What happens on the connection afterwards lives in [`crate::connection`].

use std::io;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::{ClientConfig, DeviceIn};
use crate::error::ClientError;

/// The WebSocket as the connection task holds it.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The header (and query parameter) carrying the device id.
pub const DEVICE_ID_HEADER: &str = "X-DEVICEID";
/// The header (and query parameter) carrying the client OS.
pub const CLIENT_OS_HEADER: &str = "X-CLIENT-OS";

/// The longest refusal body kept in [`ClientError::Refused`].
const MAX_REFUSAL_BODY: usize = 1024;

/// Small buffers: a client connection carries small JSON packets.
const READ_BUFFER: usize = 8 * 1024;
const WRITE_BUFFER: usize = 8 * 1024;

/// Percent-encodes `s` for a query string (RFC 3986 unreserved characters
/// stay as they are).
fn encode_component(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        }
    }
}

/// The handshake URL: the configured one plus our query parameters (and the
/// device parameters when they go in the query). A fragment is dropped.
pub(crate) fn handshake_url(config: &ClientConfig) -> String {
    let base = config.url.split('#').next().unwrap_or_default();
    let mut params: Vec<(&str, &str)> = config.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if config.device_in == DeviceIn::Query {
        params.push((DEVICE_ID_HEADER, &config.device_id));
        params.push((CLIENT_OS_HEADER, &config.os));
    }
    let mut url = base.to_owned();
    for (name, value) in params {
        if !url.contains('?') {
            url.push('?');
        } else if !url.ends_with('?') && !url.ends_with('&') {
            url.push('&');
        }
        encode_component(name, &mut url);
        url.push('=');
        encode_component(value, &mut url);
    }
    url
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ClientError> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|e| ClientError::InvalidHeader(format!("{name:?}: {e}")))?;
    let value = HeaderValue::from_str(value).map_err(|e| ClientError::InvalidHeader(format!("{name}: {e}")))?;
    Ok((name, value))
}

/// The full handshake request for `config`.
pub(crate) fn request(config: &ClientConfig) -> Result<Request, ClientError> {
    let url = handshake_url(config);
    let mut request = url.as_str().into_client_request().map_err(|e| ClientError::InvalidUrl(format!("{url}: {e}")))?;
    let mut extra = Vec::with_capacity(config.headers.len() + 2);
    if config.device_in == DeviceIn::Headers {
        extra.push(header(DEVICE_ID_HEADER, &config.device_id)?);
        extra.push(header(CLIENT_OS_HEADER, &config.os)?);
    }
    for (name, value) in &config.headers {
        extra.push(header(name, value)?);
    }
    let headers = request.headers_mut();
    for (name, value) in extra {
        headers.append(name, value);
    }
    Ok(request)
}

/// The tokio-tungstenite settings for `config`.
pub(crate) fn ws_config(config: &ClientConfig) -> WebSocketConfig {
    // max_write_buffer_size stays unlimited: the task flushes every message it
    // writes, so the write buffer never holds more than one message.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}

/// Maps a handshake failure to the side that failed.
fn handshake_error(error: tokio_tungstenite::tungstenite::Error) -> ClientError {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body = &body[..body.len().min(MAX_REFUSAL_BODY)];
            ClientError::Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(body).into_owned(),
            }
        }
        Error::Url(e) => ClientError::InvalidUrl(e.to_string()),
        Error::HttpFormat(e) => ClientError::InvalidUrl(e.to_string()),
        other => ClientError::connect(other),
    }
}

/// Connects and completes the WebSocket handshake within the connect timeout.
pub(crate) async fn connect(config: &ClientConfig) -> Result<Ws, ClientError> {
    let request = request(config)?;
    let handshake = tokio_tungstenite::connect_async_with_config(request, Some(ws_config(config)), true);
    match tokio::time::timeout(config.connect_timeout, handshake).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(handshake_error(e)),
        Err(_elapsed) => Err(ClientError::connect(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no WebSocket handshake within {:?}", config.connect_timeout),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_appended_and_encoded() {
        let config = ClientConfig::new("ws://h:1/connect/?a=1#frag")
            .query("b", "x y&z")
            .device_in(DeviceIn::Query)
            .device_id("dev")
            .os("ios/17");
        assert_eq!(handshake_url(&config), "ws://h:1/connect/?a=1&b=x%20y%26z&X-DEVICEID=dev&X-CLIENT-OS=ios%2F17");
        let config = ClientConfig::new("ws://h:1/connect/").query("k", "v");
        assert_eq!(handshake_url(&config), "ws://h:1/connect/?k=v");
        let config = ClientConfig::new("ws://h:1/connect/?").query("k", "v");
        assert_eq!(handshake_url(&config), "ws://h:1/connect/?k=v");
    }

    #[test]
    fn device_goes_in_headers_by_default() {
        let config = ClientConfig::new("ws://h:1/connect/").device_id("dev").os("android").header("X-Extra", "1");
        let request = request(&config).unwrap();
        assert_eq!(request.uri(), "ws://h:1/connect/");
        assert_eq!(request.headers()[DEVICE_ID_HEADER], "dev");
        assert_eq!(request.headers()[CLIENT_OS_HEADER], "android");
        assert_eq!(request.headers()["x-extra"], "1");
    }

    #[test]
    fn bad_urls_and_headers_are_reported() {
        assert!(matches!(request(&ClientConfig::new("not a url")), Err(ClientError::InvalidUrl(_))));
        let config = ClientConfig::new("ws://h:1/connect/").header("X-Bad", "line\nbreak");
        assert!(matches!(request(&config), Err(ClientError::InvalidHeader(_))));
    }
}
