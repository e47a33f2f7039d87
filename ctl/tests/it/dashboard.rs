//! `shoalctl dashboard` against a real controller: the guard over plain HTTP (token,
//! Host, Origin), then every page rendered by a real headless Chromium, the pods page's
//! live refresh, and screenshots into docs/dashboard/ (with SHOAL_DASHBOARD_SCREENSHOTS=1,
//! as scripts/dashboard-screenshots.sh runs it).
//!
//! Chromium comes from `scripts/setup.sh test` (Debian's `chromium`). The dashboard and
//! every Chromium are started here and killed by PID (Chromium's whole process group) on
//! drop, also when an assertion fails; each Chromium's profile is a temporary directory.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Controller, conf_for, eventually, shoalctl_bin, workspace};

/// A SIMULATED node (no agent): Ready, with capacity, so pods are bound to it.
fn sim_node(name: &str) -> String {
    json!({
        "apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"shoal.test/simulated": "true"}},
        "status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": 110},
            "conditions": [{"type": "Ready", "status": "True"}],
            "heartbeatTime": chrono::Utc::now().to_rfc3339(),
        }
    })
    .to_string()
}

/// A running `shoalctl dashboard`, killed (by PID) and reaped on drop.
struct Dashboard {
    child: Child,
    port: u16,
    token: String,
    /// Its stderr lines so far (one per request: `GET /path STATUS`).
    log: Arc<Mutex<Vec<String>>>,
}

impl Dashboard {
    fn start(c: &Controller) -> Dashboard {
        let mut child = Command::new(shoalctl_bin())
            .args([
                "--server",
                &c.addr,
                "dashboard",
                "--no-browser",
                "--port",
                "0",
            ])
            .env_remove("SHOAL_SERVER")
            .env("SHOAL_CONFIG", conf_for(&c.addr))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoalctl dashboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read the URL");
        let mut d = Dashboard {
            child,
            port: 0,
            token: String::new(),
            log,
        };
        let url = first.trim();
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap_or_else(|| {
            panic!("first line is not the URL: {first:?}; stderr {:?}", d.log())
        });
        let (port, token) = rest.split_once("/?token=").expect("URL with a token");
        d.port = port.parse().expect("port");
        d.token = token.to_string();
        assert_eq!(d.token.len(), 64, "{url}");
        d
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "http://127.0.0.1:{}{path}{sep}token={}",
            self.port, self.token
        )
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over HTTP/1.1 (hyper's client) with the given headers; (status, headers, body).
fn http_get(port: u16, target: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::get(target);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, h, String::from_utf8_lossy(&body).into_owned())
    })
}

/// A headless Chromium run, its whole process group killed on drop; its profile is a
/// temporary directory removed on drop.
struct Chromium {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn spawn(extra: &[&str], url: &str) -> Chromium {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromium (scripts/setup.sh test installs it)");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        Chromium {
            child,
            out: Some(out),
            _profile: profile,
        }
    }

    /// Waits (up to 60 s) for Chromium to end and returns what it printed.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait().expect("wait chromium") {
                Some(_) => break,
                None if Instant::now() > deadline => panic!("chromium did not finish in 60 s"),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.out
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Chromium leads its own process group (spawned with process_group(0)): its
        // renderer and helper processes go with it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DOM of a page after its scripts ran for 5 s of virtual time.
fn dump_dom(url: &str) -> String {
    Chromium::spawn(&["--virtual-time-budget=5000", "--dump-dom"], url).finish()
}

fn screenshot(url: &str, file: &Path) {
    let arg = format!("--screenshot={}", file.display());
    Chromium::spawn(&[&arg, "--window-size=1280,900"], url).finish();
    assert!(file.exists(), "no screenshot {}", file.display());
}

fn get_json(c: &Controller, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&c.ctl(&a).ok()).expect("json")
}

#[test]
fn dashboard_guards_requests_and_renders_every_page_in_chromium() {
    let c = Controller::start_with(&["--node-timeout", "3600"]);
    let f = c.write("n.json", &sim_node("dash-n1"));
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let web = workspace().join("examples/web.yaml");
    c.ctl(&["apply", "-f", web.to_str().unwrap()]).ok();
    // The deployment's 3 pods and the client pod are bound to the node; an event exists.
    let pods = eventually("4 pods bound to dash-n1", Duration::from_secs(30), || {
        let v = get_json(&c, &["pods", "--field-selector", "spec.nodeName=dash-n1"]);
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 4 {
            Ok(items)
        } else {
            Err(format!("{} bound", items.len()))
        }
    });
    // Without an agent nothing reports events; one made here stands for them.
    let reason = "PulledForTheDashboard";
    let ev = c.write(
        "ev.json",
        &json!({"apiVersion": "shoal/v1", "kind": "Event",
            "metadata": {"name": "client.dash", "namespace": "default"},
            "type": "Warning", "reason": reason, "message": "an event for the dashboard test",
            "involvedObject": {"kind": "Pod", "name": "client", "namespace": "default"},
            "lastTimestamp": chrono::Utc::now().to_rfc3339()})
        .to_string(),
    );
    c.ctl(&["create", "-f", ev.to_str().unwrap()]).ok();

    let d = Dashboard::start(&c);
    let port = d.port;
    let host = format!("127.0.0.1:{port}");
    let with_token = format!("/?token={}", d.token);

    // The guard, over plain HTTP.
    let (s, _, body) = http_get(port, "/", &[("host", &host)]);
    assert_eq!(s, 403, "no token: {body}");
    let (s, _, _) = http_get(port, "/?token=0000", &[("host", &host)]);
    assert_eq!(s, 403, "wrong token");
    let (s, _, _) = http_get(
        port,
        &with_token,
        &[("host", &format!("rebind.example:{port}"))],
    );
    assert_eq!(s, 403, "foreign Host");
    let (s, _, _) = http_get(
        port,
        &with_token,
        &[("host", &host), ("origin", "http://evil.example")],
    );
    assert_eq!(s, 403, "foreign Origin");
    let (s, h, body) = http_get(port, &with_token, &[("host", &host)]);
    assert_eq!(s, 200, "{body}");
    let cookie = h["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let (s, _, _) = http_get(
        port,
        "/nodes",
        &[("host", &format!("localhost:{port}")), ("cookie", &pair)],
    );
    assert_eq!(s, 200, "the cookie stands for the token");
    let (s, _, body) = http_get(
        port,
        "/api/pods?namespace=default",
        &[("host", &host), ("cookie", &pair)],
    );
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"client\""), "{body}");
    assert!(
        !d.log().iter().any(|l| l.contains(&d.token)),
        "the token is never logged"
    );

    // Every page in a real browser.
    let members = c.addr.clone();
    let dom = dump_dom(&d.url("/"));
    assert!(dom.contains("Healthy: 1 of 1 controllers healthy"), "{dom}");
    assert!(dom.contains(&members), "member address: {dom}");
    assert!(!dom.contains(&d.token), "the page never holds the token");

    let dom = dump_dom(&d.url("/nodes"));
    assert!(
        dom.contains("<td>dash-n1</td>") && dom.contains("<td>4 / 110</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("has no agent endpoint"),
        "why usage is missing: {dom}"
    );

    let dom = dump_dom(&d.url("/pods?namespace=default"));
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
        assert!(dom.contains(&format!(">{name}</a>")), "pod {name}: {dom}");
        assert!(
            dom.contains(&format!("<td>{phase}</td>")),
            "phase {phase}: {dom}"
        );
    }
    assert!(
        dom.contains("data-refreshes=\""),
        "the script refreshed the table: {dom}"
    );

    let dom = dump_dom(&d.url("/deployments?namespace=default"));
    assert!(dom.contains(">web<") && dom.contains("/3 ready"), "{dom}");
    assert!(dom.contains("<progress"), "{dom}");

    let dom = dump_dom(&d.url("/services?namespace=default"));
    assert!(
        dom.contains("<td>web</td>") && dom.contains("NodePort") && dom.contains("30080"),
        "{dom}"
    );

    let dom = dump_dom(&d.url("/events?namespace=default"));
    assert!(
        dom.contains(&format!("<td>{reason}</td>")),
        "event {reason}: {dom}"
    );

    let dom = dump_dom(&d.url("/placement?namespace="));
    assert!(
        dom.contains("<h3>dash-n1</h3>") && dom.contains("4 pods"),
        "{dom}"
    );
    assert!(
        dom.contains("title=\"default/client (Pending)\"")
            || dom.contains("title=\"default/client (Running)\""),
        "{dom}"
    );

    let dom = dump_dom(&d.url("/pods/default/client/logs"));
    assert!(
        dom.contains("Cannot read the logs:") && dom.contains("no agent endpoint"),
        "{dom}"
    );

    // A pod created after the page loaded appears through the script's refresh. Chromium
    // runs the page for 10 minutes of virtual time (a refresh every 2 s; virtual time
    // stands still while a refresh is in flight, so this takes seconds of real time);
    // the pod is made once the page has asked for the table, and the dump must show it.
    let live = Chromium::spawn(
        &["--virtual-time-budget=600000", "--dump-dom"],
        &d.url("/pods?namespace=default"),
    );
    let before = d.log().len();
    let refreshes = |log: &[String]| {
        log.iter()
            .filter(|l| l.starts_with("GET /api/pods "))
            .count()
    };
    eventually("the page's first refresh", Duration::from_secs(20), || {
        let log = d.log();
        match refreshes(&log[before..]) {
            0 => Err(format!("{:?}", &log[before..])),
            _ => Ok(()),
        }
    });
    let late = c.write(
        "late.yaml",
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {name: late-comer}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );
    c.ctl(&["create", "-f", late.to_str().unwrap()]).ok();
    let created = d.log().len();
    let dom = live.finish();
    let after = refreshes(&d.log()[created..]);
    assert!(
        after > 0,
        "the page made no refresh after the pod was created (it ran out of virtual time first)"
    );
    assert!(
        dom.contains(">late-comer</a>"),
        "the new pod after {after} refreshes: {dom}"
    );

    if std::env::var_os("SHOAL_DASHBOARD_SCREENSHOTS").is_some() {
        let dir: PathBuf = workspace().join("docs/dashboard");
        std::fs::create_dir_all(&dir).expect("mkdir docs/dashboard");
        for (name, path) in [
            ("overview", "/"),
            ("nodes", "/nodes"),
            ("placement", "/placement?namespace="),
            ("pods", "/pods?namespace=default"),
            ("deployments", "/deployments?namespace=default"),
            ("services", "/services?namespace=default"),
            ("events", "/events?namespace=default"),
            ("logs", "/pods/default/client/logs"),
        ] {
            screenshot(&d.url(path), &dir.join(format!("{name}.png")));
        }
    }
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn dashboard_shows_a_real_pods_log_and_node_usage() {
    let c = Controller::start();
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        "busybox:latest",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    c.ctl(&["image", "import", tarball.to_str().unwrap()]).ok();
    let node = format!("dash-agent-{}", std::process::id());
    let mut agent = crate::agent::Agent::start(&c, &node);
    let pod = json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "talker"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox:latest", "command": ["sh", "-c",
                "echo '<b>line-1</b>'; echo line-2; exec sleep 1000"]}]
        }
    });
    let f = c.write("pod.json", &pod.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    eventually("the pod running", Duration::from_secs(60), || {
        let v = get_json(&c, &["pod/talker"]);
        if v["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(format!("{}; agent: {}", v["status"], agent.log_tail()))
        }
    });

    let d = Dashboard::start(&c);
    let host = format!("127.0.0.1:{}", d.port);
    let page = |path: &str| {
        let target = format!("{path}?token={}", d.token);
        http_get(d.port, &target, &[("host", &host)])
    };
    // The log lines, as text (the container's markup is escaped).
    let body = eventually("the log on the logs page", Duration::from_secs(20), || {
        let (status, _, body) = page("/pods/default/talker/logs");
        if status == 200 && body.contains("line-2") {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    });
    assert!(body.contains("&lt;b&gt;line-1&lt;/b&gt;\nline-2"), "{body}");
    // Usage from the agent's stats: millicores and mebibytes with percentages.
    eventually("usage on the nodes page", Duration::from_secs(20), || {
        let (_, _, body) = page("/nodes");
        let row = body
            .split("<tr>")
            .find(|r| r.contains(&format!("<td>{node}</td>")))
            .unwrap_or_default()
            .to_string();
        if row.contains("m (") && row.contains("Mi (") {
            Ok(())
        } else {
            Err(row)
        }
    });
    // And in a browser: the running pod in its node's column.
    let dom = dump_dom(&d.url("/placement?namespace=default"));
    assert!(dom.contains("title=\"default/talker (Running)\""), "{dom}");
}
