//! A container's persistent root, made safe for NixOS's start script.
//!
//! Before every boot, NixOS's `container@.service` runs, as the host's root,
//! `mkdir -p` on `$root/usr/bin`, `mkdir -p`/`chmod` on `$root/etc`,
//! `$root/var/lib`, `$root/var/lib/private` and `$root/root`, and `touch` on `$root/etc/os-release` and
//! `$root/etc/machine-id`. All of these follow symlinks, and the tree is the
//! container's: a container that turns its `/root` into a link to `/` gets
//! the host's `/` set to 0700 at its next start (which it can trigger itself
//! by rebooting). [`prepare`] runs first (`voxnix container-pre-start`, an
//! `ExecStartPre` of the template on NixOS and in the sandbox), while the
//! container is down: every one of those paths, and each directory on the
//! way, must be a real directory (or a regular file, or absent); a link or
//! anything else in such a place is removed (never followed: removing a link
//! removes the link), so the start script creates a plain one.

use std::io;
use std::path::{Path, PathBuf};

/// Directories NixOS's start script creates or changes, relative to the root
/// (each listed after its parent).
const DIRECTORIES: &[&str] = &[
    "usr",
    "usr/bin",
    "etc",
    "var",
    "var/lib",
    "var/lib/private",
    "root",
];
/// Files it touches.
const FILES: &[&str] = &["etc/os-release", "etc/machine-id"];

/// Whether a container may start as far as its conf is concerned: a
/// container voxnix has a record of (`records_dir/NAME.json`) starts only
/// with voxnix's own conf (`conf`, a plain file that begins with
/// [`super::conf::HEADER`]). Run for every start, however triggered (a
/// reboot inside the container, `systemctl start`, NixOS's tools): started
/// without its conf, the template would boot it without its user namespace
/// and private network. Containers voxnix has no record of are not its
/// business.
pub fn check_conf(records_dir: &Path, conf: &Path, name: &str) -> Result<(), String> {
    if records_dir
        .join(format!("{name}.json"))
        .symlink_metadata()
        .is_err()
    {
        return Ok(());
    }
    let ours = match conf.symlink_metadata() {
        Ok(m) if m.is_file() => std::fs::read(conf)
            .map(|t| t.starts_with(super::conf::HEADER.as_bytes()))
            .unwrap_or(false),
        _ => false,
    };
    if ours {
        Ok(())
    } else {
        Err(format!(
            "{} is missing or was not written by voxnix; `voxnix repair {name}` writes it \
             again, `voxnix destroy {name}` removes the container",
            conf.display()
        ))
    }
}

/// What [`prepare`] changed (paths removed), for the log.
pub type Repairs = Vec<PathBuf>;

/// Makes `root` safe for the start script (see the module docs). `root`
/// itself must be a real directory or absent; a link there is an error (it
/// is the host's path, a container cannot make it one).
pub fn prepare(root: &Path) -> io::Result<Repairs> {
    let mut repairs = Vec::new();
    match root.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(repairs),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(_) => {}
    }
    for rel in DIRECTORIES {
        let path = root.join(rel);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                super::leftovers::remove_tree(&path)?;
                repairs.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for rel in FILES {
        let path = root.join(rel);
        match path.symlink_metadata() {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                super::leftovers::remove_tree(&path)?;
                repairs.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(repairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_odd_files_in_the_start_scripts_way_are_removed() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("root")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("var/lib/private")).unwrap();
        std::fs::write(r.join("etc"), "a file where a directory goes").unwrap();
        std::fs::create_dir_all(r.join("usr")).unwrap();
        // NixOS's `mkdir -p "$root/usr/bin"` would make a `bin` in any host
        // directory the container pointed it at.
        std::os::unix::fs::symlink(host.path(), r.join("usr/bin")).unwrap();
        let fixed = prepare(r).unwrap();
        assert_eq!(fixed.len(), 4, "{fixed:?}");
        assert!(r.join("usr").is_dir() && r.join("usr/bin").symlink_metadata().is_err());
        assert!(host.path().is_dir(), "the link's target is untouched");
        assert!(!r.join("root").exists() && !r.join("etc").exists());
        assert!(r.join("var/lib").is_dir());
        // A second run finds nothing; a missing root is fine.
        assert!(prepare(r).unwrap().is_empty());
        assert!(prepare(&r.join("nope")).unwrap().is_empty());
        // machine-id as a link to a host file.
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(host.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), r.join("etc/machine-id")).unwrap();
        assert_eq!(prepare(r).unwrap(), [r.join("etc/machine-id")]);
        assert_eq!(
            std::fs::read_to_string(host.path().join("secret")).unwrap(),
            "x"
        );
    }
}
