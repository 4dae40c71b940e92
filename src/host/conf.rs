//! NixOS container conf files (`/etc/nixos-containers/NAME.conf`), the contract
//! between voxnix and `container@.service`. Same keys and quoting as the files
//! NixOS writes for declarative containers, so the template cannot tell
//! voxnix's from its own.
//!
//! Current nixpkgs runs the start script with `nounset` and reads
//! `COPY_RESOLV_CONF` without a default, so a file without it stops the
//! container from starting; every key a declarative container's file always
//! has is written here too ([`ALWAYS_WRITTEN`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::atomic_file;

/// The first line of every conf file voxnix writes: how it knows its own.
pub const HEADER: &str = "# Managed by voxnix: edits are overwritten.\n";

/// How a container's conf file compares with the one voxnix writes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfState {
    /// Exactly what voxnix writes.
    Ok,
    /// voxnix's (it starts with [`HEADER`]) but not what it writes now: an
    /// older voxnix's, or edited (edits are overwritten).
    Outdated,
    /// No conf file: removed outside voxnix (e.g. `nixos-container destroy`).
    Missing,
    /// A file voxnix did not write (no header, a link, not a file,
    /// unreadable): another tool's, e.g. a NixOS declarative container's.
    Foreign,
}

/// What voxnix puts in a container's conf file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConf {
    /// The NixOS system to boot (`SYSTEM_PATH`); None in the sandbox.
    pub system_path: Option<String>,
    pub private_network: bool,
    pub host_bridge: Option<String>,
    /// TCP ports forwarded from the host to the container, (host, container)
    /// (`HOST_PORT`; NixOS's `forwardPorts`, nspawn's `--port`).
    pub host_ports: Vec<(u16, u16)>,
    /// Flags appended to systemd-nspawn (bind mounts, credentials ...). Each
    /// must be one shell word: NixOS word-splits the variable.
    pub extra_nspawn_flags: Vec<String>,
}

/// The keys NixOS writes into every declarative container's conf file, whatever
/// its settings; the start script may read them without a default.
pub const ALWAYS_WRITTEN: &[&str] = &[
    "COPY_RESOLV_CONF",
    "PRIVATE_USERS",
    "INTERFACES",
    "MACVLANS",
    "EXTRA_NSPAWN_FLAGS",
];

/// A flag that would not survive NixOS's word splitting, or could inject more.
pub fn flag_is_safe(flag: &str) -> bool {
    !flag.is_empty()
        && flag.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '$' | '`' | ';' | '&' | '|')
        })
}

impl ContainerConf {
    /// Renders the file; `None` if a flag is unsafe.
    pub fn render(&self) -> Option<String> {
        let mut out = String::from(HEADER);
        if let Some(p) = &self.system_path {
            if !flag_is_safe(p) {
                return None;
            }
            out.push_str(&format!("SYSTEM_PATH={p}\n"));
        }
        if self.private_network {
            out.push_str("PRIVATE_NETWORK=1\n");
        }
        if let Some(b) = &self.host_bridge {
            if !flag_is_safe(b) {
                return None;
            }
            out.push_str(&format!("HOST_BRIDGE={b}\n"));
        }
        // voxnix's containers take DNS from their DHCP lease
        // (nix/mkContainer.nix: networking.useHostResolvConf = false), so the
        // host's resolv.conf, which may name a resolver on the host's
        // loopback, is not copied in.
        if !self.host_ports.is_empty() {
            // As NixOS writes forwardPorts: PROTOCOL:HOST:CONTAINER, joined
            // by commas (its start script gives each one to --port).
            let ports: Vec<String> = self
                .host_ports
                .iter()
                .map(|(h, c)| format!("tcp:{h}:{c}"))
                .collect();
            out.push_str(&format!("HOST_PORT={}\n", ports.join(",")));
        }
        out.push_str("COPY_RESOLV_CONF=0\n");
        // A user namespace of its own, as NixOS's `privateUsers = "pick"`:
        // the container's root is an unprivileged uid range on the host.
        out.push_str("PRIVATE_USERS=pick\n");
        out.push_str("INTERFACES=\"\"\n");
        out.push_str("MACVLANS=\"\"\n");
        if !self.extra_nspawn_flags.iter().all(|f| flag_is_safe(f)) {
            return None;
        }
        out.push_str(&format!(
            "EXTRA_NSPAWN_FLAGS=\"{}\"\n",
            self.extra_nspawn_flags.join(" ")
        ));
        Some(out)
    }
}

/// Parses KEY=VALUE lines the way systemd's EnvironmentFile= does for the
/// subset NixOS writes (optional double quotes, comments, blank lines).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// The directory of conf files, and operations on it.
#[derive(Debug, Clone)]
pub struct ConfDir {
    dir: PathBuf,
    /// What `state` found, by name, with the file's identity and a hash of
    /// what it was compared with: `List` compares every container's conf
    /// at each call, and re-reads only the files that changed (a stat, not
    /// an open and a read, per container).
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// What tells one version of a file from another: any write changes its
/// size, times or (voxnix's atomic writes) inode; ctime cannot be set back.
type FileId = (u64, u64, u64, i64, i64, i64, i64);

/// A file's identity, the hash of what it was compared with, the answer.
type Seen = (FileId, u64, ConfState);

fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn hash_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl ConfDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seen: Arc::default(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conf"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    pub fn write(&self, name: &str, text: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        atomic_file::write(&self.path(name), text.as_bytes(), 0o644)
    }

    /// How `name`'s conf file compares with `wanted` (what voxnix writes).
    /// Never follows a link: NixOS's own conf files are links into /etc/static.
    pub fn state(&self, name: &str, wanted: &str) -> ConfState {
        let path = self.path(name);
        let meta = match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ConfState::Missing,
            Ok(m) if m.is_file() => m,
            _ => return ConfState::Foreign,
        };
        let (id, wanted_hash) = (file_id(&meta), hash_of(wanted));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((i, h, state)) = seen.get(name)
            && *i == id
            && *h == wanted_hash
        {
            return *state;
        }
        let state = match std::fs::read_to_string(&path) {
            Ok(text) if text == wanted => ConfState::Ok,
            Ok(text) if text.starts_with(HEADER) => ConfState::Outdated,
            Ok(_) => ConfState::Foreign,
            // Unreadable now (EIO, out of fds): not remembered.
            Err(_) => return ConfState::Foreign,
        };
        // Read after the stat: a write in between leaves a newer file than
        // `id` says, so the next call reads it again.
        seen.insert(name.to_string(), (id, wanted_hash, state));
        state
    }

    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        atomic_file::remove(&self.path(name))
    }

    /// Names of every container with a conf file.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".conf")
                    .map(str::to_string)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_is_voxnix_own_outdated_missing_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let confs = ConfDir::new(dir.path());
        let wanted = ContainerConf::default().render().unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Missing);
        confs.write("a", &wanted).unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Ok);
        // Edited in place, same length (no new inode): seen, not the
        // remembered answer.
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(confs.path("a"))
                .unwrap();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(b"X").unwrap();
        }
        assert_eq!(confs.state("a", &wanted), ConfState::Foreign);
        confs.write("a", &wanted).unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Ok);
        // Compared with something else: compared again.
        assert_eq!(confs.state("a", "other"), ConfState::Outdated);
        confs
            .write("a", &format!("{HEADER}PRIVATE_NETWORK=1\n"))
            .unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Outdated);
        confs.write("a", "PRIVATE_NETWORK=1\n").unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Foreign);
        // NixOS's declarative confs are links into /etc/static: never ours.
        std::fs::remove_file(confs.path("a")).unwrap();
        let target = dir.path().join("static.conf");
        std::fs::write(&target, &wanted).unwrap();
        std::os::unix::fs::symlink(&target, confs.path("a")).unwrap();
        assert_eq!(confs.state("a", &wanted), ConfState::Foreign);
    }

    #[test]
    fn renders_nixos_keys_and_parses_back() {
        let conf = ContainerConf {
            system_path: Some("/nix/store/abc-nixos-system".into()),
            private_network: true,
            host_bridge: Some("br-vox".into()),
            host_ports: vec![(20000, 8080), (20001, 22)],
            extra_nspawn_flags: vec![
                "--bind=/srv/ws:/workspace".into(),
                "--load-credential=k:/run/k".into(),
            ],
        };
        let text = conf.render().unwrap();
        let kv = parse(&text);
        assert_eq!(kv["SYSTEM_PATH"], "/nix/store/abc-nixos-system");
        assert_eq!(kv["PRIVATE_NETWORK"], "1");
        assert_eq!(kv["HOST_BRIDGE"], "br-vox");
        assert_eq!(kv["HOST_PORT"], "tcp:20000:8080,tcp:20001:22");
        assert!(!parse(&ContainerConf::default().render().unwrap()).contains_key("HOST_PORT"));
        assert_eq!(
            kv["EXTRA_NSPAWN_FLAGS"],
            "--bind=/srv/ws:/workspace --load-credential=k:/run/k"
        );
    }

    #[test]
    fn every_key_nixos_always_writes_is_written() {
        for conf in [
            ContainerConf::default(),
            ContainerConf {
                system_path: Some("/nix/store/abc-nixos-system".into()),
                private_network: true,
                host_bridge: Some("br-vox".into()),
                host_ports: vec![(20000, 80)],
                extra_nspawn_flags: vec!["--bind=/a:/b".into()],
            },
        ] {
            let kv = parse(&conf.render().unwrap());
            for key in ALWAYS_WRITTEN {
                assert!(kv.contains_key(*key), "{key} missing from {kv:?}");
            }
            assert_eq!(kv["COPY_RESOLV_CONF"], "0");
            assert_eq!(kv["PRIVATE_USERS"], "pick");
        }
    }

    #[test]
    fn refuses_flags_that_break_word_splitting() {
        for bad in ["--bind=/a b:/c", "--bind=$(x)", "x\"y", "", "a;b", "a\nb"] {
            let conf = ContainerConf {
                extra_nspawn_flags: vec![bad.into()],
                ..Default::default()
            };
            assert!(conf.render().is_none(), "{bad:?} must be refused");
        }
    }
}
