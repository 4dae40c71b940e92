//! Getting a container its system: from the system cache when one with the
//! same key was built (no evaluation, no build: its profile is pointed at
//! it), else built by the builder and cached (engine/system_cache.rs). Also
//! the cache's pre-warm at start and its retention.

use std::path::Path;

use serde_json::{Value, json};

use super::builder::BuildOutput;
use super::records::now_secs;
use super::spec::ContainerSpec;
use super::system_cache::{self, Entry};
use super::{Engine, EngineError};
use crate::config::BuilderKind;

impl Engine {
    /// The cache key of `spec`'s system; None when the library could not be
    /// hashed at start (then nothing is cached).
    pub(crate) fn system_key(&self, spec: &ContainerSpec) -> Option<String> {
        let library = self.library_hash.as_deref()?;
        let builder = match self.cfg.builder {
            BuilderKind::HostImage => "host-image",
            BuilderKind::Nix => "nix",
        };
        let nixpkgs = self
            .cfg
            .nix
            .nixpkgs
            .as_ref()
            .map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .unwrap_or_default();
        Some(system_cache::key(
            builder,
            &nixpkgs,
            library,
            &self.build_json(spec),
        ))
    }

    /// `spec`'s system for the container `name`, installed as its profile:
    /// from the cache, or built (and then cached).
    pub(crate) async fn build_or_reuse(
        &self,
        name: &str,
        spec: &ContainerSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<BuildOutput, EngineError> {
        let key = self.system_key(spec);
        if let Some(k) = &key
            && let Some(hit) = self.system_cache.get(k)
        {
            progress(&format!(
                "this module set's system is built already (cache {}): no evaluation, no build",
                &k[..12]
            ));
            let (_canceller, token) = crate::nix::process::cancel_pair();
            self.builder
                .nix()
                .install(name, Path::new(&hit.system), &token)
                .await?;
            if let Err(e) = self.system_cache.use_key(k, name, now_secs()) {
                tracing::warn!(container = name, "system cache: recording its user: {e}");
            }
            return Ok(BuildOutput {
                system_path: hit.system_path,
                drv_path: hit.drv_path,
            });
        }
        let built = self
            .builder
            .build(spec, &self.build_json(spec), progress)
            .await?;
        if let Some(k) = key {
            match self.builder.nix().current_system(name) {
                Ok(Some(system)) => {
                    let now = now_secs();
                    let entry = Entry {
                        system: system.display().to_string(),
                        system_path: built.system_path.clone(),
                        drv_path: built.drv_path.clone(),
                        built_at: now,
                        last_used: now,
                        users: Default::default(),
                    };
                    if let Err(e) = self.system_cache.insert(&k, entry, name) {
                        tracing::warn!(container = name, "system cache: keeping the system: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(container = name, "system cache: reading the profile: {e}")
                }
            }
        }
        Ok(built)
    }

    /// `name` now runs `spec`'s system (after an undo or a rolled-back
    /// update switched it back).
    pub(crate) fn note_system_user(&self, name: &str, spec: &ContainerSpec) {
        if let Some(k) = self.system_key(spec)
            && let Err(e) = self.system_cache.use_key(&k, name, now_secs())
        {
            tracing::warn!(container = name, "system cache: recording its user: {e}");
        }
    }

    /// `name` is gone: its system is kept for the retention, then goes.
    pub(crate) fn release_system(&self, name: &str) {
        if let Err(e) = self.system_cache.release(name, now_secs()) {
            tracing::warn!(container = name, "system cache: {e}");
        }
        self.prune_system_cache();
    }

    /// Removes cached systems no container uses, past the retention.
    pub fn prune_system_cache(&self) -> usize {
        match self.system_cache.prune(
            now_secs(),
            self.cfg.nix.cache_keep_days,
            self.cfg.nix.cache_max_entries,
        ) {
            Ok(gone) => gone.len(),
            Err(e) => {
                tracing::warn!("system cache: pruning: {e}");
                0
            }
        }
    }

    /// The cache and the Nix work done since the start, for `health`.
    pub fn systems_json(&self) -> Value {
        let (evaluations, builds) = self.builder.nix().counts();
        json!({
            "cache": self.system_cache.stats(self.cfg.nix.cache_keep_days, self.cfg.nix.cache_max_entries),
            "evaluations": evaluations,
            "builds": builds,
            "enabled": self.library_hash.is_some(),
        })
    }

    /// Builds the `[nix] prewarm` module sets into the cache, one after the
    /// other (the daemon runs this in the background after its start). A
    /// set that is cached already costs nothing; one that fails is logged.
    pub async fn prewarm(&self) -> usize {
        let mut built = 0;
        if let Err(e) = self.system_cache.unpin_all(now_secs()) {
            tracing::warn!("prewarm: {e}");
        }
        for (i, modules) in self.cfg.nix.prewarm.iter().enumerate() {
            let client = json!({ "name": "prewarm", "modules": modules });
            let mut spec = match super::spec::parse_spec(&client.to_string(), &self.known_modules) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(?modules, "prewarm: not a module set this library has: {e}");
                    continue;
                }
            };
            // The same limits a create applies: the key must be a create's.
            if let Err(e) = self.apply_limits(&mut spec.resources, true) {
                tracing::warn!(?modules, "prewarm: {e}");
                continue;
            }
            let Some(key) = self.system_key(&spec) else {
                break;
            };
            if self.system_cache.get(&key).is_some() {
                if let Err(e) = self.system_cache.pin(&key) {
                    tracing::warn!("prewarm: {e}");
                }
                continue;
            }
            let label = format!("prewarm_{i}");
            let (_canceller, token) = crate::nix::process::cancel_pair();
            let nix = self.builder.nix();
            let result = nix
                .build_unprofiled(&label, &self.build_json(&spec), &|_| {}, &token)
                .await;
            match result {
                Ok((drv, system)) => {
                    let now = now_secs();
                    let system_path = match self.cfg.builder {
                        BuilderKind::HostImage => None,
                        BuilderKind::Nix => Some(system.display().to_string()),
                    };
                    let entry = Entry {
                        system: system.display().to_string(),
                        system_path,
                        drv_path: Some(drv.display().to_string()),
                        built_at: now,
                        last_used: now,
                        users: Default::default(),
                    };
                    match self.system_cache.insert(&key, entry, system_cache::PREWARM) {
                        Ok(()) => {
                            built += 1;
                            tracing::info!(?modules, "prewarm: built into the system cache");
                        }
                        Err(e) => tracing::warn!(?modules, "prewarm: keeping the system: {e}"),
                    }
                }
                Err(e) => tracing::warn!(?modules, "prewarm: the build failed: {e}"),
            }
            if let Err(e) = nix.remove(&label).await {
                tracing::warn!("prewarm: removing the build's own roots: {e}");
            }
        }
        self.prune_system_cache();
        built
    }
}
