//! Container names, the rule every layer checks them by: they are systemd
//! unit instances (`container@NAME`), machine names, dataset components and
//! directory names, and the host side of a container's veth is `vb-<name>`.

/// Longest container name. The host side of the container's veth pair is
/// called `vb-<name>`, and Linux interface names have at most 15 characters.
pub const NAME_MAX_LEN: usize = 11;

/// Why a string is not a container name, in words a person can act on (what
/// follows "name ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// Checks a container name: 1 to [`NAME_MAX_LEN`] characters, only lowercase
/// ASCII letters, ASCII digits and `-`, starting and ending with a letter or
/// digit (`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, matched against the whole string).
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError(
            "must not be empty; use 1 to 11 lowercase letters, digits and '-', like \"dev\"".into(),
        ));
    }
    let len = name.chars().count();
    if len > NAME_MAX_LEN {
        return Err(NameError(format!(
            "is {len} characters long; at most {NAME_MAX_LEN} are allowed, because the \
                 host-side network interface 'vb-<name>' must fit Linux's 15-character limit"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (use lowercase)"
        } else {
            ""
        };
        return Err(NameError(format!(
            "contains {}, which is not allowed{hint}; use only lowercase letters a-z, \
                 digits 0-9 and '-'",
            describe_char(c)
        )));
    }
    if name.starts_with('-') {
        return Err(NameError(
            "must start with a letter or digit, not '-'".into(),
        ));
    }
    if name.ends_with('-') {
        return Err(NameError("must end with a letter or digit, not '-'".into()));
    }
    Ok(())
}

/// `'x'`, or `'\n' (U+000A)` / `'٣' (U+0663)` for anything but printable ASCII.
fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("'{}' (U+{:04X})", c.escape_debug(), u32::from(c))
    }
}
