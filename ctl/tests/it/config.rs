//! `shoalctl create secret|configmap` through the binary: the objects a user makes from
//! literals and files, `get secret -o json` for an admin, tables that show no value.

use base64::Engine;
use serde_json::Value;

use crate::harness::Controller;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn create_secret_and_configmap_from_literals_and_files() {
    let c = Controller::start();
    let cert = c.write("tls/cert.pem", "CERT\n");
    c.write("conf/a.conf", "a=1\n");
    c.write("conf/b.conf", "b=2\n");
    let out = c
        .ctl(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal",
            "password=hunter2",
            "--from-file",
            &format!("cert={}", cert.display()),
        ])
        .ok();
    assert_eq!(out, "secret/db created\n");
    let s: Value =
        serde_json::from_str(&c.ctl(&["get", "secret", "db", "-o", "json"]).ok()).expect("json");
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"]["password"], b64(b"hunter2"));
    assert_eq!(s["data"]["cert"], b64(b"CERT\n"));

    let table = c.ctl(&["get", "secrets"]).ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("TYPE") && table.contains("Opaque"),
        "{table}"
    );
    assert!(
        !table.contains("hunter2") && !table.contains(&b64(b"hunter2")),
        "{table}"
    );
    let described = c.ctl(&["describe", "secret", "db"]).ok();
    assert!(described.contains("7 bytes"), "{described}");
    assert!(!described.contains("hunter2"), "{described}");

    let out = c
        .ctl(&[
            "create",
            "secret",
            "docker-registry",
            "reg",
            "--docker-server",
            "registry.example.com",
            "--docker-username",
            "u",
            "--docker-password",
            "p",
        ])
        .ok();
    assert_eq!(out, "secret/reg created\n");
    let s: Value =
        serde_json::from_str(&c.ctl(&["get", "secret", "reg", "-o", "json"]).ok()).expect("json");
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    let cfg = base64::engine::general_purpose::STANDARD
        .decode(s["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let cfg: Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(cfg["auths"]["registry.example.com"]["auth"], b64(b"u:p"));

    let dir = c.dir.path().join("conf");
    let out = c
        .ctl(&[
            "create",
            "cm",
            "app",
            "--from-literal",
            "MODE=fast",
            "--from-file",
            &dir.display().to_string(),
        ])
        .ok();
    assert_eq!(out, "configmap/app created\n");
    let cm: Value =
        serde_json::from_str(&c.ctl(&["get", "cm", "app", "-o", "json"]).ok()).expect("json");
    assert_eq!(cm["data"]["MODE"], "fast");
    assert_eq!(cm["data"]["a.conf"], "a=1\n");
    assert_eq!(cm["data"]["b.conf"], "b=2\n");
    let table = c.ctl(&["get", "configmaps"]).ok();
    assert!(table.contains("DATA") && table.contains(" 3 "), "{table}");

    let e = c
        .ctl(&[
            "create",
            "secret",
            "generic",
            "bad",
            "--from-literal",
            "novalue",
        ])
        .err();
    assert!(e.contains("expected KEY=VALUE"), "{e}");
    let e = c.ctl(&["create"]).err();
    assert!(e.contains("-f FILE"), "{e}");
}
