//! The watch survives a member that dies between the list and the open of its stream.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_client::watcher::{DEFAULT_MAX_FAILURES, Machine};
use shoal_client::{Client, ListParams, WatchOutput, Watcher};
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

/// Creates namespace `ns` (objects are created only in an existing namespace).
async fn make_namespace(c: &Client, ns: &str) {
    let object_json =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            .to_string();
    c.call(|mut cl| {
        let r = ObjectRequest {
            object_json: object_json.clone(),
        };
        async move { cl.create(r).await }
    })
    .await
    .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
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
    let watch_client = Client::connect(crate::cluster::client_config(&list))
        .await
        .expect("connect");
    make_namespace(&watch_client, &ns).await;
    // Writes go straight to member 2 (any member accepts them).
    let writer = Client::connect(crate::cluster::client_config(&c.api(2).to_string()))
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
    let client = Client::connect(crate::cluster::client_config(&list))
        .await
        .expect("connect");
    make_namespace(&client, &ns).await;
    let writer = Client::connect(crate::cluster::client_config(&c.api(2).to_string()))
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

/// A pod whose annotation makes it about `bytes` long (to fill HTTP/2 windows fast).
fn big_pod(ns: &str, name: &str, bytes: usize) -> String {
    json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": {"pad": "x".repeat(bytes)}},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}
    })
    .to_string()
}

/// A watcher that stops reading while many changes happen falls behind: the member
/// drops it and says so through gRPC (OUT_OF_RANGE naming the lag, after the events it
/// could still deliver), and the shared watcher answers by listing again, with every
/// object in the new list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_is_told_through_grpc_and_lists_again() {
    // More changes than the member queues for one watcher (history 20 + 1,024 slack in
    // the store, 256 in the API's stream) plus what the client's HTTP/2 stream window
    // holds (2 MiB, hyper's default: about 250 of these 8 KiB pods).
    const PODS: usize = 2500;
    const PAD: usize = 8 * 1024;
    let c = Cluster::start_with("lag", 1, |cfg| cfg.watch_history = 20).await;
    let ns = format!("lag{}", std::process::id());
    let client = Client::connect(crate::cluster::client_config(&c.api(1).to_string()))
        .await
        .expect("connect");
    make_namespace(&client, &ns).await;
    let params = ListParams {
        namespace: ns.clone(),
        ..ListParams::default()
    };

    // 1. The raw stream: opened, then not read while the pods are created.
    let mut raw =
        shoal_proto::cluster_client::ClusterClient::new(client.channel().await.expect("ch"))
            .watch(params.watch_request("Pod", 0))
            .await
            .expect("open watch")
            .into_inner();
    // 2. The shared watcher: listed once (empty), then not polled either.
    let mut w: Watcher<Value> = Watcher::json(
        client.clone(),
        "Pod",
        params.clone(),
        Machine::new(Some(DEFAULT_MAX_FAILURES)),
    );
    match tokio::time::timeout(STEP, w.next()).await {
        Ok(Ok(WatchOutput::Listed { items, .. })) => assert!(items.is_empty(), "{items:?}"),
        other => panic!("first output should be an empty list: {other:?}"),
    }
    // Its stream is opened on the next poll; poll once with a short timeout so it is
    // open (no event can come yet: nothing was written).
    let none = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    assert!(none.is_err(), "no change yet, got {none:?}");

    // Created by 16 writers at once, so the test does not take long.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (client, ns) = (client.clone(), ns.clone());
        writers.spawn(async move {
            for i in (w..PODS).step_by(16) {
                let object_json = big_pod(&ns, &format!("p{i:04}"), PAD);
                client
                    .call(|mut cl| {
                        let r = ObjectRequest {
                            object_json: object_json.clone(),
                        };
                        async move { cl.create(r).await }
                    })
                    .await
                    .unwrap_or_else(|e| panic!("create p{i:04}: {e}"));
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.expect("writer");
    }

    // The raw stream delivers what was queued, then ends with OUT_OF_RANGE. Positive
    // control: it did deliver events (it was open and working), but not all of them.
    let mut delivered = 0usize;
    let status = loop {
        match tokio::time::timeout(STEP, raw.message()).await {
            Ok(Ok(Some(_))) => delivered += 1,
            Ok(Ok(None)) => panic!("stream ended without a status after {delivered} events"),
            Ok(Err(s)) => break s,
            Err(_) => panic!("stream neither lagged nor ended after {delivered} events"),
        }
    };
    assert!(delivered > 0, "no event before the lag");
    assert!(
        delivered < PODS,
        "all {PODS} events delivered: never lagged"
    );
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("fell behind"), "{status:?}");

    // The shared watcher: after whatever events it still gets, a re-list with all pods.
    let mut events = 0usize;
    let items = loop {
        match tokio::time::timeout(STEP, w.next()).await {
            Ok(Ok(WatchOutput::Event { .. })) => events += 1,
            Ok(Ok(WatchOutput::Listed { items, .. })) => break items,
            Ok(Err(e)) => panic!("watch failed after {events} events: {e}"),
            Err(_) => panic!("no re-list within {STEP:?} after {events} events"),
        }
    };
    assert!(
        events < PODS,
        "all {PODS} events arrived one by one: never lagged"
    );
    assert_eq!(items.len(), PODS, "the re-list holds every pod");
}
