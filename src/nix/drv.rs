//! Reading derivations (`.drv` files, Nix's ATerm format) with the
//! `nix-derivation` crate, and what `voxnix status` shows from a container's
//! system derivation: its voxnix modules and its main packages.
//!
//! Where the facts are in a system derivation:
//! - modules: the attribute `voxnixModules` (a JSON list of names) that
//!   `nix/mkContainer.nix` puts on the NixOS toplevel through
//!   `system.systemBuilderArgs`, and `nix/sandbox/system.nix` on its stand-in;
//! - packages: the input derivations of the toplevel's `system-path` input
//!   (NixOS's `environment.systemPackages`, joined by `buildEnv`). When that
//!   derivation lists the installed paths (as `buildEnv` does), only inputs
//!   whose outputs are listed there count, so `buildEnv`'s own tools are left
//!   out. Without a `system-path` input the toplevel's direct inputs that
//!   have a version are used.
//!
//! Two layouts, both read: a derivation built with structured attributes
//! (current nixpkgs' toplevel and `buildEnv`) has one variable, `__json`,
//! holding every attribute, and `buildEnv` lists the installed paths in
//! `chosenOutputs`; an older one has a variable per attribute, and
//! `buildEnv` lists them in `pkgs` (JSON). Either list is
//! `[{ "paths": [...], "priority": N }]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix_derivation::Derivation;
use serde::{Deserialize, Serialize};

/// Largest `.drv` file read (real ones are a few KiB to a few hundred KiB).
pub const MAX_DRV_BYTES: u64 = 32 * 1024 * 1024;

/// The env attribute that lists a system's voxnix modules (JSON list).
pub const MODULES_ENV: &str = "voxnixModules";

#[derive(Debug, thiserror::Error)]
pub enum DrvError {
    #[error("cannot read derivation {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("derivation {path} is larger than {MAX_DRV_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a derivation (.drv) path")]
    NotADrv { path: PathBuf },
    #[error("invalid derivation {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// One parsed derivation: the parts voxnix looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drv {
    /// The derivation's name (`hello-2.12`), from its file name.
    pub name: String,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    /// Output name → store path (None for content-addressed outputs whose
    /// path is only known after the build).
    pub outputs: BTreeMap<String, Option<String>>,
    /// Environment (non-UTF-8 bytes replaced); without `__json`.
    pub env: BTreeMap<String, String>,
    /// With structured attributes: every attribute, from `__json` (a JSON
    /// object); None for a derivation with a variable per attribute.
    pub structured: Option<serde_json::Value>,
    /// Input derivation path → the outputs used.
    pub input_drvs: BTreeMap<String, Vec<String>>,
    pub input_srcs: Vec<String>,
}

impl Drv {
    /// `name` split like `builtins.parseDrvName`.
    pub fn parsed_name(&self) -> Package {
        parse_drv_name(&self.name)
    }
}

/// A package name and version, as `builtins.parseDrvName` splits them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    /// Empty when the name has no version.
    pub version: String,
}

/// What a container's system derivation says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The system derivation's name (`nixos-system-dev-25.05...`).
    pub name: String,
    /// The voxnix modules, in the spec's order; empty when the derivation
    /// does not record them (built by something else than voxnix).
    pub modules: Vec<String>,
    /// The main packages, sorted by name, each once.
    pub packages: Vec<Package>,
}

/// Splits `hello-2.12` into `hello` and `2.12` the way Nix's
/// `builtins.parseDrvName` does: the version starts after the first `-` that
/// is followed by a character that is not an ASCII letter.
pub fn parse_drv_name(full: &str) -> Package {
    let bytes = full.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && i + 1 < bytes.len() && !bytes[i + 1].is_ascii_alphabetic() {
            return Package {
                name: full[..i].to_string(),
                // `-` is ASCII, so i + 1 is a character boundary.
                version: full[i + 1..].to_string(),
            };
        }
    }
    Package {
        name: full.to_string(),
        version: String::new(),
    }
}

/// The name of a `.drv` from its file name: `/nix/store/<hash>-hello-2.12.drv`
/// → `hello-2.12`. None when the path does not look like one.
pub fn name_from_path(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".drv")?;
    let (hash, name) = stem.split_once('-')?;
    (hash.len() == 32 && !name.is_empty()).then(|| name.to_string())
}

/// Parses ATerm bytes. `name` is the derivation's name (Nix keeps it out of
/// the file; see [`name_from_path`]).
pub fn parse(bytes: &[u8], name: &str) -> Result<Drv, String> {
    let d = Derivation::from_aterm_bytes(bytes, name).map_err(|e| e.to_string())?;
    let outputs = d
        .outputs()
        .iter()
        .map(|(out, o)| {
            let path = o
                .path(d.name(), out)
                .ok()
                .flatten()
                .map(|p| p.to_absolute_path());
            (out.clone(), path)
        })
        .collect();
    let env = d
        .environment()
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let input_drvs = d
        .input_derivations()
        .iter()
        .map(|(p, i)| (p.to_absolute_path(), i.outputs().iter().cloned().collect()))
        .collect();
    let input_srcs = d
        .input_sources()
        .iter()
        .map(|p| p.to_absolute_path())
        .collect();
    let structured = d.structured_attrs().map(|attrs| {
        serde_json::Value::Object(
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    });
    Ok(Drv {
        structured,
        name: d.name().to_string(),
        system: d.system().to_string(),
        builder: d.builder().to_string(),
        args: d.arguments().to_vec(),
        outputs,
        env,
        input_drvs,
        input_srcs,
    })
}

/// Reads and parses a `.drv` file.
pub fn read(path: &Path) -> Result<Drv, DrvError> {
    let name = name_from_path(path).ok_or_else(|| DrvError::NotADrv { path: path.into() })?;
    let read_err = |source| DrvError::Read {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_DRV_BYTES {
        return Err(DrvError::TooLarge { path: path.into() });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    parse(&bytes, &name).map_err(|message| DrvError::Parse {
        path: path.into(),
        message,
    })
}

impl Drv {
    /// The derivation's attribute `name` as JSON, in either layout: from
    /// `__json` when the derivation has structured attributes (the value as
    /// Nix serialised it), else the variable's text as a JSON string.
    pub fn attr(&self, name: &str) -> Option<serde_json::Value> {
        match &self.structured {
            Some(attrs) => attrs.get(name).cloned(),
            None => self
                .env
                .get(name)
                .map(|v| serde_json::Value::String(v.clone())),
        }
    }
}

/// An attribute that holds JSON: a string to parse (what `builtins.toJSON`
/// gives), or, with structured attributes, possibly the value itself.
fn json_attr(drv: &Drv, name: &str) -> Option<serde_json::Value> {
    match drv.attr(name)? {
        serde_json::Value::String(text) => serde_json::from_str(&text).ok(),
        other => Some(other),
    }
}

/// The modules recorded in a system derivation (empty when absent or not a
/// JSON list of strings).
pub fn modules_of(drv: &Drv) -> Vec<String> {
    json_attr(drv, MODULES_ENV)
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default()
}

/// The store paths `buildEnv` installs (`chosenOutputs`, or `pkgs` in the
/// older layout); None when the derivation lists none.
pub fn installed_paths(drv: &Drv) -> Option<BTreeSet<String>> {
    #[derive(Deserialize)]
    struct Chosen {
        paths: Vec<String>,
    }
    let list = json_attr(drv, "chosenOutputs").or_else(|| json_attr(drv, "pkgs"))?;
    let chosen: Vec<Chosen> = serde_json::from_value(list).ok()?;
    Some(chosen.into_iter().flat_map(|c| c.paths).collect())
}

/// Reads a container's system derivation and the inputs that name its
/// packages (see the module docs).
pub fn system_info(drv_path: &Path) -> Result<SystemInfo, DrvError> {
    let top = read(drv_path)?;
    let modules = modules_of(&top);

    let system_path = top
        .input_drvs
        .keys()
        .find(|p| name_from_path(Path::new(p)).as_deref() == Some("system-path"));

    let mut packages = BTreeSet::new();
    match system_path {
        Some(sp) => {
            let sp = read(Path::new(sp))?;
            // buildEnv's list of installed paths, when it is there.
            let listed = installed_paths(&sp);
            for input in sp.input_drvs.keys() {
                let Some(name) = name_from_path(Path::new(input)) else {
                    continue;
                };
                if let Some(listed) = &listed {
                    let installed = match read(Path::new(input)) {
                        Ok(d) => d.outputs.values().flatten().any(|out| listed.contains(out)),
                        Err(e) => {
                            tracing::debug!(error = %e, "skipping an unreadable input of system-path");
                            false
                        }
                    };
                    if !installed {
                        continue;
                    }
                }
                packages.insert(parse_drv_name(&name));
            }
        }
        None => {
            for input in top.input_drvs.keys() {
                if let Some(name) = name_from_path(Path::new(input)) {
                    let p = parse_drv_name(&name);
                    if !p.version.is_empty() && !p.name.starts_with("voxnix-module-") {
                        packages.insert(p);
                    }
                }
            }
        }
    }
    Ok(SystemInfo {
        name: top.name,
        modules,
        packages: packages.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drv_names_split_like_nix() {
        let cases = [
            ("hello-2.12", "hello", "2.12"),
            ("nixos-system-dev-25.05", "nixos-system-dev", "25.05"),
            ("openssh-9.9p2", "openssh", "9.9p2"),
            ("foo-_bar", "foo", "_bar"),
            ("a-b-c", "a-b-c", ""),
            ("x-", "x-", ""),
            ("-1", "", "1"),
            ("foo-é1", "foo", "é1"),
            ("", "", ""),
        ];
        for (full, name, version) in cases {
            let p = parse_drv_name(full);
            assert_eq!(
                (p.name.as_str(), p.version.as_str()),
                (name, version),
                "{full}"
            );
        }
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            name_from_path(Path::new(
                "/nix/store/qjchy07x81jn3hc9d2w58m5abn7d9bv5-git-2.39.5.drv"
            ))
            .as_deref(),
            Some("git-2.39.5")
        );
        assert_eq!(name_from_path(Path::new("/tmp/x.drv")), None);
        assert_eq!(
            name_from_path(Path::new(
                "/nix/store/qjchy07x81jn3hc9d2w58m5abn7d9bv5-git-2.39.5"
            )),
            None
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"Derive(",
            b"Derive([],[],[],\"x\",\"/bin/sh\",[],[])trailing",
            b"\xff\xfe",
            b"Derive([(\"out\",\"/nix/store/x\",\"\",\"\")],[],[],\"x\",\"b\",[],[(\"a\"",
        ] {
            assert!(
                parse(bad, "x").is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_minimal_derivation_parses() {
        let text = br#"Derive([("out","/nix/store/l5xl2kzn5scsfsx47194hbdf8k1kh5s0-sys","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo"],[("voxnixModules","[\"git\",\"fish\"]"),("weird","a\"b\\c\nd")])"#;
        let d = parse(text, "sys").unwrap();
        assert_eq!(d.system, "x86_64-linux");
        assert_eq!(
            d.outputs["out"].as_deref(),
            Some("/nix/store/l5xl2kzn5scsfsx47194hbdf8k1kh5s0-sys")
        );
        assert_eq!(d.env["weird"], "a\"b\\c\nd");
        assert_eq!(modules_of(&d), ["git", "fish"]);
    }

    /// A one-output derivation with these environment variables, in ATerm.
    fn drv_with_env(env: &[(&str, &str)]) -> Drv {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("({},{})", quote(k), quote(v)))
            .collect();
        let text = format!(
            r#"Derive([("out","/nix/store/l5xl2kzn5scsfsx47194hbdf8k1kh5s0-sys","","")],[],[],"x86_64-linux","/bin/bash",[],[{}])"#,
            env.join(",")
        );
        parse(text.as_bytes(), "sys").unwrap()
    }

    #[test]
    fn structured_attributes_are_read_from_json() {
        let structured = serde_json::json!({
            "voxnixModules": "[\"git\"]",
            "chosenOutputs": [{ "paths": ["/nix/store/a-git"], "priority": 5 }],
        });
        let d = drv_with_env(&[("__json", &structured.to_string())]);
        assert_eq!(modules_of(&d), ["git"]);
        assert_eq!(
            installed_paths(&d).unwrap().into_iter().collect::<Vec<_>>(),
            ["/nix/store/a-git"]
        );
        // A list given as a value (not a JSON string) reads the same.
        let d = drv_with_env(&[("__json", r#"{"voxnixModules":["a","b"]}"#)]);
        assert_eq!(modules_of(&d), ["a", "b"]);
        // The older layout: a variable per attribute, buildEnv's `pkgs`.
        let d = drv_with_env(&[
            ("voxnixModules", r#"["fish"]"#),
            ("pkgs", r#"[{"paths":["/nix/store/b-fish"],"priority":5}]"#),
        ]);
        assert_eq!(modules_of(&d), ["fish"]);
        assert_eq!(
            installed_paths(&d).unwrap().into_iter().collect::<Vec<_>>(),
            ["/nix/store/b-fish"]
        );
        // Neither list: None, so every input of system-path counts.
        assert_eq!(installed_paths(&drv_with_env(&[("x", "1")])), None);
    }
}
