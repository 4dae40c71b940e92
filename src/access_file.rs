//! Who may use the appliance (the Telegram allowlists, the admin owners)
//! names people. The configuration file is in the Nix store on NixOS, which
//! every local user and every container can read, so these lists can live in
//! a separate file the configuration points at (`access_file`, e.g. an
//! agenix secret): readable by root and the front ends' group, by no one
//! else. Its lists are added to the configuration's own.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What an access file may hold: the lists that name people, nothing else.
const TOP_KEYS: &[&str] = &["admin_owners"];
const TELEGRAM_KEYS: &[&str] = &["allowed_chat_ids", "admin_chat_ids"];

/// Parses a configuration's text and, when it names an `access_file`, adds
/// that file's lists to it. Errors say what to fix.
pub fn merged(text: &str) -> Result<toml::Table, String> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let Some(path) = table.get("access_file") else {
        return Ok(table);
    };
    let path = path
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or("access_file must be an absolute path")?
        .to_string();
    let access = read(Path::new(&path))?;
    merge(&mut table, access, &path)?;
    Ok(table)
}

fn read(path: &Path) -> Result<toml::Table, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the access_file {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the access_file {}: {e}", path.display()))?;
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "the access_file {} can be read by every local user; make it readable by root and \
             the front ends' group only (chmod o-rwx)",
            path.display()
        ));
    }
    // Who may use the appliance (and who is an admin) must be root's word:
    // a file a front end's user could change would let it promote itself.
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the access_file {} must be owned by root and writable by root only \
             (chown root, chmod go-w)",
            path.display()
        ));
    }
    let text = std::io::read_to_string(file)
        .map_err(|e| format!("cannot read the access_file {}: {e}", path.display()))?;
    text.parse()
        .map_err(|e: toml::de::Error| format!("access_file {}: {}", path.display(), e.message()))
}

fn merge(into: &mut toml::Table, access: toml::Table, path: &str) -> Result<(), String> {
    for (key, value) in access {
        if key == "telegram" {
            let toml::Value::Table(t) = value else {
                return Err(format!("access_file {path}: [telegram] must be a table"));
            };
            let section = into
                .entry("telegram")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section) = section else {
                return Err("[telegram] must be a table".into());
            };
            for (k, v) in t {
                if !TELEGRAM_KEYS.contains(&k.as_str()) {
                    return Err(unknown(path, &format!("telegram.{k}")));
                }
                append(section, &k, v, path)?;
            }
        } else if TOP_KEYS.contains(&key.as_str()) {
            append(into, &key, value, path)?;
        } else {
            return Err(unknown(path, &key));
        }
    }
    Ok(())
}

fn unknown(path: &str, key: &str) -> String {
    format!(
        "access_file {path}: '{key}' cannot be set there; it holds only admin_owners and \
         [telegram] allowed_chat_ids and admin_chat_ids"
    )
}

fn append(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
    path: &str,
) -> Result<(), String> {
    let toml::Value::Array(items) = value else {
        return Err(format!("access_file {path}: '{key}' must be a list"));
    };
    match table
        .entry(key)
        .or_insert_with(|| toml::Value::Array(Vec::new()))
    {
        toml::Value::Array(list) => {
            list.extend(items);
            Ok(())
        }
        _ => Err(format!("'{key}' must be a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn the_lists_are_added_to_the_configurations() {
        let f = file(
            "admin_owners = [\"unix:1000\"]\n[telegram]\nallowed_chat_ids = [5, 6]\nadmin_chat_ids = [7]\n",
            0o640,
        );
        let text = format!(
            "access_file = \"{}\"\n[telegram]\nallowed_chat_ids = [1]\n",
            f.path().display()
        );
        let t = merged(&text).unwrap();
        assert_eq!(
            t["telegram"]["allowed_chat_ids"].as_array().unwrap().len(),
            3
        );
        assert_eq!(t["telegram"]["admin_chat_ids"].as_array().unwrap().len(), 1);
        assert_eq!(t["admin_owners"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_daemon_and_the_bot_both_see_the_lists() {
        let f = file(
            "[telegram]\nallowed_chat_ids = [5]\nadmin_chat_ids = [7]\n",
            0o440,
        );
        let text = format!("access_file = \"{}\"\n", f.path().display());
        let daemon = crate::config::Config::parse(&text).unwrap();
        assert!(
            daemon
                .admins()
                .unwrap()
                .contains(&crate::model::Owner::parse("telegram:7").unwrap())
        );
        let bot = crate::frontends::chat::config::ChatConfig::parse(&text).unwrap();
        assert!(bot.telegram.allows_sender(5, 5) && bot.telegram.is_admin(7));
        assert!(!bot.telegram.allows_sender(6, 6));
        // Alone, the configuration has none of them.
        let alone = crate::config::Config::parse_alone(&text).unwrap();
        assert!(alone.admins().unwrap().is_empty());
    }

    #[test]
    fn a_world_readable_file_or_other_keys_are_refused() {
        let f = file("[telegram]\nallowed_chat_ids = [5]\n", 0o644);
        let e = merged(&format!("access_file = \"{}\"", f.path().display())).unwrap_err();
        assert!(e.contains("can be read by every local user"), "{e}");
        let f = file("[telegram]\nadmin_chat_ids = [5]\n", 0o660);
        let e = merged(&format!("access_file = \"{}\"", f.path().display())).unwrap_err();
        assert!(e.contains("writable by root only"), "{e}");
        let f = file("bridge = \"x\"\n", 0o600);
        let e = merged(&format!("access_file = \"{}\"", f.path().display())).unwrap_err();
        assert!(e.contains("'bridge' cannot be set there"), "{e}");
        let e = merged("access_file = \"/nonexistent/voxnix-access\"").unwrap_err();
        assert!(
            e.contains("cannot read the access_file /nonexistent/voxnix-access"),
            "{e}"
        );
        let e = merged("access_file = \"relative\"").unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
    }
}
