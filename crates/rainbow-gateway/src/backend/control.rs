//! Control headers a backend returns from the connect and forward hooks
//! (docs/protocol.md §5): context (cookie), channels to subscribe and unsubscribe, and the
//! backend's complaint about our request.
//!
//! Parsing is separate from applying so both can be tested alone; applying
//! goes through the hub like every other subscription.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use tracing::{debug, error, warn};

use crate::hub::{Connection, Hub, Identity, SubscribeError};

const CHANNEL_SEPARATOR: &str = ";;";

/// What a hook response asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Control {
    /// New context (`RAINBOWCLIENTCOOKIE`), replacing the old one.
    pub cookie: Option<String>,
    /// Channels to join (`RAINBOWCLIENTCHANNEL`).
    pub subscribe: Vec<String>,
    /// Channels to leave (`RAINBOWCLIENTCHANNELUNSUB`), applied first.
    pub unsubscribe: Vec<String>,
    /// The backend rejected our request (`RAINBOWREQUESTINVALID`).
    pub invalid: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    // HeaderMap lookups are case-insensitive. Values that are not visible
    // ASCII are taken as UTF-8 where possible.
    let value = headers.get(name)?;
    match value.to_str() {
        Ok(s) => Some(s.to_string()),
        Err(_) => String::from_utf8(value.as_bytes().to_vec()).ok(),
    }
}

fn channels(value: Option<String>) -> Vec<String> {
    value
        .map(|v| v.split(CHANNEL_SEPARATOR).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

impl Control {
    /// Reads the control headers of a response.
    pub fn from_headers(headers: &HeaderMap) -> Control {
        Control {
            cookie: header(headers, "RAINBOWCLIENTCOOKIE"),
            subscribe: channels(header(headers, "RAINBOWCLIENTCHANNEL")),
            unsubscribe: channels(header(headers, "RAINBOWCLIENTCHANNELUNSUB")),
            invalid: header(headers, "RAINBOWREQUESTINVALID"),
        }
    }

    /// Logs loudly when the backend rejected our request: it means the
    /// gateway and the backend disagree on the token or the protocol.
    pub fn log_invalid(&self, hook: &'static str, identity: Identity) {
        let Some(code) = &self.invalid else { return };
        let meaning = match code.trim() {
            "60001" => {
                "it rejected our signature: check that both sides use the same security_token and that clocks agree"
            }
            "60002" => "it rejected the connection identity",
            "60003" => "it rejected the HTTP method",
            _ => "unknown reason code",
        };
        error!(%identity, hook, side = "backend", code = %code, "backend refused the gateway's request: {meaning}");
    }

    /// Checks what the gateway must carry on: the context goes back to the
    /// backend as a header on every later call, so it must be a valid header
    /// value (a webhook's always is; a worker's JSON string may not be).
    pub fn check(&self) -> Result<(), String> {
        match &self.cookie {
            Some(cookie) if HeaderValue::from_str(cookie).is_err() => {
                Err("its context has characters no HTTP header can carry (control characters); send text".into())
            }
            _ => Ok(()),
        }
    }

    /// Applies the controls to a connection: the cookie, then unsubscribes,
    /// then subscribes.
    pub fn apply(&self, hub: &Hub, conn: &Arc<Connection>) {
        if let Some(cookie) = &self.cookie {
            conn.set_cookie(cookie);
        }
        for channel in &self.unsubscribe {
            hub.unsubscribe(conn, channel);
        }
        for channel in &self.subscribe {
            match hub.subscribe(conn, channel) {
                Ok(()) => {}
                // The client left before the answer came: nothing to join.
                Err(SubscribeError::Gone) => {
                    debug!(identity = %conn.identity(), channel = %channel, "connection ended before its subscription applied")
                }
                Err(e) => {
                    warn!(identity = %conn.identity(), channel = %channel, side = "backend", "subscription from hook refused: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn parses_headers_case_insensitively_and_splits_channels() {
        let mut h = HeaderMap::new();
        h.insert("rainbowclientcookie", HeaderValue::from_static("eyJ1IjoxfQ=="));
        h.insert("RainbowClientChannel", HeaderValue::from_static("room;;news;; ;;"));
        h.insert("RAINBOWCLIENTCHANNELUNSUB", HeaderValue::from_static("lobby"));
        let c = Control::from_headers(&h);
        assert_eq!(c.cookie.as_deref(), Some("eyJ1IjoxfQ=="));
        assert_eq!(c.subscribe, ["room", "news"]);
        assert_eq!(c.unsubscribe, ["lobby"]);
        assert_eq!(c.invalid, None);
    }

    #[test]
    fn applies_unsub_before_sub() {
        let hub = Hub::new(8);
        let conn = Arc::new(Connection::new(
            Identity::random(),
            "127.0.0.1:1".parse().unwrap(),
            None,
            crate::hub::Limits::new(8, 1 << 20),
            1,
        ));
        hub.subscribe(&conn, "room").unwrap();
        let c = Control { subscribe: vec!["room".into()], unsubscribe: vec!["room".into()], ..Default::default() };
        c.apply(&hub, &conn);
        assert_eq!(hub.subscribers("room").len(), 1, "unsub then sub leaves the connection subscribed");
    }

    #[test]
    fn a_context_must_be_able_to_travel_as_a_header() {
        let ok = Control { cookie: Some("café=1; x".into()), ..Default::default() };
        assert_eq!(ok.check(), Ok(()));
        let bad = Control { cookie: Some("line1\nline2".into()), ..Default::default() };
        assert!(bad.check().unwrap_err().contains("control characters"));
    }
}
