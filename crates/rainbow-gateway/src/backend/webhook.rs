//! The webhooks: the connect, forward and close hooks as signed HTTP calls
//! (docs/protocol.md §3, §4, §6, §7), over two clients: [`super::http1`]
//! for `http://` URLs (the hot path, every client message is a forward
//! call) and reqwest for `https://` ones.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use bytes::Bytes;
use tracing::{error, warn};

use super::http1::{self, HookResponse};
use super::{COOKIE_HEADER, ConnectDecision, Control, HookError, IDENTITY_HEADER, is_withheld};
use crate::config::Config;
use crate::hub::Identity;
use crate::metrics::Metrics;
use crate::signature;

/// The pooled, signing HTTP clients of the webhooks.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Calls to `https://` hook URLs.
    http: reqwest::Client,
    /// Calls to `http://` hook URLs.
    plain: std::sync::Arc<http1::Client>,
}

/// Adds `timestamp`, `nonce`, `signature` to a URL, dropping any the URL or
/// client already had so the backend sees exactly one of each.
fn signed_url(mut url: reqwest::Url, extra: &[(String, String)], token: &str) -> reqwest::Url {
    let reserved = |k: &str| matches!(k, "timestamp" | "nonce" | "signature");
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| !reserved(k)).map(|(k, v)| (k.into(), v.into())).collect();
    {
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for (k, v) in kept.iter().chain(extra.iter().filter(|(k, _)| !reserved(k))) {
            pairs.append_pair(k, v);
        }
        for (k, v) in signature::sign(token).pairs() {
            pairs.append_pair(k, &v);
        }
    }
    url
}

/// An answer whose body is over [`http1::MAX_BODY`].
fn too_large() -> HookError {
    HookError::BadAnswer(format!("its answer is over {} MiB", http1::MAX_BODY >> 20))
}

fn classify(err: reqwest::Error, timeout: Duration) -> HookError {
    if err.is_timeout() {
        HookError::Timeout(timeout)
    } else {
        // The source chain carries the useful part (e.g. "Connection refused").
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        HookError::Unreachable(text)
    }
}

impl Webhooks {
    /// A backend client. `max_idle` bounds pooled keep-alive connections per
    /// backend host.
    pub fn new(max_idle: usize) -> Webhooks {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // As on `http://` URLs: a 3xx answer is the caller's to judge.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            // Building fails only when the TLS backend cannot initialise,
            // which is a broken installation rather than an input.
            .unwrap_or_else(|e| panic!("cannot initialise the HTTP client: {e}"));
        Webhooks { http, plain: std::sync::Arc::new(http1::Client::new(max_idle)) }
    }

    /// One hook call: [`http1`] for `http://` URLs, reqwest for the others.
    async fn call(
        &self,
        method: Method,
        url: reqwest::Url,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<HookResponse, HookError> {
        if method == Method::POST {
            // Both clients leave it out for an empty body; some servers then
            // answer 411 Length Required.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        if url.scheme() == "http" {
            let uri: Uri = url.as_str().parse().map_err(|_| HookError::BadUrl(url.origin().ascii_serialization()))?;
            return match tokio::time::timeout(timeout, self.plain.request(method, &uri, headers, body)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(http1::CallError::Unreachable(e))) => Err(HookError::Unreachable(e)),
                Ok(Err(http1::CallError::TooLarge)) => Err(too_large()),
                Err(_) => Err(HookError::Timeout(timeout)),
            };
        }
        let request = self.http.request(method, url).timeout(timeout).headers(headers).body(body);
        let answer = async {
            let mut response = request.send().await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > http1::MAX_BODY {
                    return Ok(None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Some(HookResponse { status, headers, body: body.freeze() }))
        };
        match answer.await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(too_large()),
            Err(e) => Err(classify(e, timeout)),
        }
    }

    /// Runs the connect hook for a handshake: the client's query pairs and
    /// headers go through, plus the identity. Without a `connect_url` every
    /// connection is accepted.
    pub async fn connect(
        &self,
        config: &Config,
        metrics: &Metrics,
        identity: Identity,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> ConnectDecision {
        let Some(base) = config.connect_url.clone() else {
            return ConnectDecision::Accept(Control::default());
        };
        let url = signed_url(base, query, &config.security_token);
        let mut pass = HeaderMap::with_capacity(headers.len() + 1);
        for (name, value) in headers {
            if !is_withheld(name.as_str()) {
                pass.append(name.clone(), value.clone());
            }
        }
        pass.insert(IDENTITY_HEADER, identity_value(identity));
        let started = Instant::now();
        let result = self.call(Method::GET, url, pass, Bytes::new(), config.hook_timeout).await;
        metrics.hook_latency("connect", started.elapsed().as_secs_f64());
        let HookResponse { status, headers, body } = match result {
            Ok(answer) => answer,
            Err(e) => return ConnectDecision::Unavailable(e),
        };
        if status.is_server_error() {
            return ConnectDecision::Unavailable(HookError::Status(status.as_u16()));
        }
        let control = Control::from_headers(&headers);
        control.log_invalid("connect", identity);
        let accepted = status == StatusCode::OK
            && serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("success"));
        if accepted { ConnectDecision::Accept(control) } else { ConnectDecision::Deny }
    }

    /// Forwards one client message; returns the reply body and the controls.
    pub async fn forward(
        &self,
        config: &Config,
        metrics: &Metrics,
        identity: Identity,
        cookie: Option<&str>,
        message_type: u16,
        payload: Bytes,
    ) -> Result<(Bytes, Control), HookError> {
        let raw = config.forward_url_for(message_type).ok_or(HookError::NoForwardUrl)?;
        let url = reqwest::Url::parse(&raw).map_err(|_| HookError::BadUrl(raw.clone()))?;
        let url = signed_url(url, &[], &config.security_token);
        let mut headers = hook_headers(identity, cookie)?;
        // What the original's HTTP client (Tornado) sent for a POST without
        // a content type; backends written for it may rely on it.
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let started = Instant::now();
        let result = self.call(Method::POST, url, headers, payload, config.forward_timeout).await;
        metrics.hook_latency("forward", started.elapsed().as_secs_f64());
        let answer = result?;
        let control = Control::from_headers(&answer.headers);
        control.log_invalid("forward", identity);
        if !answer.status.is_success() {
            return Err(HookError::Status(answer.status.as_u16()));
        }
        Ok((answer.body, control))
    }

    /// Runs the close hook. Failures are logged; nothing else can be done.
    pub async fn close(&self, config: &Config, metrics: &Metrics, identity: Identity, cookie: Option<&str>) {
        let Some(base) = config.close_url.clone() else { return };
        let url = signed_url(base, &[], &config.security_token);
        let started = Instant::now();
        let result = match hook_headers(identity, cookie) {
            Ok(headers) => self.call(Method::GET, url, headers, Bytes::new(), config.hook_timeout).await,
            Err(e) => Err(e),
        };
        metrics.hook_latency("close", started.elapsed().as_secs_f64());
        match result {
            Ok(a) if a.status.is_success() => Control::from_headers(&a.headers).log_invalid("close", identity),
            Ok(a) => {
                warn!(%identity, side = "backend", status = a.status.as_u16(), "close hook answered an error status")
            }
            Err(e) => {
                error!(%identity, side = "backend", cause = %e, "close hook failed; the backend was not told this connection ended")
            }
        }
    }
}

/// The identity as a header value.
fn identity_value(identity: Identity) -> HeaderValue {
    // An identity is printed as hex digits, always a valid header value.
    HeaderValue::from_str(&identity.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The headers every forward and close call carries: the identity and,
/// once set, the cookie.
fn hook_headers(identity: Identity, cookie: Option<&str>) -> Result<HeaderMap, HookError> {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(IDENTITY_HEADER, identity_value(identity));
    if let Some(cookie) = cookie {
        let value = HeaderValue::from_str(cookie)
            .map_err(|_| HookError::BadAnswer("the connection's context is not a valid header value".into()))?;
        headers.insert(COOKIE_HEADER, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn signed_url_keeps_params_and_replaces_reserved_ones() {
        let url = reqwest::Url::parse("http://b/connect/?app=1&nonce=9").unwrap();
        let extra = vec![("room".to_string(), "a b".to_string()), ("signature".to_string(), "forged".to_string())];
        let signed = signed_url(url, &extra, "tok");
        let pairs: Vec<(String, String)> = signed.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["app", "room", "timestamp", "nonce", "signature"]);
        assert_eq!(pairs[1].1, "a b");
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("signature"), signature::signature("tok", &get("timestamp"), &get("nonce")));
    }

    #[test]
    fn signed_url_appends_to_a_clean_query() {
        for (base, first) in [("http://b/message/1/", None), ("http://b/message/1/?app=x%20y", Some("app"))] {
            let url = reqwest::Url::parse(base).unwrap();
            let signed = signed_url(url, &[("room".into(), "a&b".into())], "tok");
            let pairs: Vec<(String, String)> = signed.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let want: Vec<&str> = first.into_iter().chain(["room", "timestamp", "nonce", "signature"]).collect();
            assert_eq!(keys, want);
            assert!(pairs.iter().any(|(k, v)| k == "room" && v == "a&b"));
            assert!(first.is_none() || pairs[0].1 == "x y");
            let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
            assert_eq!(get("signature"), signature::signature("tok", &get("timestamp"), &get("nonce")));
        }
    }

    #[tokio::test]
    async fn each_scheme_has_its_client_and_failures_say_what_happened() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let backend = Webhooks::new(4);
        for scheme in ["http", "https"] {
            let url = reqwest::Url::parse(&format!("{scheme}://{addr}/m/")).unwrap();
            let e = backend.call(Method::POST, url, HeaderMap::new(), Bytes::new(), Duration::from_secs(5)).await;
            match e {
                Err(HookError::Unreachable(text)) => {
                    assert!(text.to_lowercase().contains("refused"), "{scheme}: {text}")
                }
                other => panic!("{scheme}: expected unreachable, got {other:?}"),
            }
        }
    }

    /// Found while writing docs/protocol.md: an empty POST (a message with
    /// an empty payload) went out without `Content-Length`. Set in `call`,
    /// for both clients.
    #[tokio::test]
    async fn an_empty_post_says_its_length() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let head = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 4096];
            let k = s.read(&mut chunk).await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            String::from_utf8_lossy(&chunk[..k]).to_ascii_lowercase()
        });
        let url = reqwest::Url::parse(&format!("http://{addr}/m/")).unwrap();
        let webhooks = Webhooks::new(1);
        webhooks.call(Method::POST, url, HeaderMap::new(), Bytes::new(), Duration::from_secs(5)).await.unwrap();
        let head = head.await.unwrap();
        assert!(head.contains("content-length: 0\r\n"), "{head}");
    }

    #[test]
    fn clients_cannot_forge_gateway_headers() {
        assert!(is_withheld("RAINBOWCLIENTIDENTITY"));
        assert!(is_withheld("rainbowclientcookie"));
        assert!(is_withheld("Sec-WebSocket-Key"));
        assert!(is_withheld("Host"));
        assert!(!is_withheld("X-DEVICEID"));
        assert!(!is_withheld("Authorization"));
    }
}
