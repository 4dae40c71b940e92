//! The `[nix]` table of the daemon's configuration, and the names it puts
//! into paths: what every part of `nix/` reads, so it sits below them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NixError;
use super::process::NixCommand;

/// The `[nix]` table of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NixConfig {
    /// Directory holding `nix-instantiate`, `nix-store` and `nix-env`.
    pub nix_bin_dir: PathBuf,
    /// The voxnix tree that holds `nix/` and `modules/`.
    pub library_dir: PathBuf,
    /// The expression evaluated for a container, relative to `library_dir`
    /// unless absolute: `nix/buildContainer.nix` on a real host, the
    /// builtins-only `nix/sandbox/system.nix` in the sandbox.
    pub entry: PathBuf,
    /// nixpkgs, passed to the entry as `nixpkgs` (a string argument). None
    /// passes nothing (the entry must not need it).
    pub nixpkgs: Option<PathBuf>,
    /// Per-container profiles: `<profiles_dir>/<name>/system`.
    pub profiles_dir: PathBuf,
    /// Where the GC roots of containers' derivations go (`<name>.drv`).
    pub gcroots_dir: PathBuf,
    /// The longest a whole build (evaluate, realise, install) may take.
    #[serde(rename = "build_timeout_secs", with = "secs")]
    pub build_timeout: Duration,
    /// The longest a read-only evaluation (the catalog) may take.
    #[serde(rename = "eval_timeout_secs", with = "secs")]
    pub eval_timeout: Duration,
    /// `--option NAME VALUE` pairs passed to every Nix command, e.g.
    /// `[["sandbox", "false"]]`.
    pub extra_options: Vec<(String, String)>,
    /// The system cache (engine/system_cache.rs): days an unused cached
    /// system is kept (0: it goes with its last container).
    pub cache_keep_days: u32,
    /// Unused cached systems kept at most, the most recently used first
    /// (0: no limit).
    pub cache_max_entries: u32,
    /// Module sets built into the cache when the daemon starts, so that a
    /// first create with one of them is already a cache hit, e.g.
    /// `[["git", "fish"], ["dev"]]`.
    pub prewarm: Vec<Vec<String>>,
}

impl Default for NixConfig {
    fn default() -> Self {
        Self {
            nix_bin_dir: PathBuf::from("/run/current-system/sw/bin"),
            library_dir: PathBuf::from("/usr/share/voxnix"),
            entry: PathBuf::from("nix/buildContainer.nix"),
            nixpkgs: None,
            profiles_dir: PathBuf::from("/nix/var/nix/profiles/per-container"),
            gcroots_dir: PathBuf::from("/nix/var/nix/gcroots/voxnix"),
            build_timeout: Duration::from_secs(3600),
            eval_timeout: Duration::from_secs(120),
            extra_options: Vec::new(),
            cache_keep_days: 30,
            cache_max_entries: 64,
            prewarm: Vec::new(),
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = u64::deserialize(d)?;
        if secs == 0 {
            return Err(serde::de::Error::custom("must be at least 1 second"));
        }
        Ok(Duration::from_secs(secs))
    }
}

impl NixConfig {
    /// The entry expression's path.
    pub fn entry_path(&self) -> PathBuf {
        if self.entry.is_absolute() {
            self.entry.clone()
        } else {
            self.library_dir.join(&self.entry)
        }
    }

    /// A command for one of the Nix tools in `nix_bin_dir`.
    pub fn command(&self, tool: &str) -> Result<NixCommand, NixError> {
        let program = self.nix_bin_dir.join(tool);
        if !program.is_file() {
            return Err(NixError::NotInstalled {
                what: format!("{tool} (looked in {})", self.nix_bin_dir.display()),
            });
        }
        Ok(NixCommand::new(program))
    }

    /// `--option NAME VALUE` for each of `extra_options`.
    pub fn option_args(&self) -> Vec<OsString> {
        self.extra_options
            .iter()
            .flat_map(|(k, v)| ["--option".into(), k.into(), v.into()])
            .collect()
    }

    /// `<profiles_dir>/<name>/system`.
    pub fn profile_path(&self, name: &str) -> Result<PathBuf, NixError> {
        check_name(name)?;
        Ok(self.profiles_dir.join(name).join("system"))
    }
}

/// Container names used in paths: 1–64 of `[A-Za-z0-9_-]`, not starting
/// with `-`.
pub fn check_name(name: &str) -> Result<(), NixError> {
    let bad = |reason: &str| {
        Err(NixError::InvalidName {
            name: name.into(),
            reason: reason.into(),
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if name.starts_with('-') {
        return bad("must not start with '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn config_defaults_and_toml() {
        let cfg: NixConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, NixConfig::default());
        assert_eq!(cfg.build_timeout, Duration::from_secs(3600));
        let cfg: NixConfig = toml::from_str(
            r#"
            nix_bin_dir = "/usr/bin"
            library_dir = "/work"
            entry = "nix/sandbox/system.nix"
            nixpkgs = "/nix/var/nixpkgs"
            build_timeout_secs = 60
            extra_options = [["sandbox", "false"], ["substituters", ""]]
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.entry_path(),
            PathBuf::from("/work/nix/sandbox/system.nix")
        );
        assert_eq!(cfg.build_timeout, Duration::from_secs(60));
        assert_eq!(
            cfg.option_args(),
            [
                "--option",
                "sandbox",
                "false",
                "--option",
                "substituters",
                ""
            ]
            .map(OsString::from)
            .to_vec()
        );
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<NixConfig>(&text).unwrap(), cfg);
        assert!(toml::from_str::<NixConfig>("build_timeout_secs = 0").is_err());
        assert!(toml::from_str::<NixConfig>("bin_dir = \"/x\"").is_err());
    }

    #[test]
    fn names_are_checked() {
        for ok in ["dev", "a", "web-1", "x_y"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "a/b", "-x", "a b", &"x".repeat(65), "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_tools_are_not_installed_errors() {
        let cfg = NixConfig {
            nix_bin_dir: "/nonexistent".into(),
            ..NixConfig::default()
        };
        let err = cfg.command("nix-store").unwrap_err();
        assert!(matches!(err, NixError::NotInstalled { .. }));
        let text = err.to_string();
        assert!(text.contains("nix-bin") && text.contains("NixOS"), "{text}");
    }
}
