//! The connect hook (docs/protocol.md §3): accepted, denied, backend down, missing device.

use rainbow_client::{ClientError, DeviceIn};

use crate::harness::*;

#[tokio::test]
async fn accepted_connection_reaches_the_hook_with_identity_headers_and_params() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let config = client_config(&gw).query("room", "lobby").header("Authorization", "Bearer abc");
    let (client, _events) = rainbow_client::Client::connect(config).await.unwrap();
    let calls = backend.wait_calls("connect", 1).await;
    let call = &calls[0];
    assert!(call.signed_ok(), "connect hook must be signed: {:?}", call.query);
    assert_eq!(call.param("room").as_deref(), Some("lobby"), "client query params pass through");
    assert_eq!(call.header("x-deviceid").as_deref(), Some("device-1"));
    assert_eq!(call.header("x-client-os").as_deref(), Some("test"));
    assert_eq!(call.header("authorization").as_deref(), Some("Bearer abc"));
    assert!(call.header("sec-websocket-key").is_none() && call.header("upgrade").is_none());
    let identity = call.identity();
    assert_eq!(identity.len(), 64);
    assert!(identity.chars().all(|c| c.is_ascii_hexdigit()));
    gw.wait_connections(1).await;
    client.close().await;
}

#[tokio::test]
async fn device_params_work_as_query_parameters_for_browsers() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (client, _events) =
        rainbow_client::Client::connect(client_config(&gw).device_in(DeviceIn::Query)).await.unwrap();
    let calls = backend.wait_calls("connect", 1).await;
    assert_eq!(calls[0].param("X-DEVICEID").as_deref(), Some("device-1"));
    client.close().await;
}

#[tokio::test]
async fn denied_by_the_hook_is_401() {
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status": "fail"}"#));
    let gw = TestGateway::start(&backend, &[]).await;
    match rainbow_client::Client::connect(client_config(&gw)).await {
        Err(ClientError::Refused { status: 401, .. }) => {}
        other => panic!("expected a 401 refusal, got {:?}", other.map(|_| ())),
    }
    backend.on_connect(Reply::ok("not json"));
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 401);
    backend.on_connect(Reply::ok(r#"{"status": "success"}"#).status(403));
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 401);
    assert_eq!(gw.metric("rainbow_connects_total{outcome=\"denied\"}").await, 3.0);
    assert_eq!(gw.gw.hub.len(), 0);
}

#[tokio::test]
async fn backend_down_or_failing_is_503() {
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok("oops").status(500));
    let gw = TestGateway::start(&backend, &[]).await;
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 503);

    // Nothing listens on the connect URL at all.
    let dead = TestGateway::start(&backend, &[("connect_url", "http://127.0.0.1:9/rainbow/connect/")]).await;
    assert_eq!(refused_status(&dead.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 503);

    // A hook slower than hook_timeout.
    backend.on_connect(Reply::ok(r#"{"status": "success"}"#).delay(std::time::Duration::from_secs(3)));
    let slow = TestGateway::start(&backend, &[("hook_timeout", "300ms")]).await;
    assert_eq!(refused_status(&slow.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 503);
    assert_eq!(slow.metric("rainbow_connects_total{outcome=\"backend_error\"}").await, 1.0);
}

#[tokio::test]
async fn missing_device_headers_are_refused_before_the_hook() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d")]).await, 401);
    assert_eq!(refused_status(&gw.ws_url(), &[("X-CLIENT-OS", "o")]).await, 401);
    assert!(backend.calls("connect").is_empty());
}

#[tokio::test]
async fn without_connect_url_every_connection_is_accepted() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("connect_url", "")]).await;
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    gw.wait_connections(1).await;
    assert!(backend.calls("connect").is_empty());
    client.close().await;
}

#[tokio::test]
async fn a_push_right_after_the_handshake_reaches_the_hooks_channel() {
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status": "success"}"#).header("rainbowclientchannel", "fresh"));
    let gw = TestGateway::start(&backend, &[]).await;
    // The connection is registered with its channels before the 101, so no
    // round trip is needed first. Repeated to catch a race.
    for _ in 0..20 {
        let (client, _events) =
            rainbow_client::Client::connect(client_config(&gw).handler(|_| Some("here".into()))).await.unwrap();
        let (_, answer) = gw.api("/send/", &[("channel", "fresh"), ("qos", "1"), ("timeout", "5")], "hi").await;
        assert_eq!(answer, serde_json::json!({"status": 0, "connections": 1, "data": "here"}));
        client.close().await;
        gw.wait_connections(0).await;
    }
}
