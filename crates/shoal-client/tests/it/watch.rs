//! The watch survives a member that dies between the list and the open of its stream.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_client::watcher::{DEFAULT_MAX_FAILURES, Machine};
use shoal_client::{Client, ClientConfig, ListParams, WatchOutput, Watcher};
use shoal_proto::{DeleteRequest, ObjectRequest};

use crate::cluster::Cluster;
use crate::proxy::Proxy;

/// Longest wait for one watch output.
const STEP: Duration = Duration::from_secs(20);

fn pod(ns: &str, name: &str) -> String {
    json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}
    })
    .to_string()
}

async fn create(c: &Client, ns: &str, name: &str) {
    let object_json = pod(ns, name);
    c.call(|mut cl| {
        let r = ObjectRequest {
            object_json: object_json.clone(),
        };
        async move { cl.create(r).await }
    })
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn delete(c: &Client, ns: &str, name: &str) {
    c.call(|mut cl| {
        let r = DeleteRequest {
            kind: "Pod".into(),
            namespace: ns.into(),
            name: name.into(),
            resource_version: 0,
        };
        async move { cl.delete(r).await }
    })
    .await
    .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

async fn next_event(w: &mut Watcher<Value>, seen: &[String]) -> String {
    match tokio::time::timeout(STEP, w.next()).await {
        Ok(Ok(WatchOutput::Event { kind, object, .. })) => {
            format!("{} {}", kind.as_str(), name(&object))
        }
        Ok(Ok(WatchOutput::Listed { items, .. })) => panic!(
            "unexpected re-list ({:?}); seen so far: {seen:?}",
            items.iter().map(name).collect::<Vec<_>>()
        ),
        Ok(Err(e)) => panic!("watch failed: {e}; seen so far: {seen:?}"),
        Err(_) => panic!(
            "no event within {STEP:?} (watcher on {}, {} failures); seen so far: {seen:?}",
            w.address(),
            w.total_failures()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_continues_on_the_next_member_when_one_dies_between_list_and_open() {
    let mut c = Cluster::start("list-open", 3).await;
    let ns = format!("t{}", std::process::id());
    let mut proxy = Proxy::start(c.api(1)).await;
    // The watcher talks to member 1 through the proxy first, then to 2 and 3.
    let list = format!("{},{},{}", proxy.addr, c.api(2), c.api(3));
    let watch_client = Client::connect(ClientConfig::parse(&list).expect("list"))
        .await
        .expect("connect");
    // Writes go straight to member 2 (any member accepts them).
    let writer = Client::connect(ClientConfig::parse(&c.api(2).to_string()).expect("w"))
        .await
        .expect("connect writer");

    create(&writer, &ns, "before").await;
    let params = ListParams {
        namespace: ns.clone(),
        ..ListParams::default()
    };
    let mut w = Watcher::json(
        watch_client,
        "Pod",
        params,
        Machine::new(Some(DEFAULT_MAX_FAILURES)),
    );
    let listed = tokio::time::timeout(STEP, w.next())
        .await
        .expect("list in time")
        .expect("list");
    let WatchOutput::Listed { items, revision } = listed else {
        panic!("expected the list first, got {listed:?}");
    };
    assert_eq!(items.iter().map(name).collect::<Vec<_>>(), ["before"]);
    assert_eq!(
        w.address(),
        proxy.addr.to_string(),
        "listed through the proxy"
    );

    // Between the list and the open: a change the watch must not lose, then member 1
    // dies on the next bytes the client sends it (the Watch request, or a keep-alive
    // PING just before it): the open fails.
    create(&writer, &ns, "between").await;
    proxy.cut_on_next_request();

    let mut seen = Vec::new();
    seen.push(next_event(&mut w, &seen).await);
    assert_eq!(proxy.cuts(), 1, "member 1 died under the open");
    proxy.wait_dead().await;
    c.kill(1).await;
    assert!(w.total_failures() >= 1, "the open failed at least once");
    assert_ne!(
        w.address(),
        proxy.addr.to_string(),
        "moved to another member"
    );
    assert!(w.machine().revision() > revision);

    create(&writer, &ns, "after").await;
    delete(&writer, &ns, "before").await;
    seen.push(next_event(&mut w, &seen).await);
    seen.push(next_event(&mut w, &seen).await);
    // A last change: the next event must be it (nothing repeated in between).
    create(&writer, &ns, "last").await;
    seen.push(next_event(&mut w, &seen).await);
    assert_eq!(
        seen,
        [
            "ADDED between",
            "ADDED after",
            "DELETED before",
            "ADDED last"
        ],
        "every change once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_an_open_stream_breaks() {
    let c = Cluster::start("stream-break", 3).await;
    let ns = format!("t{}", std::process::id());
    let mut proxy = Proxy::start(c.api(1)).await;
    let list = format!("{},{}", proxy.addr, c.api(3));
    let client = Client::connect(ClientConfig::parse(&list).expect("list"))
        .await
        .expect("connect");
    let writer = Client::connect(ClientConfig::parse(&c.api(2).to_string()).expect("w"))
        .await
        .expect("connect writer");
    let params = ListParams {
        namespace: ns.clone(),
        ..ListParams::default()
    };
    let mut w = Watcher::json(
        client,
        "Pod",
        params,
        Machine::new(Some(DEFAULT_MAX_FAILURES)),
    );
    let first = tokio::time::timeout(STEP, w.next())
        .await
        .expect("in time")
        .expect("list");
    assert!(matches!(first, WatchOutput::Listed { ref items, .. } if items.is_empty()));
    let mut seen = Vec::new();
    create(&writer, &ns, "a").await;
    seen.push(next_event(&mut w, &seen).await);
    // The stream is open; the next client bytes (a keep-alive PING) kill member 1's link.
    proxy.cut_on_next_request();
    proxy.wait_dead().await;
    create(&writer, &ns, "b").await;
    seen.push(next_event(&mut w, &seen).await);
    assert_eq!(seen, ["ADDED a", "ADDED b"]);
    assert!(w.total_failures() >= 1);
    assert_eq!(w.address(), c.api(3).to_string());
}
