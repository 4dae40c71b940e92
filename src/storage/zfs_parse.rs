//! Parsing what the `zfs` command prints: `zfs list -H -p -o ...` rows,
//! `zfs get -H -p -o name,property,value,source` rows, and the error
//! messages libzfs writes to stderr (always run with `LC_ALL=C`, so they are
//! untranslated). Formats are documented with samples in
//! `tests/fixtures/zfs/README.md`.

use thiserror::Error;

/// Columns the backend asks `zfs list` for, in this order.
pub const LIST_COLUMNS: &[&str] = &[
    "name",
    "type",
    "creation",
    "used",
    "available",
    "referenced",
    "quota",
    "mountpoint",
    "mounted",
    "origin",
    EXPIRES_PROPERTY,
];

/// User property holding when a kept (retired) workspace expires, in seconds
/// since the epoch. User properties need a `:` in their name; the module part
/// is reverse-DNS by convention.
pub const EXPIRES_PROPERTY: &str = "org.voxnix:expires";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unexpected zfs output (line {line}): {why}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub why: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetType {
    Filesystem,
    Snapshot,
    Volume,
    Bookmark,
}

/// One row of `zfs list -H -p -o <LIST_COLUMNS>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: DatasetType,
    /// Seconds since the epoch.
    pub creation: u64,
    pub used: u64,
    /// `None` for snapshots (`-`).
    pub available: Option<u64>,
    pub referenced: Option<u64>,
    /// `None` when there is no quota (`0` with `-p`, `-` for snapshots).
    pub quota: Option<u64>,
    /// `None` for `-` (snapshots); `Some("none")`/`Some("legacy")` kept as is.
    pub mountpoint: Option<String>,
    /// `None` for `-` (snapshots).
    pub mounted: Option<bool>,
    /// The snapshot a clone was made from; `None` for `-`.
    pub origin: Option<String>,
    /// [`EXPIRES_PROPERTY`]; `None` when unset (`-`) or not a number.
    pub expires: Option<u64>,
}

impl Entry {
    /// For a snapshot, `(dataset, snapshot name)`.
    pub fn snapshot_parts(&self) -> Option<(&str, &str)> {
        if self.kind == DatasetType::Snapshot {
            self.name.split_once('@')
        } else {
            None
        }
    }
}

/// Parses `zfs list -H -p -o <LIST_COLUMNS>` output.
pub fn parse_list(stdout: &str) -> Result<Vec<Entry>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let err = |why: &str| ParseError {
            line: i + 1,
            why: why.to_string(),
            text: line.to_string(),
        };
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != LIST_COLUMNS.len() {
            return Err(err(&format!(
                "expected {} tab-separated fields, found {}",
                LIST_COLUMNS.len(),
                f.len()
            )));
        }
        let kind = match f[1] {
            "filesystem" => DatasetType::Filesystem,
            "snapshot" => DatasetType::Snapshot,
            "volume" => DatasetType::Volume,
            "bookmark" => DatasetType::Bookmark,
            _ => return Err(err("unknown dataset type")),
        };
        let num =
            |s: &str, what: &str| parse_number(s).map_err(|why| err(&format!("{what}: {why}")));
        let creation = num(f[2], "creation")?.ok_or_else(|| err("creation is '-'"))?;
        let used = num(f[3], "used")?.unwrap_or(0);
        let available = num(f[4], "available")?;
        let referenced = num(f[5], "referenced")?;
        let quota = num(f[6], "quota")?.filter(|q| *q != 0);
        let mountpoint = dash_none(f[7]).map(str::to_string);
        let mounted = match f[8] {
            "yes" => Some(true),
            "no" => Some(false),
            "-" => None,
            _ => return Err(err("mounted is neither yes, no nor -")),
        };
        let origin = dash_none(f[9]).map(str::to_string);
        // A user property holds any string; anything but a number is ignored.
        let expires = dash_none(f[10]).and_then(|v| v.parse::<u64>().ok());
        out.push(Entry {
            name: f[0].to_string(),
            kind,
            creation,
            used,
            available,
            referenced,
            quota,
            mountpoint,
            mounted,
            origin,
            expires,
        });
    }
    Ok(out)
}

/// One row of `zfs get -H -p -o name,property,value,source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub property: String,
    /// As printed; `-` means "not applicable / unset", an empty string is
    /// possible (e.g. `clones` of a snapshot without clones).
    pub value: String,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `-`: read-only, computed by ZFS.
    None,
    Local,
    Default,
    Temporary,
    Received,
    /// `inherited from <dataset>`.
    Inherited(String),
}

/// Parses `zfs get -H -p -o name,property,value,source` output.
pub fn parse_get(stdout: &str) -> Result<Vec<Property>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let err = |why: &str| ParseError {
            line: i + 1,
            why: why.to_string(),
            text: line.to_string(),
        };
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            return Err(err(&format!(
                "expected 4 tab-separated fields, found {}",
                f.len()
            )));
        }
        let source = match f[3] {
            "-" => Source::None,
            "local" => Source::Local,
            "default" => Source::Default,
            "temporary" => Source::Temporary,
            "received" => Source::Received,
            s => match s.strip_prefix("inherited from ") {
                Some(ds) if !ds.is_empty() => Source::Inherited(ds.to_string()),
                _ => return Err(err("unknown property source")),
            },
        };
        out.push(Property {
            name: f[0].to_string(),
            property: f[1].to_string(),
            value: f[2].to_string(),
            source,
        });
    }
    Ok(out)
}

/// A number as printed with `-p`: decimal digits (up to `u64::MAX`), or `-`
/// / `none` for "no value".
pub fn parse_number(s: &str) -> Result<Option<u64>, String> {
    match s {
        "-" | "none" => Ok(None),
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| "number larger than 2^64-1".to_string()),
        _ => Err("not a number".to_string()),
    }
}

fn dash_none(s: &str) -> Option<&str> {
    if s == "-" { None } else { Some(s) }
}

/// What a failed `zfs` command said, in the terms the backend acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `dataset already exists` (create, snapshot, clone, rename target).
    Exists,
    /// `dataset does not exist` for this name (`cannot open '<name>': ...`),
    /// or `could not find any snapshots to destroy`.
    NoDataset(Option<String>),
    /// `no such pool '<pool>'`.
    NoPool(String),
    /// The pool is there but cannot do I/O (suspended, unavailable).
    PoolUnavailable,
    /// The kernel module is missing or /dev/zfs is not there.
    NoModule,
    /// `dataset is busy`, `pool or dataset is busy`, `mountpoint or dataset
    /// is busy`, or a snapshot with a user hold (`it's being held`).
    Busy,
    /// `out of space` (ENOSPC or EDQUOT: a quota or the pool is full), or a
    /// quota set below what is used.
    NoSpace,
    /// `has dependent clones` (destroy of a filesystem), `snapshot is
    /// cloned` (destroy of a snapshot).
    DependentClones,
    /// `not a cloned filesystem` (promote of an independent dataset).
    NotAClone,
    PermissionDenied,
    Other,
}

/// Classifies a failed command's stderr (libzfs' wording in OpenZFS 2.x).
pub fn classify(stderr: &str) -> Failure {
    let s = stderr;
    if s.contains("The ZFS modules are not loaded")
        || s.contains("The ZFS modules cannot be auto-loaded")
        || s.contains("/dev/zfs and /proc/self/mounts are required")
    {
        return Failure::NoModule;
    }
    if let Some(pool) = between(s, "no such pool '", "'") {
        return Failure::NoPool(pool.to_string());
    }
    if s.contains("pool I/O is currently suspended") || s.contains("pool is unavailable") {
        return Failure::PoolUnavailable;
    }
    if s.contains("already exists") {
        return Failure::Exists;
    }
    if s.contains("dataset does not exist") {
        let name = s.lines().find_map(|l| {
            if l.contains("dataset does not exist") {
                between(l, "'", "'").map(str::to_string)
            } else {
                None
            }
        });
        return Failure::NoDataset(name);
    }
    if s.contains("could not find any snapshots to destroy") {
        return Failure::NoDataset(None);
    }
    if s.contains("has dependent clones") || s.contains("snapshot is cloned") {
        return Failure::DependentClones;
    }
    if s.contains("dataset is busy") || s.contains("target is busy") || s.contains("being held") {
        return Failure::Busy;
    }
    if s.contains("out of space")
        || s.contains("size is less than current used or reserved space")
        || s.contains("Disk quota exceeded")
    {
        return Failure::NoSpace;
    }
    if s.contains("not a cloned filesystem") {
        return Failure::NotAClone;
    }
    if s.contains("permission denied") || s.contains("Permission denied") {
        return Failure::PermissionDenied;
    }
    Failure::Other
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0"), Ok(Some(0)));
        assert_eq!(parse_number("-"), Ok(None));
        assert_eq!(parse_number("none"), Ok(None));
        assert_eq!(parse_number("18446744073709551615"), Ok(Some(u64::MAX)));
        assert!(parse_number("18446744073709551616").is_err());
        assert!(parse_number("10G").is_err());
        assert!(parse_number("").is_err());
        assert!(parse_number("-1").is_err());
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify("cannot open 'tank/voxnix': dataset does not exist\n"),
            Failure::NoDataset(Some("tank/voxnix".into()))
        );
        assert_eq!(
            classify("cannot create 'tank/voxnix': no such pool 'tank'\n"),
            Failure::NoPool("tank".into())
        );
        assert_eq!(
            classify("cannot create 'tank/a': dataset already exists\n"),
            Failure::Exists
        );
        assert_eq!(
            classify("cannot unmount '/x': pool or dataset is busy\n"),
            Failure::Busy
        );
        assert_eq!(classify("something else\n"), Failure::Other);
    }
}
