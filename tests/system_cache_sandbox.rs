//! The system cache against the real daemon and Debian's Nix in a sandbox
//! (its builder evaluates and builds a real derivation per module set): one
//! system per module set, shared by every container that asks for it, with
//! no Nix work for the second; kept while used, its GC roots gone when the
//! last user and the retention are; and the configuration's pre-warmed
//! module sets cached before any create.

mod common;

use common::daemon::Appliance;
use serde_json::Value;
use voxnix::api::client::ManagerProxy;

async fn systems(m: &ManagerProxy<'_>) -> Value {
    let h: Value = serde_json::from_str(&m.host_health("").await.expect("health")).expect("json");
    h["systems"].clone()
}

fn work(s: &Value) -> (u64, u64) {
    (
        s["evaluations"].as_u64().expect("evaluations"),
        s["builds"].as_u64().expect("builds"),
    )
}

async fn profile(app: &Appliance, name: &str) -> String {
    app.sh(&format!(
        "readlink -f /nix/var/nix/profiles/per-container/{name}/system"
    ))
    .await
    .trim()
    .to_string()
}

/// The GC roots of the cache, as `name -> target`.
async fn roots(app: &Appliance) -> Vec<(String, String)> {
    let out = app
        .sh("cd /nix/var/nix/gcroots/voxnix/cache 2>/dev/null && for l in *; do [ -L \"$l\" ] && echo \"$l $(readlink \"$l\")\"; done; true")
        .await;
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn one_system_per_module_set_shared_by_every_container_that_needs_it() {
    let app = Appliance::boot_with_nix("", "cache_keep_days = 0").await;
    let m = app.manager().await;
    let created = |name: &'static str, modules: &'static str, owner: &'static str| {
        let app = &app;
        async move {
            let v = app
                .create(
                    &format!(r#"{{"name":"{name}","modules":{modules}}}"#),
                    owner,
                )
                .await;
            assert_eq!(v["ok"], true, "{v}");
        }
    };
    created("first", r#"["git","fish"]"#, "telegram:7").await;
    let after_first = systems(&m).await;
    let (evals, builds) = work(&after_first);
    assert!(
        evals >= 1 && builds >= 1,
        "the first create built: {after_first}"
    );

    // Another name, another owner, the same modules: no Nix work at all.
    created("second", r#"["git","fish"]"#, "telegram:8").await;
    let after_second = systems(&m).await;
    assert_eq!(
        work(&after_second),
        (evals, builds),
        "the second create evaluated or built: {after_second}"
    );
    let system = profile(&app, "first").await;
    assert!(system.starts_with("/nix/store/"), "{system}");
    assert_eq!(
        profile(&app, "second").await,
        system,
        "one system serves both"
    );
    let status = |name: &'static str| {
        let m = m.clone();
        async move {
            serde_json::from_str::<Value>(&m.status(name, "").await.expect("status")).expect("json")
        }
    };
    assert_eq!(
        status("first").await["drv_path"],
        status("second").await["drv_path"]
    );
    assert_eq!(after_second["cache"]["entries"], 1, "{after_second}");
    let r = roots(&app).await;
    assert!(
        r.iter().any(|(_, t)| t == &system),
        "a GC root holds it: {r:?}"
    );

    // Destroying one keeps it for the other.
    m.destroy("first", "").await.expect("destroy");
    assert_eq!(profile(&app, "second").await, system);
    assert!(roots(&app).await.iter().any(|(_, t)| t == &system));
    assert_eq!(
        app.sh(&format!("test -e {system} && echo there"))
            .await
            .trim(),
        "there"
    );

    // Other modules: a miss, built once.
    created("third", r#"["git"]"#, "telegram:7").await;
    let (e3, _) = work(&systems(&m).await);
    assert_eq!(e3, evals + 1, "another module set is evaluated once");
    assert_ne!(profile(&app, "third").await, system);
    // An update to a module set that is cached: no Nix work either.
    let op = m
        .update("third", "", &["git", "fish"])
        .await
        .expect("update");
    assert_eq!(app.wait_op(&m, &op, "").await["ok"], true);
    assert_eq!(work(&systems(&m).await).0, e3, "the update evaluated");
    assert_eq!(profile(&app, "third").await, system);

    // The last users gone (and no retention): the roots go.
    m.destroy("second", "").await.expect("destroy");
    assert!(
        roots(&app).await.iter().any(|(_, t)| t == &system),
        "third still uses it"
    );
    m.destroy("third", "").await.expect("destroy");
    assert!(roots(&app).await.is_empty(), "{:?}", roots(&app).await);
    assert_eq!(systems(&m).await["cache"]["entries"], 0);
    assert_eq!(
        app.sh(&format!("test -e {system} && echo there"))
            .await
            .trim(),
        "there",
        "only the roots go; Nix's garbage collector removes the system when it runs"
    );

    // The health report says it in words.
    let out = app.cli(&["health"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("system cache: 0 systems"), "{text}");
}

#[tokio::test]
async fn prewarmed_module_sets_make_the_first_create_a_cache_hit() {
    let app = Appliance::boot_with_nix("", r#"prewarm = [["git", "fish"], ["nosuch"]]"#).await;
    let m = app.manager().await;
    // The pre-warm runs in the background after the start.
    let mut s = systems(&m).await;
    for _ in 0..200 {
        if s["cache"]["entries"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s = systems(&m).await;
    }
    assert_eq!(
        s["cache"]["entries"], 1,
        "one set built, the unknown one skipped: {s}"
    );
    let before = work(&s);
    let v = app
        .create(r#"{"name":"warm","modules":["git","fish"]}"#, "telegram:7")
        .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        work(&systems(&m).await),
        before,
        "the first create was a cache hit"
    );
    // The pre-warmed system stays while it is configured, also unused.
    m.destroy("warm", "").await.expect("destroy");
    assert_eq!(systems(&m).await["cache"]["entries"], 1);
    let log = app
        .sh("journalctl -u voxnix --no-pager | grep -c 'not a module set this library has'; true")
        .await;
    assert_eq!(log.trim(), "1", "the unknown module set is said in the log");
}
