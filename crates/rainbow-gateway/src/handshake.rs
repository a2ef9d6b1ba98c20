//! The handshakes of the HTTP surface, one way each, for whoever needs them:
//!
//! - WebSocket upgrades ([`upgrade_accept`], [`switching_protocols`]): client
//!   connections at `/connect/` (`transport`) and workers at `/worker/`
//!   (`api::worker`).
//! - Query parameters ([`query_pairs`], [`param`]).
//! - The signature of signed calls (docs/protocol.md §7): the backend API
//!   and `/updateconfig/` check the query ([`begin_signature`]) before they
//!   read the body and finish ([`SignatureCheck::finish`]); the worker
//!   handshake, which has no body, does both at once ([`check_signature`]).

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::warn;

use crate::signature::{Params, Policy, QueryChecked, RequestId, SignatureError, unix_now};
use crate::state::Gateway;

/// The decoded query pairs of a request URI (empty without a query).
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// A query parameter is not valid UTF-8 once decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {0:?} is not valid UTF-8 once decoded")]
pub struct BadQuery(pub String);

/// The decoded query pairs of a request URI, refusing any that is not
/// UTF-8 once decoded (where [`query_pairs`] would replace the bad bytes
/// with U+FFFD, so that different byte strings became the same value).
pub fn strict_query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, BadQuery> {
    let Some(query) = uri.query() else { return Ok(Vec::new()) };
    let decode = |part: &str| {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).decode_utf8().map(|s| s.into_owned())
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|_| BadQuery(name.to_owned()))?;
            let value = decode(value).map_err(|_| BadQuery(name.clone()))?;
            Ok((name, value))
        })
        .collect()
}

/// The first value of a query parameter.
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Why a request is not a WebSocket upgrade we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotWebSocket {
    /// No `Connection: upgrade` and `Upgrade: websocket`.
    NoUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13.
    Version,
    /// No `Sec-WebSocket-Key`.
    NoKey,
}

/// Checks the headers of a WebSocket (version 13) upgrade request; returns
/// the `Sec-WebSocket-Accept` value.
pub fn upgrade_accept(headers: &HeaderMap) -> Result<String, NotWebSocket> {
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(NotWebSocket::NoUpgrade);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(NotWebSocket::Version);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(NotWebSocket::NoKey)?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The `101 Switching Protocols` answer to an accepted upgrade.
pub fn switching_protocols(accept: String) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    // An accept key is base64, always a valid header value.
    if let Ok(accept) = header::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A signed call was refused (logged and counted already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many signed calls inside the signature window (replay cache
    /// full): the caller should retry later.
    Busy,
    /// The signature is missing, wrong, stale, of a refused version or
    /// replayed.
    Signature,
}

/// A signed call whose query passed the first half of the signature check
/// ([`begin_signature`]); [`SignatureCheck::finish`] does the rest once the
/// body is read.
#[derive(Debug)]
#[must_use = "a call is accepted only once `finish` returns Ok"]
pub struct SignatureCheck<'g> {
    gw: &'g Gateway,
    endpoint: &'static str,
    checked: QueryChecked<'g>,
}

impl SignatureCheck<'_> {
    /// Completes the check with the body (v2: the HMAC over the request; then
    /// the replay rule). `method` and `uri` are the request's, as given to
    /// [`begin_signature`].
    pub fn finish(self, method: &Method, uri: &Uri, body: &[u8]) -> Result<(), Refused> {
        let request = RequestId { method: method.as_str(), path: uri.path(), query: uri.query().unwrap_or(""), body };
        self.checked.finish(request).map(|_| ()).map_err(|e| refuse(self.gw, self.endpoint, method, e))
    }
}

/// First half of the signature check of a call to `endpoint` (docs/protocol.md
/// §7.3): what the query alone tells (parameters, version against
/// `api_signature`, time window; for v1 the whole signature). Nothing of the
/// body is needed, so a caller reads it only after this passed. A refusal is
/// counted under `rainbow_api_calls_total{endpoint}` and logged with the side
/// to blame.
pub fn begin_signature<'g>(
    gw: &'g Gateway,
    endpoint: &'static str,
    method: &Method,
    query: &[(String, String)],
) -> Result<SignatureCheck<'g>, Refused> {
    let config = gw.config();
    let policy = Policy { accept: config.api_signature, v1_replay: config.v1_replay };
    let params = Params {
        timestamp: param(query, "timestamp"),
        nonce: param(query, "nonce"),
        signature: param(query, "signature"),
    };
    match gw.verifier.check_query(&config.security_token, policy, params, unix_now()) {
        Ok(checked) => Ok(SignatureCheck { gw, endpoint, checked }),
        Err(e) => Err(refuse(gw, endpoint, method, e)),
    }
}

/// The whole signature check of a call whose body is at hand (the worker
/// handshake has none): [`begin_signature`], then [`SignatureCheck::finish`].
pub fn check_signature(
    gw: &Gateway,
    endpoint: &'static str,
    method: &Method,
    uri: &Uri,
    query: &[(String, String)],
    body: &[u8],
) -> Result<(), Refused> {
    begin_signature(gw, endpoint, method, query)?.finish(method, uri, body)
}

/// Counts and logs a refusal; every one is a warning blaming the backend.
fn refuse(gw: &Gateway, endpoint: &'static str, method: &Method, e: SignatureError) -> Refused {
    if e == SignatureError::Busy {
        gw.metrics.api_call(endpoint, "busy");
        warn!(endpoint, side = "backend", method = %method, "signed call refused: {e}");
        return Refused::Busy;
    }
    gw.metrics.api_call(endpoint, "signature_error");
    warn!(endpoint, side = "backend", method = %method, "signature error: {e}");
    Refused::Signature
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn upgrades_are_checked_and_answered() {
        let mut h = HeaderMap::new();
        assert_eq!(upgrade_accept(&h), Err(NotWebSocket::NoUpgrade));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(upgrade_accept(&h), Err(NotWebSocket::Version));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert_eq!(upgrade_accept(&h), Err(NotWebSocket::NoKey));
        // RFC 6455 §1.3's example.
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        let accept = upgrade_accept(&h).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let response = switching_protocols(accept);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn query_pairs_are_decoded() {
        let uri: Uri = "/x/?a=1&b=x%20y&a=2".parse().unwrap();
        let pairs = query_pairs(&uri);
        assert_eq!(param(&pairs, "a"), Some("1"));
        assert_eq!(param(&pairs, "b"), Some("x y"));
        assert_eq!(param(&pairs, "c"), None);
        assert!(query_pairs(&"/x/".parse().unwrap()).is_empty());
        assert_eq!(strict_query_pairs(&uri).unwrap(), pairs);
    }

    /// Issue 14, finding 8: `%FF` and `%FE` both became U+FFFD, the same
    /// channel name.
    #[test]
    fn a_strict_query_refuses_bytes_that_are_not_utf8() {
        let uri: Uri = "/send/?channel=%FF&qos=1".parse().unwrap();
        assert_eq!(strict_query_pairs(&uri), Err(BadQuery("channel".into())));
        let uri: Uri = "/send/?channel=caf%C3%A9+1&x".parse().unwrap();
        let pairs = strict_query_pairs(&uri).unwrap();
        assert_eq!(pairs, [("channel".to_string(), "café 1".to_string()), ("x".to_string(), String::new())]);
    }
}
