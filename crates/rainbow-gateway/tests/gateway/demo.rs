//! `rainbow demo`'s chat backend, driven by two real clients through a real
//! gateway: join, chat both ways, leave. Also checks the embedded page and
//! client are served.

use futures_util::StreamExt;
use rainbow_client::{Client, ClientConfig, Event, Events, Qos};
use rainbow_gateway::demo::{ChatBackend, page_routes};
use rainbow_gateway::{Config, Server, Settings};
use serde_json::{Value, json};

use crate::harness::WAIT;

/// The next message of `message_type`, skipping others.
async fn next_of(events: &mut Events, message_type: u16) -> Value {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.expect("no message").expect("events ended") {
            Event::Message(m) if m.message_type == message_type => return serde_json::from_slice(&m.payload).unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn two_people_chat_and_one_leaves() {
    let backend = ChatBackend::bind().await.unwrap();
    let (connect, forward, close) = (backend.connect_url(), backend.forward_url(), backend.close_url());
    let settings = Settings::from_pairs([
        ("security_token", "demo-token"),
        ("bind", "127.0.0.1"),
        ("http_port", "0"),
        ("connect_url", connect.as_str()),
        ("forward_url", forward.as_str()),
        ("close_url", close.as_str()),
        // The demo backend signs its API calls v2 (its hooks still come v1).
        ("api_signature", "v2"),
    ]);
    let server =
        Server::bind(Config::from_settings(&settings).unwrap(), None).await.unwrap().with_routes(page_routes());
    let addr = server.local_addr();
    backend.serve(format!("http://{addr}"), "demo-token".into()).unwrap();
    tokio::spawn(server.run(std::future::pending()));

    let url = format!("ws://{addr}/connect/");
    let (alice, mut alice_events) = Client::connect(ClientConfig::new(&url).device_id("a").os("test")).await.unwrap();
    let (bob, mut bob_events) = Client::connect(ClientConfig::new(&url).device_id("b").os("test")).await.unwrap();

    let reply: Value =
        serde_json::from_slice(&alice.send(0, r#"{"message":"alice"}"#, Qos::AtLeastOnce).await.unwrap()).unwrap();
    assert_eq!(reply["status"], "ok");
    assert_eq!(next_of(&mut alice_events, 1001).await["name"], "alice", "the joiner hears its own join");
    bob.send(0, r#"{"message":"bob"}"#, Qos::AtLeastOnce).await.unwrap();
    assert_eq!(next_of(&mut alice_events, 1001).await["name"], "bob");
    assert_eq!(next_of(&mut alice_events, 1003).await, json!({"online": 2}));

    bob.send(1, r#"{"message":"hi alice"}"#, Qos::AtLeastOnce).await.unwrap();
    let said = next_of(&mut alice_events, 1002).await;
    assert_eq!(
        (said["name"].as_str(), said["message"].as_str()),
        (Some("bob"), Some("hi alice")),
        "name comes from the cookie"
    );
    alice.send(1, r#"{"message":"hi bob"}"#, Qos::AtLeastOnce).await.unwrap();
    assert_eq!(next_of(&mut bob_events, 1002).await["message"], "hi alice", "the sender hears its own message");
    assert_eq!(next_of(&mut bob_events, 1002).await["message"], "hi bob");

    bob.close().await;
    assert_eq!(next_of(&mut alice_events, 1004).await["name"], "bob");
    assert_eq!(next_of(&mut alice_events, 1003).await, json!({"online": 1}));

    // Without a name, talking is refused politely.
    let (carol, _e) = Client::connect(ClientConfig::new(&url).device_id("c").os("test")).await.unwrap();
    let reply: Value =
        serde_json::from_slice(&carol.send(1, r#"{"message":"x"}"#, Qos::AtLeastOnce).await.unwrap()).unwrap();
    assert_eq!(reply["status"], "error");

    let page = reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("rainbow.js"));
    let js = reqwest::get(format!("http://{addr}/rainbow.js")).await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("export class Rainbow"));
}
