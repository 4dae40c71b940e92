//! The Nix builder: spec JSON → `.drv` → system path → per-container profile.
//!
//! 1. The build JSON is written to a temporary file.
//! 2. `nix-instantiate <entry> --argstr specFile F [--argstr nixpkgs P]
//!    --add-root <gcroots_dir>/<name>.drv` evaluates it; the root keeps the
//!    derivation for `voxnix status` (see [`super::drv::system_info`]).
//! 3. `nix-store --realise <drv>` builds it. Nix's stderr is turned into
//!    progress lines ("building 3 of 17: hello-2.12").
//! 4. `nix-env -p <profiles_dir>/<name>/system --set <out>` installs it the
//!    way NixOS's imperative containers are installed: the profile is the GC
//!    root and keeps earlier generations, and its path is what the conf's
//!    `SYSTEM_PATH` names.
//!
//! The whole pipeline runs under one deadline (`build_timeout`); timeouts and
//! cancellation stop the running Nix command's whole process tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::NixError;
use super::config::{NixConfig, check_name};
use super::drv::SystemInfo;
use super::output::{self, LOG_TAIL_LINES, ProgressParser};
use super::process::{self, CancelToken, CommandOutput};
use super::run::{Failure, run_checked};

/// What a build produced and installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Built {
    /// The system's derivation (kept by a GC root in `gcroots_dir`).
    pub drv_path: PathBuf,
    /// The system path for the conf's `SYSTEM_PATH`.
    pub system_path: PathBuf,
    /// The profile that now points at `system_path`.
    pub profile: PathBuf,
    /// What the profile pointed at before (None: it did not exist).
    pub previous_system_path: Option<PathBuf>,
}

impl Built {
    /// False when the profile already pointed at this system (nothing new
    /// to switch to).
    pub fn changed(&self) -> bool {
        self.previous_system_path.as_deref() != Some(self.system_path.as_path())
    }
}

/// The time left until `deadline`, or the build's timeout error.
fn remaining(deadline: Instant, name: &str, total: Duration) -> Result<Duration, NixError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NixError::Timeout {
            what: format!("building the system of {name}"),
            after: total,
        });
    }
    Ok(left)
}

/// The first stdout line of a Nix command that printed a path, resolved
/// when it is a GC root symlink (`--add-root` prints the root, not the
/// store path).
fn printed_path(out: &CommandOutput, command: &str) -> Result<PathBuf, NixError> {
    let text = out.stdout_text();
    let Some(line) = text.lines().map(str::trim).find(|l| l.starts_with('/')) else {
        return Err(NixError::Output {
            command: command.into(),
            message: format!("no path printed (stdout: {:?})", output::cap(text.trim())),
        });
    };
    let printed = PathBuf::from(line);
    match std::fs::read_link(&printed) {
        Ok(target) if target.is_absolute() => Ok(target),
        _ => Ok(printed),
    }
}

/// Follows a profile's links to the store path it points at.
fn resolve_profile(profile: &Path) -> Result<Option<PathBuf>, NixError> {
    let mut p = profile.to_path_buf();
    for _ in 0..16 {
        match std::fs::read_link(&p) {
            Ok(target) => {
                p = if target.is_absolute() {
                    target
                } else {
                    p.parent().unwrap_or(Path::new("/")).join(target)
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // Not a link (any more): this is the store path.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Ok((p != profile).then_some(p));
            }
            Err(e) => {
                return Err(NixError::io(
                    format!("reading the profile {}", profile.display()),
                    e,
                ));
            }
        }
        if p.starts_with("/nix/store") {
            return Ok(Some(p));
        }
    }
    Err(NixError::io(
        format!("reading the profile {}", profile.display()),
        std::io::Error::other("too many levels of links"),
    ))
}

fn remove_if_exists(path: &Path) -> Result<(), NixError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NixError::io(format!("removing {}", path.display()), e)),
    }
}

/// Builds containers' systems with Nix.
#[derive(Debug, Clone)]
pub struct NixBuilder {
    cfg: NixConfig,
    /// Evaluations and builds run so far (`voxnix health`, and the tests
    /// that a cached create runs none).
    counts: std::sync::Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    evaluations: std::sync::atomic::AtomicU64,
    builds: std::sync::atomic::AtomicU64,
}

impl NixBuilder {
    pub fn new(cfg: NixConfig) -> Self {
        Self {
            cfg,
            counts: Default::default(),
        }
    }

    /// (evaluations, builds) run since the daemon started.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counts.evaluations.load(Relaxed),
            self.counts.builds.load(Relaxed),
        )
    }

    pub fn config(&self) -> &NixConfig {
        &self.cfg
    }

    /// Checks that the Nix tools, the library and the entry expression are
    /// there (for start-up and health reports).
    pub fn check(&self) -> Result<(), NixError> {
        for tool in ["nix-instantiate", "nix-store", "nix-env"] {
            self.cfg.command(tool)?;
        }
        let entry = self.cfg.entry_path();
        if !entry.is_file() {
            return Err(NixError::NotInstalled {
                what: format!(
                    "the build entry {} (set library_dir or entry in the [nix] configuration)",
                    entry.display()
                ),
            });
        }
        let library = self.cfg.library_dir.join("nix/library.nix");
        if !library.is_file() {
            return Err(NixError::NotInstalled {
                what: format!(
                    "voxnix's Nix library {} (set library_dir in the [nix] configuration)",
                    library.display()
                ),
            });
        }
        Ok(())
    }

    /// `<profiles_dir>/<name>/system`.
    pub fn profile_path(&self, name: &str) -> Result<PathBuf, NixError> {
        self.cfg.profile_path(name)
    }

    /// The store path `name`'s profile points at, if it has one.
    pub fn current_system(&self, name: &str) -> Result<Option<PathBuf>, NixError> {
        resolve_profile(&self.profile_path(name)?)
    }

    /// The GC root that keeps `name`'s current derivation.
    pub fn drv_root(&self, name: &str) -> Result<PathBuf, NixError> {
        check_name(name)?;
        Ok(self.cfg.gcroots_dir.join(format!("{name}.drv")))
    }

    /// The derivation of `name`'s last successful evaluation, if its root is
    /// there.
    pub fn current_drv(&self, name: &str) -> Result<Option<PathBuf>, NixError> {
        let root = self.drv_root(name)?;
        match std::fs::read_link(&root) {
            Ok(target) => Ok(Some(target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NixError::io(format!("reading {}", root.display()), e)),
        }
    }

    /// Create: evaluates, builds and installs `name`'s system from `spec`
    /// (the engine's build JSON, `ContainerSpec::to_build_json`).
    pub async fn build(
        &self,
        name: &str,
        spec: &serde_json::Value,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Built, NixError> {
        let started = Instant::now();
        let deadline = started + self.cfg.build_timeout;
        let result = self
            .build_until(name, spec, deadline, progress, cancel)
            .await;
        match &result {
            Ok(b) => tracing::info!(
                name,
                drv = %b.drv_path.display(),
                system = %b.system_path.display(),
                changed = b.changed(),
                secs = started.elapsed().as_secs_f64(),
                "nix build finished"
            ),
            Err(e) => {
                tracing::warn!(name, error = %e, secs = started.elapsed().as_secs_f64(), "nix build failed")
            }
        }
        result.map_err(|e| self.build_timeout_error(name, e))
    }

    /// Update: like [`build`](Self::build) for a container that has a
    /// profile already. The profile gets a new generation (the previous one
    /// is kept, see [`rollback`](Self::rollback)); when the system did not
    /// change, nothing is added and [`Built::changed`] is false. Switching
    /// the running container is the caller's part.
    pub async fn update(
        &self,
        name: &str,
        spec: &serde_json::Value,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Built, NixError> {
        let profile = self.profile_path(name)?;
        if self.current_system(name)?.is_none() {
            return Err(NixError::NoProfile {
                name: name.into(),
                profile,
            });
        }
        self.build(name, spec, progress, cancel).await
    }

    fn build_timeout_error(&self, name: &str, e: NixError) -> NixError {
        match e {
            NixError::Timeout { .. } => NixError::Timeout {
                what: format!("building the system of {name}"),
                after: self.cfg.build_timeout,
            },
            e => e,
        }
    }

    async fn build_until(
        &self,
        name: &str,
        spec: &serde_json::Value,
        deadline: Instant,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Built, NixError> {
        let drv = self
            .instantiate_until(name, spec, deadline, progress, cancel)
            .await?;
        let system = self
            .realise_until(name, &drv, deadline, progress, cancel)
            .await?;
        let previous = self
            .install_until(name, &system, deadline, progress, cancel)
            .await;
        // The build's own root was only needed until the profile held it.
        let _ = remove_if_exists(&self.building_root(name)?);
        let previous = previous?;
        Ok(Built {
            drv_path: drv,
            system_path: system,
            profile: self.profile_path(name)?,
            previous_system_path: previous,
        })
    }

    fn building_root(&self, name: &str) -> Result<PathBuf, NixError> {
        check_name(name)?;
        Ok(self.cfg.gcroots_dir.join(format!("{name}.building")))
    }

    fn ensure_dir(dir: &Path) -> Result<(), NixError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| NixError::io(format!("creating {}", dir.display()), e))
    }

    /// Evaluates `spec` to the system's `.drv` (and roots it), without
    /// building anything.
    pub async fn instantiate(
        &self,
        name: &str,
        spec: &serde_json::Value,
        cancel: &CancelToken,
    ) -> Result<PathBuf, NixError> {
        let deadline = Instant::now() + self.cfg.build_timeout;
        self.instantiate_until(name, spec, deadline, &|_| {}, cancel)
            .await
            .map_err(|e| self.build_timeout_error(name, e))
    }

    async fn instantiate_until(
        &self,
        name: &str,
        spec: &serde_json::Value,
        deadline: Instant,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<PathBuf, NixError> {
        check_name(name)?;
        // A label with '_' (never a container's name) builds for the system
        // cache, for no container in particular.
        if let Some(spec_name) = spec.get("name").and_then(|v| v.as_str())
            && spec_name != name
            && !name.contains('_')
        {
            return Err(NixError::InvalidName {
                name: name.into(),
                reason: format!("the spec is for {spec_name:?}"),
            });
        }
        let entry = self.cfg.entry_path();
        if !entry.is_file() {
            return Err(NixError::NotInstalled {
                what: format!(
                    "the build entry {} (set library_dir or entry in the [nix] configuration)",
                    entry.display()
                ),
            });
        }
        let cmd = self.cfg.command("nix-instantiate")?;
        Self::ensure_dir(&self.cfg.gcroots_dir)?;

        let mut spec_file = tempfile::Builder::new()
            .prefix("voxnix-spec-")
            .suffix(".json")
            .tempfile()
            .map_err(|e| NixError::io("creating the spec file", e))?;
        let bytes = serde_json::to_vec(spec)
            .map_err(|e| NixError::io("writing the spec file", std::io::Error::other(e)))?;
        std::io::Write::write_all(&mut spec_file, &bytes)
            .and_then(|()| std::io::Write::flush(&mut spec_file))
            .map_err(|e| NixError::io("writing the spec file", e))?;

        let mut cmd = cmd
            .arg(entry.as_os_str())
            .arg("--argstr")
            .arg("specFile")
            .arg(spec_file.path().as_os_str());
        if let Some(nixpkgs) = &self.cfg.nixpkgs {
            cmd = cmd.arg("--argstr").arg("nixpkgs").arg(nixpkgs.as_os_str());
        }
        let cmd = cmd
            .arg("--add-root")
            .arg(self.drv_root(name)?.as_os_str())
            .args(self.cfg.option_args());

        progress(&format!("evaluating the configuration of {name}"));
        self.counts
            .evaluations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let timeout = remaining(deadline, name, self.cfg.build_timeout)?;
        let out = run_checked(&cmd, timeout, cancel, &mut |line| {
            tracing::trace!(target: "voxnix::nix::eval", "{line}");
        })
        .await
        .map_err(|f| {
            let e = f.into_eval();
            match e {
                NixError::Eval { message }
                    if self.cfg.nixpkgs.is_none()
                        && message.contains("without a value ('nixpkgs')") =>
                {
                    NixError::Eval {
                        message: format!("{message}\n(set nixpkgs in the [nix] configuration)"),
                    }
                }
                e => e,
            }
        })?;
        let drv = printed_path(&out, "nix-instantiate")?;
        if !drv.to_string_lossy().ends_with(".drv") {
            return Err(NixError::Output {
                command: "nix-instantiate".into(),
                message: format!(
                    "{} is not a derivation (does {} evaluate to one?)",
                    drv.display(),
                    entry.display()
                ),
            });
        }
        progress(&format!(
            "evaluated in {:.1}s: {}",
            out.elapsed.as_secs_f64(),
            output::store_path_name(&drv.to_string_lossy())
        ));
        Ok(drv)
    }

    /// Builds `drv` (a system derivation of `name`), streaming progress;
    /// returns its output path.
    pub async fn realise(
        &self,
        name: &str,
        drv: &Path,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<PathBuf, NixError> {
        let deadline = Instant::now() + self.cfg.build_timeout;
        self.realise_until(name, drv, deadline, progress, cancel)
            .await
            .map_err(|e| self.build_timeout_error(name, e))
    }

    async fn realise_until(
        &self,
        name: &str,
        drv: &Path,
        deadline: Instant,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<PathBuf, NixError> {
        let cmd = self
            .cfg
            .command("nix-store")?
            .arg("--realise")
            .arg(drv.as_os_str())
            .arg("--add-root")
            .arg(self.building_root(name)?.as_os_str())
            .args(self.cfg.option_args());
        Self::ensure_dir(&self.cfg.gcroots_dir)?;
        self.counts
            .builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let timeout = remaining(deadline, name, self.cfg.build_timeout)?;
        let mut parser = ProgressParser::new();
        let mut announced = false;
        let result = run_checked(&cmd, timeout, cancel, &mut |line| match parser.feed(line) {
            Some(friendly) => {
                announced = true;
                progress(&friendly);
            }
            None => tracing::trace!(target: "voxnix::nix::build", "{line}"),
        })
        .await;
        match result {
            Ok(out) => {
                if !announced {
                    progress("nothing to build: the system is in the store already");
                }
                printed_path(&out, "nix-store --realise")
            }
            Err(Failure::Exit { stderr, status, .. }) => {
                let failed =
                    output::failed_drv(&stderr).unwrap_or_else(|| drv.display().to_string());
                let message = stderr
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| l.starts_with("error:") && l.contains(failed.as_str()))
                    .map(|l| {
                        l.trim_start_matches("error:")
                            .trim()
                            .trim_end_matches(';')
                            .to_string()
                    })
                    .unwrap_or_else(|| {
                        let m = output::error_message(&stderr);
                        if m.is_empty() {
                            format!("nix-store exited with {status}")
                        } else {
                            m
                        }
                    });
                let mut log_tail = self.read_log_tail(&failed).await;
                if log_tail.is_empty() {
                    log_tail = output::embedded_log_lines(&stderr).join("\n");
                }
                if log_tail.is_empty()
                    && let Some(lines) = parser.output_of(&failed)
                {
                    log_tail = lines.join("\n");
                }
                Err(NixError::Build {
                    drv: failed,
                    message: output::cap(&message),
                    log_tail,
                })
            }
            Err(f) => Err(f.into_command()),
        }
    }

    /// The last lines of a derivation's build log (`nix-store --read-log`);
    /// empty when Nix has none.
    async fn read_log_tail(&self, drv: &str) -> String {
        let Ok(cmd) = self.cfg.command("nix-store") else {
            return String::new();
        };
        let cmd = cmd.arg("--read-log").arg(drv).args(self.cfg.option_args());
        match run_checked(
            &cmd,
            Duration::from_secs(30),
            &CancelToken::never(),
            &mut |_| {},
        )
        .await
        {
            Ok(out) => {
                let text = out.stdout_text();
                let lines: Vec<String> = output::tail(&text, LOG_TAIL_LINES)
                    .lines()
                    .map(|l| process::clean_line(l.as_bytes()))
                    .collect();
                lines.join("\n")
            }
            Err(_) => String::new(),
        }
    }

    /// Points `name`'s profile at `system` (a new generation; the previous
    /// one stays). Returns what the profile pointed at before.
    pub async fn install(
        &self,
        name: &str,
        system: &Path,
        cancel: &CancelToken,
    ) -> Result<Option<PathBuf>, NixError> {
        let deadline = Instant::now() + self.cfg.build_timeout;
        self.install_until(name, system, deadline, &|_| {}, cancel)
            .await
    }

    async fn install_until(
        &self,
        name: &str,
        system: &Path,
        deadline: Instant,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Option<PathBuf>, NixError> {
        let profile = self.profile_path(name)?;
        let previous = self.current_system(name)?;
        if previous.as_deref() == Some(system) {
            progress(&format!("{name}'s profile already points at this system"));
            return Ok(previous);
        }
        // The profiles' root root-only, as nixos-container makes it (each
        // container's directory under it stays 0755 for its bind mount).
        if !self.cfg.profiles_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.cfg.profiles_dir)
                .map_err(|e| {
                    NixError::io(format!("creating {}", self.cfg.profiles_dir.display()), e)
                })?;
        }
        if let Some(dir) = profile.parent() {
            Self::ensure_dir(dir)?;
        }
        let cmd = self
            .cfg
            .command("nix-env")?
            .arg("-p")
            .arg(profile.as_os_str())
            .arg("--set")
            .arg(system.as_os_str())
            .args(self.cfg.option_args());
        let timeout = remaining(deadline, name, self.cfg.build_timeout)?;
        run_checked(&cmd, timeout, cancel, &mut |_| {})
            .await
            .map_err(|f| f.into_command())?;
        progress(&format!(
            "installed {} as {}",
            output::store_path_name(&system.to_string_lossy()),
            profile.display()
        ));
        Ok(previous)
    }

    /// Points `name`'s profile back at its previous generation (after a
    /// failed switch); returns the system it points at now.
    pub async fn rollback(&self, name: &str, cancel: &CancelToken) -> Result<PathBuf, NixError> {
        let profile = self.profile_path(name)?;
        if self.current_system(name)?.is_none() {
            return Err(NixError::NoProfile {
                name: name.into(),
                profile,
            });
        }
        let cmd = self
            .cfg
            .command("nix-env")?
            .arg("-p")
            .arg(profile.as_os_str())
            .arg("--rollback")
            .args(self.cfg.option_args());
        run_checked(&cmd, self.cfg.eval_timeout, cancel, &mut |_| {})
            .await
            .map_err(|f| f.into_command())?;
        self.current_system(name)?.ok_or(NixError::NoProfile {
            name: name.into(),
            profile,
        })
    }

    /// Evaluates and builds `spec` for the system cache, under `label` (with
    /// a '_': never a container's name), installing no profile. Returns the
    /// derivation and the system; the label's own roots are the caller's to
    /// remove ([`remove`](Self::remove)) once the cache holds its own.
    pub async fn build_unprofiled(
        &self,
        label: &str,
        spec: &serde_json::Value,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<(PathBuf, PathBuf), NixError> {
        if !label.contains('_') {
            return Err(NixError::InvalidName {
                name: label.into(),
                reason: "a build for the cache is labelled with a '_'".into(),
            });
        }
        let deadline = Instant::now() + self.cfg.build_timeout;
        let drv = self
            .instantiate_until(label, spec, deadline, progress, cancel)
            .await?;
        let system = self
            .realise_until(label, &drv, deadline, progress, cancel)
            .await?;
        Ok((drv, system))
    }

    /// Removes what builds installed for `name`: its profile directory
    /// (every generation) and its GC roots. Missing pieces are fine.
    pub async fn remove(&self, name: &str) -> Result<(), NixError> {
        check_name(name)?;
        let dir = self.cfg.profiles_dir.join(name);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&dir)
                .map_err(|e| NixError::io(format!("removing {}", dir.display()), e))?,
            Ok(_) => remove_if_exists(&dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NixError::io(format!("reading {}", dir.display()), e)),
        }
        remove_if_exists(&self.drv_root(name)?)?;
        remove_if_exists(&self.building_root(name)?)?;
        tracing::info!(name, "removed the container's profile and GC roots");
        Ok(())
    }

    /// Modules and packages of a system derivation (read off the blocking
    /// thread pool).
    pub async fn system_info(&self, drv: &Path) -> Result<SystemInfo, NixError> {
        let drv = drv.to_path_buf();
        tokio::task::spawn_blocking(move || super::drv::system_info(&drv))
            .await
            .map_err(|e| NixError::io("reading the derivation", std::io::Error::other(e)))?
            .map_err(NixError::from)
    }
}
