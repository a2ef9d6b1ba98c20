//! A lean HTTP/1.1 keep-alive client: one hyper connection, one request at a
//! time. The fan-out publisher and the direct rpc baseline use it; it adds
//! no pool, no proxy lookup and no redirects to what is timed.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest response body read, bytes.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// An `http://HOST:PORT/path?query` URL, resolved once.
#[derive(Debug, Clone)]
pub struct HttpUrl {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// Path and query.
    path: String,
}

impl HttpUrl {
    /// Parses and resolves an `http://` URL.
    pub async fn resolve(url: &str) -> anyhow::Result<HttpUrl> {
        let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a valid URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url:?}: expected an http:// URL");
        }
        let host = uri.host().with_context(|| format!("{url:?} has no host"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .with_context(|| format!("cannot resolve {bare}"))?
            .next()
            .with_context(|| format!("{bare} resolves to no address"))?;
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.to_string());
        if authority.contains('@') {
            bail!("{url:?}: credentials in the URL are not supported");
        }
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".to_string());
        Ok(HttpUrl { addr, host: authority, path })
    }

    /// The address requests go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header value (host and port as given).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path and query of the URL.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The same server with another path and query.
    pub fn with_path(&self, path: String) -> HttpUrl {
        HttpUrl { addr: self.addr, host: self.host.clone(), path }
    }
}

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_RESPONSE_BODY`] bytes are kept).
    pub body: Bytes,
}

/// One keep-alive connection; reconnects on the next request after an error.
pub struct Client {
    url: HttpUrl,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client of `url`'s server (connects on first use).
    pub fn new(url: HttpUrl) -> Client {
        Client { url, sender: None }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.url.addr).await.with_context(|| format!("connect {}", self.url.addr))?;
        // Requests are small and latency is what is measured.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.context("HTTP/1 handshake")?;
        tokio::spawn(async move {
            // Its end (peer closed, error) shows up as the next request's error.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Opens the connection now rather than on the first request.
    pub async fn warm(&mut self) -> anyhow::Result<()> {
        if self.sender.is_none() {
            self.sender = Some(self.connect().await?);
        }
        Ok(())
    }

    /// Sends one request to `path` (path and query) and reads the answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.context("connection not ready")?;
        let mut builder = Request::builder().method(method).uri(path).header(hyper::header::HOST, &self.url.host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).context("building the request")?;
        let response = sender.send_request(request).await.context("request failed")?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
            .to_bytes();
        self.sender = Some(sender);
        Ok(Answer { status, body })
    }

    /// `POST` to the URL's own path.
    pub async fn post(&mut self, headers: &[(&str, &str)], body: Bytes) -> anyhow::Result<Answer> {
        let path = self.url.path.clone();
        self.request(Method::POST, &path, headers, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_http_urls_only() {
        let u = HttpUrl::resolve("http://127.0.0.1:5561/publish/?x=1").await.expect("resolves");
        assert_eq!(u.addr(), "127.0.0.1:5561".parse().expect("addr"));
        assert_eq!(u.path(), "/publish/?x=1");
        assert_eq!(u.with_path("/a".into()).path(), "/a");
        assert!(HttpUrl::resolve("ws://127.0.0.1/").await.is_err());
        assert!(HttpUrl::resolve("http://u:p@127.0.0.1/").await.is_err());
        assert!(HttpUrl::resolve("not a url").await.is_err());
    }
}
