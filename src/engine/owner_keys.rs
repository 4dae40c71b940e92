//! Each owner's SSH public keys, registered once (`voxnix keys add`) and
//! handed to every container of theirs with the `ssh` module at its start,
//! with its personal settings (personal.rs): never through the Nix store.
//! One root-only JSON file per owner under `<state_dir>/keys/`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, PublicKey, public::KeyData};

use crate::model::Owner;

/// The most keys one owner may register.
pub const MAX_KEYS: usize = 32;
/// The longest key line accepted (a 16384-bit RSA key is about 2.8 KB).
const MAX_LINE: usize = 8192;
/// The longest comment kept.
const MAX_COMMENT: usize = 100;

/// One registered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerKey {
    /// `ALGORITHM BASE64 [COMMENT]`, as voxnix wrote it again from the
    /// parsed key (never the text as sent).
    pub line: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub algorithm: String,
    pub comment: String,
    pub added_at: u64,
}

/// Why a key line was refused; the message says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Parses one OpenSSH public key line (what `~/.ssh/id_ed25519.pub` holds).
/// Only the key types OpenSSH's sshd accepts by default, and RSA of at least
/// 2048 bits; no authorized_keys options (voxnix writes the file).
pub fn parse_public_key(text: &str) -> Result<OwnerKey, KeyError> {
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(KeyError(
            "that is a PRIVATE key: never send it anywhere (make a new one if it left your \
             machine); send the public key, the one-line contents of the .pub file \
             (e.g. ~/.ssh/id_ed25519.pub)"
                .into(),
        ));
    }
    if text.is_empty() {
        return Err(KeyError(
            "key: give an OpenSSH public key, e.g. the contents of ~/.ssh/id_ed25519.pub".into(),
        ));
    }
    if text.len() > MAX_LINE || text.lines().count() > 1 {
        return Err(KeyError(
            "key: give one public key on one line (the contents of a .pub file)".into(),
        ));
    }
    let mut key = PublicKey::from_openssh(text).map_err(|_| {
        KeyError(
            "key: this is not an OpenSSH public key; it looks like 'ssh-ed25519 AAAAC3... you@laptop' \
             (the contents of ~/.ssh/id_ed25519.pub; make one with ssh-keygen -t ed25519)"
                .into(),
        )
    })?;
    match key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa.n.as_positive_bytes().map_or(0, |b| b.len() * 8);
            if bits < 2048 {
                return Err(KeyError(format!(
                    "key: this RSA key has {bits} bits; sshd refuses fewer than 2048 (make an \
                     ed25519 key: ssh-keygen -t ed25519)"
                )));
            }
        }
        _ => {
            return Err(KeyError(format!(
                "key: '{}' keys are not accepted; use ed25519 (ssh-keygen -t ed25519), ecdsa or RSA",
                key.algorithm()
            )));
        }
    }
    // The comment is the sender's text: kept short and printable, as it
    // ends up in the container's authorized_keys and in listings.
    let comment: String = key
        .comment()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_COMMENT)
        .collect();
    key.set_comment(comment.trim());
    let line = key
        .to_openssh()
        .map_err(|e| KeyError(format!("key: cannot write it again ({e})")))?;
    Ok(OwnerKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().to_string(),
        comment: key.comment().to_string(),
        line,
        added_at: super::records::now_secs(),
    })
}

/// A container's host key from what its own `/etc/ssh/*.pub` files say
/// (the container's root writes them, so: its text, parsed, and written
/// again without the comment). The strongest kind found: ed25519, then
/// ecdsa, then RSA; None when no line is a host key.
pub fn pick_host_key(text: &str) -> Option<String> {
    let mut best: Option<(u8, String)> = None;
    for line in text.lines().take(64) {
        let Ok(mut key) = PublicKey::from_openssh(line.trim()) else {
            continue;
        };
        let rank = match key.key_data() {
            KeyData::Ed25519(_) => 3,
            KeyData::Ecdsa(_) => 2,
            KeyData::Rsa(rsa) if rsa.n.as_positive_bytes().map_or(0, <[u8]>::len) >= 256 => 1,
            _ => continue,
        };
        key.set_comment("");
        let Ok(line) = key.to_openssh() else { continue };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, line.trim().to_string()));
        }
    }
    best.map(|(_, l)| l)
}

/// The keys of every owner, on disk.
#[derive(Debug)]
pub struct OwnerKeys {
    dir: PathBuf,
    /// One writer at a time (read-modify-write of an owner's file).
    writing: Mutex<()>,
}

impl OwnerKeys {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("keys"),
            writing: Mutex::new(()),
        }
    }

    fn path(&self, owner: &Owner) -> PathBuf {
        // Owners are `kind:id` with id in [A-Za-z0-9._@-]: a safe file name.
        self.dir.join(format!("{}.json", owner.as_str()))
    }

    pub fn list(&self, owner: &Owner) -> io::Result<Vec<OwnerKey>> {
        match std::fs::read(self.path(owner)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn store(&self, owner: &Owner, keys: &[OwnerKey]) -> io::Result<()> {
        if keys.is_empty() {
            return crate::atomic_file::remove(&self.path(owner));
        }
        let text = serde_json::to_vec_pretty(keys).map_err(io::Error::other)?;
        crate::atomic_file::write_root_only(&self.path(owner), &text)
    }

    /// Adds a key; `Ok(false)` when the owner already had it.
    pub fn add(&self, owner: &Owner, key: OwnerKey) -> Result<bool, AddError> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = self.list(owner).map_err(AddError::Io)?;
        if keys.iter().any(|k| k.fingerprint == key.fingerprint) {
            return Ok(false);
        }
        if keys.len() >= MAX_KEYS {
            return Err(AddError::Full);
        }
        keys.push(key);
        self.store(owner, &keys).map_err(AddError::Io)?;
        Ok(true)
    }

    /// Removes the keys `which` names: a fingerprint (`SHA256:...`), a
    /// comment, or a position in the list (1, 2 ...). Returns what went.
    pub fn remove(&self, owner: &Owner, which: &str) -> io::Result<Vec<OwnerKey>> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let keys = self.list(owner)?;
        let which = which.trim();
        let position = which.parse::<usize>().ok();
        let (gone, kept): (Vec<_>, Vec<_>) = keys.into_iter().enumerate().partition(|(i, k)| {
            position == Some(i + 1)
                || k.fingerprint == which
                || k.fingerprint.strip_prefix("SHA256:") == Some(which)
                || (!k.comment.is_empty() && k.comment == which)
        });
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let kept: Vec<OwnerKey> = kept.into_iter().map(|(_, k)| k).collect();
        self.store(owner, &kept)?;
        Ok(gone.into_iter().map(|(_, k)| k).collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("you already have {MAX_KEYS} keys; remove one first (voxnix keys remove)")]
    Full,
    #[error("{0}")]
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEl/xSbDmmYgdi6sZL5tPqtujzik8PIStK1CJg2jDNX/ ada@laptop";

    #[test]
    fn a_real_key_is_taken_and_written_again() {
        let k = parse_public_key(&format!("  {ED}\n")).unwrap();
        assert_eq!(k.line, ED);
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "ada@laptop");
        // As `ssh-keygen -lf` prints it for this key.
        assert_eq!(
            k.fingerprint,
            "SHA256:YDP9uZ0inNEXRkZHoU5PJYfhQBilnPIgd2pAYU9oGNg"
        );
    }

    #[test]
    fn what_is_not_a_public_key_is_refused_with_advice() {
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        let e = parse_public_key(private).unwrap_err();
        assert!(e.0.contains("PRIVATE key"), "{e}");
        assert!(!e.0.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{e}");
        for bad in [
            "",
            "hello",
            "ssh-ed25519 notbase64!!",
            // A valid blob under the wrong name.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEl/xSbDmmYgdi6sZL5tPqtujzik8PIStK1CJg2jDNX/",
            // Options in front (authorized_keys syntax).
            "command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEl/xSbDmmYgdi6sZL5tPqtujzik8PIStK1CJg2jDNX/",
        ] {
            let e = parse_public_key(bad).unwrap_err();
            assert!(e.0.starts_with("key:"), "{bad}: {e}");
        }
        let two = format!("{ED}\n{ED}");
        assert!(parse_public_key(&two).unwrap_err().0.contains("one line"));
    }

    #[test]
    fn the_host_key_is_the_strongest_real_one_without_its_comment() {
        let text =
            format!("garbage\nssh-ed25519 AAAA-not-base64\n{ED}\nHost evil\n  ProxyCommand sh\n");
        let k = pick_host_key(&text).unwrap();
        assert_eq!(k, ED.trim_end_matches(" ada@laptop"));
        assert_eq!(pick_host_key("ProxyCommand x\n\n"), None);
    }

    #[test]
    fn a_comment_cannot_carry_control_characters() {
        let k = parse_public_key(&format!("{ED}\u{7}\tx")).unwrap();
        assert!(
            k.line.chars().all(|c| c.is_ascii_graphic() || c == ' '),
            "{:?}",
            k.line
        );
    }

    #[test]
    fn keys_are_per_owner_root_only_and_removable_by_any_name() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let keys = OwnerKeys::new(state.path());
        let ada = Owner::parse("telegram:1").unwrap();
        let bob = Owner::parse("telegram:2").unwrap();
        let k = parse_public_key(ED).unwrap();
        assert!(keys.add(&ada, k.clone()).unwrap());
        assert!(!keys.add(&ada, k.clone()).unwrap(), "the same key twice");
        assert_eq!(keys.list(&ada).unwrap().len(), 1);
        assert!(keys.list(&bob).unwrap().is_empty());
        let file = state.path().join("keys/telegram:1.json");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(keys.remove(&ada, "nothing").unwrap().is_empty());
        assert!(keys.remove(&bob, "1").unwrap().is_empty(), "bob has none");
        assert_eq!(keys.remove(&ada, "ada@laptop").unwrap().len(), 1);
        assert!(!file.exists(), "no keys, no file");
        keys.add(&ada, k.clone()).unwrap();
        assert_eq!(keys.remove(&ada, &k.fingerprint).unwrap().len(), 1);
        keys.add(&ada, k).unwrap();
        assert_eq!(keys.remove(&ada, "1").unwrap().len(), 1);
    }
}
