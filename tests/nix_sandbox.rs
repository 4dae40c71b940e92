//! The Nix side in a real appliance: modules come from the library, each
//! container gets a real derivation (Debian's Nix), status reads its modules
//! and packages back from it, and update rebuilds and switches in place.

mod common;

use common::daemon::Appliance;
use serde_json::Value;

async fn status(app: &Appliance, name: &str) -> Value {
    serde_json::from_str(&app.manager().await.status(name, "").await.expect("status"))
        .expect("json")
}

#[tokio::test]
async fn status_reads_modules_from_the_derivation_and_update_switches_in_place() {
    let app = Appliance::boot("").await;
    let m = app.manager().await;
    let modules: Value = serde_json::from_str(&m.modules().await.expect("modules")).expect("json");
    let names: Vec<&str> = modules
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"git") && names.contains(&"tailscale"),
        "the library's modules: {names:?}"
    );
    assert!(
        modules
            .as_array()
            .into_iter()
            .flatten()
            .all(|m| !m["description"].as_str().unwrap_or("").is_empty())
    );

    assert_eq!(
        app.create(r#"{"name":"nx","modules":["git"]}"#, "").await["ok"],
        true
    );
    let st = status(&app, "nx").await;
    let drv = st["drv_path"].as_str().expect("a derivation");
    assert!(
        drv.ends_with(".drv") && drv.starts_with("/nix/store/"),
        "{drv}"
    );
    assert!(
        app.sandbox
            .root()
            .join(drv.trim_start_matches('/'))
            .exists(),
        "the .drv is real"
    );
    assert_eq!(
        st["system"]["modules"],
        serde_json::json!(["git", "workspace"]),
        "{st}"
    );
    let pkgs: Vec<&str> = st["system"]["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(pkgs.contains(&"git"), "{pkgs:?}");

    let (code, _, _, _) = m
        .exec("nx", "", &["sh", "-c", "echo keep > /workspace/k"], 10)
        .await
        .expect("exec");
    assert_eq!(code, 0);
    let op = m
        .update("nx", "", &["git", "fish"])
        .await
        .expect("update accepted");
    let v = app.wait_op(&m, &op, "").await;
    assert_eq!(v["ok"], true, "{v}");
    let st = status(&app, "nx").await;
    assert_eq!(
        st["system"]["modules"],
        serde_json::json!(["git", "fish", "workspace"]),
        "{st}"
    );
    assert_eq!(st["modules"], serde_json::json!(["git", "fish"]));
    assert_eq!(st["state"], "running", "switched in place, still running");
    let (_, out, _, _) = m
        .exec("nx", "", &["cat", "/workspace/k"], 10)
        .await
        .expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "keep\n",
        "the workspace is kept"
    );
    // The update's checkpoint holds a snapshot of the workspace.
    let snaps: Value =
        serde_json::from_str(&m.snapshots("nx", "").await.expect("snapshots")).expect("json");
    assert!(
        snaps
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["reason"] == "checkpoint"),
        "{snaps}"
    );

    // An unknown module is refused before anything changes.
    let err = m.update("nx", "", &["nosuch"]).await.expect_err("refused");
    assert_eq!(voxnix::api::client::error_parts(&err).0, "InvalidArgument");
    assert_eq!(
        status(&app, "nx").await["modules"],
        serde_json::json!(["git", "fish"])
    );
}
