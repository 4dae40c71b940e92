//! Container spec parsing and validation.
//!
//! A client (CLI, chat front end) sends a spec as JSON. [`parse_spec`] checks it
//! completely before anything touches the host, and turns it into a
//! [`ContainerSpec`]. Every rejection is a [`SpecError`] naming the field and
//! the rule, in words a person can act on.
//!
//! # Client JSON
//!
//! ```json
//! {"name":"dev","modules":["git","fish"],"workspace":true,
//!  "memory_max":"2G","cpu_weight":100,"tasks_max":512,
//!  "settings":{"ssh":{"authorized_keys":["ssh-ed25519 AAAA x"]}}}
//! ```
//!
//! | field | required | accepted |
//! | --- | --- | --- |
//! | `name` | yes | 1 to [`NAME_MAX_LEN`] characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit |
//! | `modules` | no (default `[]`) | list of known module names, no duplicates, order kept |
//! | `workspace` | no (default `true`) | `true` or `false` |
//! | `memory_max` | no | bytes as an integer, or a size string (see [`parse_size`]); 32M to 16T |
//! | `cpu_weight` | no | integer 1 to 10000 (systemd `CPUWeight`) |
//! | `cpu_quota` | no | `"150%"`, or an integer percent; 1% to 102400% (one CPU is 100%) |
//! | `tasks_max` | no | integer 1 to 4194304 |
//! | `settings` | no | object: known module name → object (checked in depth by Nix later) |
//!
//! `cpu_weight` and `cpu_quota` cannot both be given. An optional field given as
//! `null` counts as not given. Any other field is rejected, and so is a key that
//! appears twice in one JSON object (at any depth). Integers may also be written
//! as whole JSON floats (`100.0`, `1e9`); fractions are rejected.
//!
//! Its parts: this file holds the spec's types and rules; [`size`] reads and
//! writes sizes (`2G`), `strict_json` reads JSON refusing duplicate keys.
//!
//! The owner is never part of a client spec (the daemon decides it), nor of
//! what Nix builds ([`ContainerSpec::to_build_json`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::model::container_name;
pub use crate::model::container_name::NAME_MAX_LEN;

mod size;
mod strict_json;

use size::{MIB, TIB, digit_run, digits_value};
pub use size::{format_size, parse_size};
use strict_json::parse_json;

/// Largest accepted spec, in bytes of JSON text.
pub const SPEC_MAX_BYTES: usize = 64 * 1024;

/// The fields a client spec may contain, in the order they are checked.
const ALLOWED_FIELDS: [&str; 8] = [
    "name",
    "modules",
    "workspace",
    "memory_max",
    "cpu_weight",
    "cpu_quota",
    "tasks_max",
    "settings",
];

const MEMORY_MIN: u64 = 32 * MIB;
const MEMORY_MAX: u64 = 16 * TIB;
const CPU_WEIGHT_MAX: u64 = 10_000;
const CPU_QUOTA_MAX: u64 = 102_400;
const TASKS_MAX_MAX: u64 = 4_194_304;

/// A validated spec (the owner is never part of it: the daemon decides the owner).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// In the order given, no duplicates.
    pub modules: Vec<String>,
    /// Default true.
    pub workspace: bool,
    pub resources: Resources,
    /// Per-module settings: module name -> JSON object (checked in depth by Nix later).
    pub settings: BTreeMap<String, Map<String, Value>>,
}

/// Resource limits, applied by the host (systemd), not inside the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Bytes (systemd `MemoryMax`), 32 MiB to 16 TiB.
    pub memory_max: Option<u64>,
    /// systemd `CPUWeight`, 1..=10000.
    pub cpu_weight: Option<u64>,
    /// 1..=102400 (percent of one CPU), maps to `CPUQuotaPerSecUSec`.
    pub cpu_quota_percent: Option<u32>,
    /// systemd `TasksMax`, 1..=4194304.
    pub tasks_max: Option<u64>,
}

/// Why a spec was rejected: the field (`name`, `modules[2]`, `settings.ssh`,
/// `spec` for the document as a whole) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct SpecError {
    pub field: String,
    pub rule: String,
}

fn err(field: impl Into<String>, rule: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Checks a container name (the rule is [`crate::model::container_name`]'s).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    container_name::validate(name).map_err(|e| err("name", e.0))
}

/// Parse and validate client JSON against the modules the daemon knows.
///
/// The checks run in a fixed order (size, JSON syntax and duplicate keys,
/// object, unknown fields, then the fields in the order of the table in the
/// module documentation), and the first failure is returned, so the same
/// input always gives the same error.
pub fn parse_spec(json: &str, known_modules: &[String]) -> Result<ContainerSpec, SpecError> {
    if json.len() > SPEC_MAX_BYTES {
        return Err(err(
            "spec",
            format!(
                "is {} bytes; the limit is {SPEC_MAX_BYTES} bytes (64 KiB)",
                json.len()
            ),
        ));
    }
    let value = parse_json(json)?;
    let Value::Object(obj) = value else {
        return Err(err(
            "spec",
            format!(
                "must be a JSON object like {{\"name\":\"dev\"}}, got {}",
                kind(&value)
            ),
        ));
    };

    // Unknown fields first: a misspelt "nmae" is better reported as itself
    // than as a missing "name". Sorted, so the report does not depend on the
    // map's iteration order.
    let mut unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !ALLOWED_FIELDS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        let allowed = ALLOWED_FIELDS.join(", ");
        let rule = match key.as_str() {
            "owner" => format!(
                "unknown field; the owner is decided by the daemon, not by the spec; allowed: {allowed}"
            ),
            "resources" => format!(
                "unknown field; give memory_max, cpu_weight, cpu_quota and tasks_max at the top \
                 level; allowed: {allowed}"
            ),
            _ => format!("unknown field; allowed: {allowed}"),
        };
        return Err(err(field_name(key), rule));
    }

    let given = |key: &str| obj.get(key).filter(|v| !v.is_null());
    let known = KnownModules::new(known_modules);

    let name = match given("name") {
        None => {
            return Err(err(
                "name",
                "is required: give the container a name like \"dev\"",
            ));
        }
        Some(Value::String(s)) => {
            validate_name(s)?;
            s.clone()
        }
        Some(other) => {
            return Err(err(
                "name",
                format!("expected a string, got {}", kind(other)),
            ));
        }
    };

    let modules = match given("modules") {
        None => Vec::new(),
        Some(v) => check_modules(v, &known)?,
    };

    let workspace = match given("workspace") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(err(
                "workspace",
                format!("expected true or false, got {}", kind(other)),
            ));
        }
    };

    let memory_max = given("memory_max").map(check_memory_max).transpose()?;

    let cpu_weight = given("cpu_weight")
        .map(|v| {
            int_in_range(
                "cpu_weight",
                v,
                1,
                CPU_WEIGHT_MAX,
                "between 1 and 10000 (systemd CPUWeight; the default is 100)",
            )
        })
        .transpose()?;

    let cpu_quota_percent = match given("cpu_quota") {
        None => None,
        Some(_) if cpu_weight.is_some() => {
            return Err(err(
                "cpu_quota",
                "cannot be combined with cpu_weight; give one or the other",
            ));
        }
        Some(v) => Some(check_cpu_quota(v)?),
    };

    let tasks_max = given("tasks_max")
        .map(|v| {
            int_in_range(
                "tasks_max",
                v,
                1,
                TASKS_MAX_MAX,
                "between 1 and 4194304 (leave it out for no limit)",
            )
        })
        .transpose()?;

    let settings = match given("settings") {
        None => BTreeMap::new(),
        Some(v) => check_settings(v, &known)?,
    };

    Ok(ContainerSpec {
        name,
        modules,
        workspace,
        resources: Resources {
            memory_max,
            cpu_weight,
            cpu_quota_percent,
            tasks_max,
        },
        settings,
    })
}

impl ContainerSpec {
    /// The JSON handed to Nix:
    /// `{"name","modules","workspace","settings","resources":{...}}`.
    /// Never the owner, and never a setting `is_personal(module, setting)`
    /// calls personal: what Nix builds lands in the world-readable store.
    /// `resources` is always present; limits that are not set are left out of
    /// it. Its keys are `memory_max` (bytes), `cpu_weight`,
    /// `cpu_quota_percent` and `tasks_max`.
    pub fn to_build_json(&self, is_personal: impl Fn(&str, &str) -> bool) -> Value {
        let mut resources = Map::new();
        let r = &self.resources;
        if let Some(v) = r.memory_max {
            resources.insert("memory_max".into(), Value::from(v));
        }
        if let Some(v) = r.cpu_weight {
            resources.insert("cpu_weight".into(), Value::from(v));
        }
        if let Some(v) = r.cpu_quota_percent {
            resources.insert("cpu_quota_percent".into(), Value::from(v));
        }
        if let Some(v) = r.tasks_max {
            resources.insert("tasks_max".into(), Value::from(v));
        }

        let settings: Map<String, Value> = self
            .settings
            .iter()
            .map(|(m, values)| {
                let kept: Map<String, Value> = values
                    .iter()
                    .filter(|(k, _)| !is_personal(m, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (m.clone(), Value::Object(kept))
            })
            .collect();

        let mut out = Map::new();
        out.insert("name".into(), Value::from(self.name.as_str()));
        out.insert(
            "modules".into(),
            Value::Array(
                self.modules
                    .iter()
                    .map(|m| Value::from(m.as_str()))
                    .collect(),
            ),
        );
        out.insert("workspace".into(), Value::Bool(self.workspace));
        out.insert("settings".into(), Value::Object(settings));
        out.insert("resources".into(), Value::Object(resources));
        Value::Object(out)
    }

    /// The personal settings of the selected modules, `{module: {setting:
    /// value}}`: what the container is handed at start instead of having it
    /// built in. Empty when there are none.
    pub fn personal_settings(
        &self,
        is_personal: impl Fn(&str, &str) -> bool,
    ) -> Map<String, Value> {
        let selected =
            |m: &str| self.modules.iter().any(|x| x == m) || (m == "workspace" && self.workspace);
        self.settings
            .iter()
            .filter(|(m, _)| selected(m))
            .filter_map(|(m, values)| {
                let personal: Map<String, Value> = values
                    .iter()
                    .filter(|(k, _)| is_personal(m, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (!personal.is_empty()).then(|| (m.clone(), Value::Object(personal)))
            })
            .collect()
    }

    /// Back to the form a client sends (what [`parse_spec`] reads), so a
    /// stored spec can be changed and validated again (update). Every field
    /// of the spec is written: `parse_spec(to_client_json())` gives the spec
    /// back.
    pub fn to_client_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), Value::from(self.name.as_str()));
        out.insert(
            "modules".into(),
            self.modules
                .iter()
                .map(|m| Value::from(m.as_str()))
                .collect(),
        );
        out.insert("workspace".into(), Value::Bool(self.workspace));
        let r = &self.resources;
        if let Some(v) = r.memory_max {
            out.insert("memory_max".into(), Value::from(v));
        }
        if let Some(v) = r.cpu_weight {
            out.insert("cpu_weight".into(), Value::from(v));
        }
        if let Some(v) = r.cpu_quota_percent {
            out.insert("cpu_quota".into(), Value::from(format!("{v}%")));
        }
        if let Some(v) = r.tasks_max {
            out.insert("tasks_max".into(), Value::from(v));
        }
        if !self.settings.is_empty() {
            let settings: Map<String, Value> = self
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                .collect();
            out.insert("settings".into(), Value::Object(settings));
        }
        Value::Object(out)
    }

    /// CPUQuotaPerSecUSec value for systemd (percent * 10_000), if any.
    pub fn cpu_quota_per_sec_usec(&self) -> Option<u64> {
        self.resources
            .cpu_quota_percent
            .map(|p| u64::from(p) * 10_000)
    }
}

// ---------------------------------------------------------------------------
// Field checks

/// The modules the daemon knows, sorted and deduplicated so that messages
/// listing them are deterministic.
struct KnownModules<'a> {
    names: BTreeSet<&'a str>,
}

impl<'a> KnownModules<'a> {
    fn new(known: &'a [String]) -> Self {
        Self {
            names: known.iter().map(String::as_str).collect(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn unknown(&self, name: &str) -> String {
        if self.names.is_empty() {
            format!("unknown module '{}'; no modules are available", show(name))
        } else {
            let available: Vec<&str> = self.names.iter().copied().collect();
            format!(
                "unknown module '{}'; available: {}",
                show(name),
                available.join(", ")
            )
        }
    }
}

fn check_modules(value: &Value, known: &KnownModules<'_>) -> Result<Vec<String>, SpecError> {
    let Value::Array(items) = value else {
        return Err(err(
            "modules",
            format!(
                "expected a list of module names like [\"git\"], got {}",
                kind(value)
            ),
        ));
    };
    let mut modules: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("modules[{i}]");
        let Value::String(m) = item else {
            return Err(err(
                field,
                format!("expected a module name (a string), got {}", kind(item)),
            ));
        };
        if !known.contains(m) {
            return Err(err(field, known.unknown(m)));
        }
        if let Some(first) = modules.iter().position(|x| x == m) {
            return Err(err(
                field,
                format!(
                    "duplicate module '{}' (already at modules[{first}])",
                    show(m)
                ),
            ));
        }
        modules.push(m.clone());
    }
    Ok(modules)
}

fn check_memory_max(value: &Value) -> Result<u64, SpecError> {
    const FIELD: &str = "memory_max";
    const RANGE: &str = "between 32M and 16T (33554432 to 17592186044416 bytes)";
    match value {
        Value::String(s) => {
            let bytes = parse_size(s).map_err(|reason| {
                err(
                    FIELD,
                    format!("{reason}; give bytes or a size like \"2G\", between 32M and 16T"),
                )
            })?;
            if (MEMORY_MIN..=MEMORY_MAX).contains(&bytes) {
                Ok(bytes)
            } else {
                Err(err(
                    FIELD,
                    format!("must be {RANGE}, got \"{}\" ({bytes} bytes)", show(s)),
                ))
            }
        }
        Value::Number(_) => int_in_range(FIELD, value, MEMORY_MIN, MEMORY_MAX, RANGE),
        other => Err(err(
            FIELD,
            format!(
                "expected a byte count or a size string like \"2G\", got {}",
                kind(other)
            ),
        )),
    }
}

fn check_cpu_quota(value: &Value) -> Result<u32, SpecError> {
    const FIELD: &str = "cpu_quota";
    const RANGE: &str = "between 1% and 102400% (100% is one whole CPU)";
    let percent = match value {
        Value::String(s) => {
            let Some(digits) = s.strip_suffix('%') else {
                return Err(err(
                    FIELD,
                    format!("expected a percentage like \"150%\", got \"{}\"", show(s)),
                ));
            };
            let end = digit_run(digits);
            if digits.is_empty() || end != digits.len() {
                let rule = if digits.starts_with('-') {
                    format!("must be {RANGE}, got \"{}\"", show(s))
                } else if end > 0 && digits[end..].starts_with('.') {
                    format!("must be a whole percentage {RANGE}, got \"{}\"", show(s))
                } else {
                    format!("expected a percentage like \"150%\", got \"{}\"", show(s))
                };
                return Err(err(FIELD, rule));
            }
            let significant = digits.trim_start_matches('0');
            let parsed = if significant.len() > 7 {
                None
            } else {
                digits_value(significant)
            };
            match parsed.and_then(|p| u64::try_from(p).ok()) {
                Some(p) if (1..=CPU_QUOTA_MAX).contains(&p) => p,
                _ => {
                    return Err(err(FIELD, format!("must be {RANGE}, got \"{}\"", show(s))));
                }
            }
        }
        Value::Number(_) => int_in_range(FIELD, value, 1, CPU_QUOTA_MAX, RANGE)?,
        other => {
            return Err(err(
                FIELD,
                format!(
                    "expected a percentage like \"150%\" (or a whole number of percent), got {}",
                    kind(other)
                ),
            ));
        }
    };
    u32::try_from(percent).map_err(|_| err(FIELD, format!("must be {RANGE}")))
}

fn check_settings(
    value: &Value,
    known: &KnownModules<'_>,
) -> Result<BTreeMap<String, Map<String, Value>>, SpecError> {
    let Value::Object(given) = value else {
        return Err(err(
            "settings",
            format!(
                "expected an object of module name to settings, like {{\"ssh\":{{...}}}}, got {}",
                kind(value)
            ),
        ));
    };
    let mut keys: Vec<&String> = given.keys().collect();
    keys.sort();
    let mut settings = BTreeMap::new();
    for module in keys {
        let field = format!("settings.{}", field_name(module));
        if !known.contains(module) {
            return Err(err(field, known.unknown(module)));
        }
        match given.get(module) {
            Some(Value::Object(s)) => {
                settings.insert(module.clone(), s.clone());
            }
            Some(other) => {
                return Err(err(
                    field,
                    format!(
                        "expected an object of settings for module '{}', got {}",
                        show(module),
                        kind(other)
                    ),
                ));
            }
            None => {}
        }
    }
    Ok(settings)
}

/// A whole number in `min..=max`. `range` completes "must be ...".
fn int_in_range(
    field: &str,
    value: &Value,
    min: u64,
    max: u64,
    range: &str,
) -> Result<u64, SpecError> {
    let Value::Number(n) = value else {
        return Err(err(
            field,
            format!("expected a whole number {range}, got {}", kind(value)),
        ));
    };
    let out_of_range = || err(field, format!("must be {range}, got {n}"));
    if let Some(u) = n.as_u64() {
        return if (min..=max).contains(&u) {
            Ok(u)
        } else {
            Err(out_of_range())
        };
    }
    if n.as_i64().is_some() {
        // Only negative numbers are i64 but not u64.
        return Err(out_of_range());
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            // All limits are far below 2^53, so in-range whole floats convert exactly.
            if f >= min as f64 && f <= max as f64 {
                Ok(f as u64)
            } else {
                Err(out_of_range())
            }
        }
        _ => Err(err(
            field,
            format!("must be a whole number {range}, got {n}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// "a string", "an object", ... for "expected X, got Y" messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Client text made safe to quote in a message: escaped (no raw control
/// characters or newlines) and cut at 40 characters.
fn show(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// A client-chosen key as a field name: like [`show`], but an empty key is
/// written `""` so that the field is never blank.
fn field_name(key: &str) -> String {
    if key.is_empty() {
        "\"\"".into()
    } else {
        show(key)
    }
}

#[cfg(test)]
mod tests {
    use super::size::GIB;
    use super::*;
    use serde_json::json;

    fn known() -> Vec<String> {
        ["code-server", "fish", "git", "ssh", "workspace"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn parse(v: Value) -> Result<ContainerSpec, SpecError> {
        parse_spec(&v.to_string(), &known())
    }

    /// Parses `{"name":"dev", <extra>}` and returns the error.
    fn reject(extra: Value) -> SpecError {
        let mut obj = json!({"name": "dev"});
        if let (Value::Object(o), Value::Object(e)) = (&mut obj, extra) {
            o.extend(e);
        }
        match parse(obj.clone()) {
            Ok(spec) => panic!("accepted {obj}: {spec:?}"),
            Err(e) => e,
        }
    }

    fn accept(v: Value) -> ContainerSpec {
        match parse(v.clone()) {
            Ok(spec) => spec,
            Err(e) => panic!("rejected {v}: {e}"),
        }
    }

    fn name_err(name: &str) -> SpecError {
        let e = validate_name(name).expect_err(name);
        assert_eq!(e.field, "name");
        e
    }

    // --- name ----------------------------------------------------------

    #[test]
    fn names_accepted() {
        for n in [
            "a",
            "dev",
            "0",
            "123",
            "a-b",
            "a--b",
            "a1-2b",
            "abcdefghijk",
            "12345678901",
            "x-y-z-0-9-q",
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
            assert_eq!(accept(json!({ "name": n })).name, n);
        }
    }

    #[test]
    fn name_empty_has_its_own_message() {
        let e = name_err("");
        assert!(e.rule.contains("must not be empty"), "{e}");
        assert_eq!(reject(json!({"name": ""})), e);
    }

    #[test]
    fn name_length_limit_explained() {
        assert_eq!(validate_name("abcdefghijk"), Ok(()));
        let e = name_err("abcdefghijkl");
        assert!(e.rule.contains("is 12 characters long"), "{e}");
        assert!(e.rule.contains("at most 11"), "{e}");
        assert!(e.rule.contains("vb-<name>"), "{e}");
        assert!(e.rule.contains("15"), "{e}");
        let long = "x".repeat(200);
        assert!(name_err(&long).rule.contains("is 200 characters long"));
        // Too long wins over bad characters.
        assert!(
            name_err(&"A-".repeat(100))
                .rule
                .contains("is 200 characters long")
        );
        assert!(
            name_err(&"٣".repeat(12))
                .rule
                .contains("is 12 characters long")
        );
    }

    #[test]
    fn name_bad_characters() {
        for (n, shown) in [
            ("dev\n", "'\\n' (U+000A)"),
            ("\ndev", "'\\n' (U+000A)"),
            ("de v", "' ' (U+0020)"),
            ("dev_1", "'_'"),
            ("dev.x", "'.'"),
            ("٣", "'٣' (U+0663)"),
            ("dev٣", "'٣' (U+0663)"),
            ("é", "'é' (U+00E9)"),
            ("dev\0", "'\\0' (U+0000)"),
        ] {
            let e = name_err(n);
            assert!(e.rule.contains(shown), "{n:?}: {e}");
            assert!(e.rule.contains("a-z"), "{n:?}: {e}");
        }
    }

    #[test]
    fn name_uppercase_suggests_lowercase() {
        for n in ["DEV", "Dev", "deV"] {
            let e = name_err(n);
            assert!(e.rule.contains("use lowercase"), "{e}");
        }
    }

    #[test]
    fn name_hyphen_at_the_ends() {
        assert!(
            name_err("a-")
                .rule
                .contains("must end with a letter or digit")
        );
        assert!(
            name_err("-a")
                .rule
                .contains("must start with a letter or digit")
        );
        assert!(name_err("-").rule.contains("must start"));
        assert!(name_err("--").rule.contains("must start"));
        assert_eq!(validate_name("a--b"), Ok(()));
    }

    #[test]
    fn name_required_and_typed() {
        let e = parse(json!({})).expect_err("no name");
        assert_eq!(e.field, "name");
        assert!(e.rule.contains("is required"), "{e}");
        let e = parse(json!({"name": null})).expect_err("null name");
        assert!(e.rule.contains("is required"), "{e}");
        let e = parse(json!({"name": 5})).expect_err("number name");
        assert_eq!(e, err("name", "expected a string, got a number"));
        let e = parse(json!({"name": ["dev"]})).expect_err("list name");
        assert_eq!(e, err("name", "expected a string, got a list"));
    }

    #[test]
    fn name_escape_sequences_in_json_are_checked_after_decoding() {
        let e = parse_spec(r#"{"name":"dev\n"}"#, &known()).expect_err("newline");
        assert_eq!(e.field, "name");
        let e = parse_spec(r#"{"name":"dev\u0663"}"#, &known()).expect_err("digit");
        assert!(e.rule.contains("U+0663"), "{e}");
    }

    // --- whole document ------------------------------------------------

    #[test]
    fn minimal_spec_defaults() {
        let spec = accept(json!({"name": "dev"}));
        assert_eq!(
            spec,
            ContainerSpec {
                name: "dev".into(),
                modules: vec![],
                workspace: true,
                resources: Resources::default(),
                settings: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn full_example_from_the_docs() {
        let spec = parse_spec(
            r#"{"name":"dev","modules":["git","fish"],"workspace":true,"memory_max":"2G","cpu_weight":100,"tasks_max":512,"settings":{"ssh":{"authorized_keys":["ssh-ed25519 AAAA x"]}}}"#,
            &known(),
        )
        .expect("valid");
        assert_eq!(spec.name, "dev");
        assert_eq!(spec.modules, vec!["git", "fish"]);
        assert!(spec.workspace);
        assert_eq!(
            spec.resources,
            Resources {
                memory_max: Some(2 * GIB),
                cpu_weight: Some(100),
                cpu_quota_percent: None,
                tasks_max: Some(512),
            }
        );
        assert_eq!(
            Value::Object(spec.settings["ssh"].clone()),
            json!({"authorized_keys": ["ssh-ed25519 AAAA x"]})
        );
    }

    #[test]
    fn too_large_input() {
        let big = format!(
            "{{\"name\":\"dev\",\"settings\":{{\"ssh\":{{\"x\":\"{}\"}}}}}}",
            "a".repeat(SPEC_MAX_BYTES)
        );
        let e = parse_spec(&big, &known()).expect_err("too big");
        assert_eq!(e.field, "spec");
        assert!(e.rule.contains("65536"), "{e}");
        // Exactly at the limit is fine (size-wise).
        let head = "{\"name\":\"dev\",\"settings\":{\"ssh\":{\"x\":\"";
        let tail = "\"}}}";
        let at_limit = format!(
            "{head}{}{tail}",
            "a".repeat(SPEC_MAX_BYTES - head.len() - tail.len())
        );
        assert_eq!(at_limit.len(), SPEC_MAX_BYTES);
        assert!(parse_spec(&at_limit, &known()).is_ok());
    }

    #[test]
    fn not_an_object() {
        for (text, got) in [
            ("[]", "got a list"),
            ("\"dev\"", "got a string"),
            ("1", "got a number"),
            ("null", "got null"),
            ("true", "got a boolean"),
        ] {
            let e = parse_spec(text, &known()).expect_err(text);
            assert_eq!(e.field, "spec");
            assert!(e.rule.contains("must be a JSON object"), "{e}");
            assert!(e.rule.contains(got), "{e}");
        }
    }

    #[test]
    fn invalid_json() {
        for text in [
            "",
            "{",
            "{\"name\":}",
            "{\"name\":\"dev\"} x",
            "nul",
            "{'name':'dev'}",
        ] {
            let e = parse_spec(text, &known()).expect_err(text);
            assert_eq!(e.field, "spec");
            assert!(e.rule.contains("is not valid JSON"), "{text:?}: {e}");
        }
    }

    #[test]
    fn duplicate_keys_rejected_at_any_depth() {
        let e = parse_spec(r#"{"name":"dev","name":"prod"}"#, &known()).expect_err("dup");
        assert_eq!(e.field, "spec");
        assert!(e.rule.contains("duplicate key \"name\""), "{e}");
        assert!(e.rule.contains("only once"), "{e}");
        let e = parse_spec(
            r#"{"name":"dev","settings":{"ssh":{"port":22,"port":23}}}"#,
            &known(),
        )
        .expect_err("nested dup");
        assert!(e.rule.contains("duplicate key \"port\""), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"name\":\"dev\",\"settings\":{{\"ssh\":{{\"x\":{}{}}}}}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = parse_spec(&deep, &known()).expect_err("deep");
        assert_eq!(e.field, "spec");
    }

    #[test]
    fn unknown_fields() {
        let allowed = "allowed: name, modules, workspace, memory_max, cpu_weight, cpu_quota, tasks_max, settings";
        let e = reject(json!({"colour": "red"}));
        assert_eq!(e.field, "colour");
        assert_eq!(e.rule, format!("unknown field; {allowed}"));
        // Reported before a missing name, and deterministically (sorted).
        let e = parse(json!({"zeta": 1, "nmae": "dev", "alpha": 2})).expect_err("unknown");
        assert_eq!(e.field, "alpha");
        let e = reject(json!({"owner": "telegram:1"}));
        assert_eq!(e.field, "owner");
        assert!(e.rule.contains("decided by the daemon"), "{e}");
        assert!(e.rule.contains(allowed), "{e}");
        let e = reject(json!({"resources": {"memory_max": 1}}));
        assert_eq!(e.field, "resources");
        assert!(e.rule.contains("top level"), "{e}");
        let e = reject(json!({"bad\nkey": 1}));
        assert_eq!(e.field, "bad\\nkey");
        let e = reject(json!({"": 1}));
        assert_eq!(e.field, "\"\"");
        let e = reject(json!({"settings": {"": {}}}));
        assert_eq!(e.field, "settings.\"\"");
    }

    #[test]
    fn error_display_is_field_colon_rule() {
        let e = err("modules[2]", "duplicate module 'git'");
        assert_eq!(e.to_string(), "modules[2]: duplicate module 'git'");
    }

    // --- modules -------------------------------------------------------

    #[test]
    fn modules_in_order() {
        assert_eq!(
            accept(json!({"name": "dev", "modules": ["ssh", "git", "fish"]})).modules,
            vec!["ssh", "git", "fish"]
        );
        assert!(
            accept(json!({"name": "dev", "modules": []}))
                .modules
                .is_empty()
        );
        assert!(
            accept(json!({"name": "dev", "modules": null}))
                .modules
                .is_empty()
        );
    }

    #[test]
    fn modules_unknown() {
        let e = reject(json!({"modules": ["git", "fish", "foo"]}));
        assert_eq!(e.field, "modules[2]");
        assert_eq!(
            e.rule,
            "unknown module 'foo'; available: code-server, fish, git, ssh, workspace"
        );
        // The available list is sorted and deduplicated whatever the daemon passes.
        let shuffled: Vec<String> = ["ssh", "git", "ssh", "fish"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = parse_spec(r#"{"name":"dev","modules":["x"]}"#, &shuffled).expect_err("x");
        assert_eq!(e.rule, "unknown module 'x'; available: fish, git, ssh");
        let e = parse_spec(r#"{"name":"dev","modules":["x"]}"#, &[]).expect_err("x");
        assert_eq!(e.rule, "unknown module 'x'; no modules are available");
        // Module names are case-sensitive.
        assert_eq!(reject(json!({"modules": ["Git"]})).field, "modules[0]");
    }

    #[test]
    fn modules_duplicate() {
        let e = reject(json!({"modules": ["git", "fish", "git"]}));
        assert_eq!(e.field, "modules[2]");
        assert_eq!(e.rule, "duplicate module 'git' (already at modules[0])");
    }

    #[test]
    fn modules_types() {
        let e = reject(json!({"modules": "git"}));
        assert_eq!(e.field, "modules");
        assert!(e.rule.contains("expected a list of module names"), "{e}");
        assert!(e.rule.contains("got a string"), "{e}");
        let e = reject(json!({"modules": ["git", 3]}));
        assert_eq!(e.field, "modules[1]");
        assert_eq!(e.rule, "expected a module name (a string), got a number");
        let e = reject(json!({"modules": [null]}));
        assert_eq!(e.field, "modules[0]");
    }

    // --- workspace -----------------------------------------------------

    #[test]
    fn workspace() {
        assert!(accept(json!({"name": "dev"})).workspace);
        assert!(accept(json!({"name": "dev", "workspace": true})).workspace);
        assert!(!accept(json!({"name": "dev", "workspace": false})).workspace);
        for bad in [json!("true"), json!(1), json!([]), json!({})] {
            let e = reject(json!({ "workspace": bad }));
            assert_eq!(e.field, "workspace");
            assert!(e.rule.starts_with("expected true or false, got "), "{e}");
        }
    }

    // --- memory_max ----------------------------------------------------

    #[test]
    fn memory_max_accepted_forms() {
        let mem = |v: Value| {
            accept(json!({"name": "dev", "memory_max": v}))
                .resources
                .memory_max
        };
        assert_eq!(mem(json!("2G")), Some(2 * GIB));
        assert_eq!(mem(json!("2GiB")), Some(2 * GIB));
        assert_eq!(mem(json!("2gb")), Some(2 * GIB));
        assert_eq!(mem(json!("512M")), Some(512 * MIB));
        assert_eq!(mem(json!("32M")), Some(32 * MIB));
        assert_eq!(mem(json!("16T")), Some(16 * TIB));
        assert_eq!(mem(json!("1.5G")), Some(3 * GIB / 2));
        assert_eq!(mem(json!(33554432)), Some(32 * MIB));
        assert_eq!(mem(json!(2147483648u64)), Some(2 * GIB));
        assert_eq!(mem(json!(2147483648.0)), Some(2 * GIB));
        assert_eq!(mem(json!("33554432")), Some(32 * MIB));
        assert_eq!(mem(Value::Null), None);
    }

    #[test]
    fn memory_max_range() {
        for bad in [
            json!(0),
            json!(-1),
            json!(-2147483648i64),
            json!(33554431),
            json!("0"),
            json!("1M"),
            json!("31M"),
            json!("17T"),
            json!("16385G"),
            json!(17592186044417u64),
            json!(1e30),
            json!("1E"),
        ] {
            let e = reject(json!({ "memory_max": bad }));
            assert_eq!(e.field, "memory_max");
            assert!(e.rule.contains("between 32M and 16T"), "{bad}: {e}");
        }
    }

    #[test]
    fn memory_max_bad_strings_and_types() {
        for (bad, says) in [
            ("", "empty"),
            ("-1G", "negative"),
            ("2X", "unknown unit \"X\""),
            ("2 G", "unknown unit \" G\""),
            ("G", "does not start with a number"),
            ("1.5", "whole number"),
            ("99999999999999999999999G", "too large"),
        ] {
            let e = reject(json!({ "memory_max": bad }));
            assert_eq!(e.field, "memory_max");
            assert!(e.rule.contains(says), "{bad:?}: {e}");
            assert!(e.rule.contains("between 32M and 16T"), "{bad:?}: {e}");
        }
        let e = reject(json!({"memory_max": 33554432.5}));
        assert!(e.rule.contains("whole number"), "{e}");
        let e = reject(json!({"memory_max": true}));
        assert!(e.rule.contains("got a boolean"), "{e}");
        let e = reject(json!({"memory_max": ["2G"]}));
        assert!(e.rule.contains("got a list"), "{e}");
    }

    // --- cpu_weight / cpu_quota / tasks_max ----------------------------

    #[test]
    fn cpu_weight() {
        let w = |v: Value| {
            accept(json!({"name": "dev", "cpu_weight": v}))
                .resources
                .cpu_weight
        };
        assert_eq!(w(json!(1)), Some(1));
        assert_eq!(w(json!(100)), Some(100));
        assert_eq!(w(json!(10000)), Some(10000));
        for bad in [json!(0), json!(-1), json!(10001), json!(u64::MAX)] {
            let e = reject(json!({ "cpu_weight": bad }));
            assert_eq!(e.field, "cpu_weight");
            assert!(e.rule.contains("between 1 and 10000"), "{e}");
            assert!(e.rule.contains(&format!("got {bad}")), "{e}");
        }
        let e = reject(json!({"cpu_weight": "100"}));
        assert!(
            e.rule
                .contains("expected a whole number between 1 and 10000"),
            "{e}"
        );
        assert!(e.rule.contains("got a string"), "{e}");
        let e = reject(json!({"cpu_weight": 1.5}));
        assert!(e.rule.contains("must be a whole number"), "{e}");
    }

    #[test]
    fn cpu_quota() {
        let q = |v: Value| {
            accept(json!({"name": "dev", "cpu_quota": v}))
                .resources
                .cpu_quota_percent
        };
        assert_eq!(q(json!("150%")), Some(150));
        assert_eq!(q(json!("1%")), Some(1));
        assert_eq!(q(json!("102400%")), Some(102400));
        assert_eq!(q(json!("0050%")), Some(50));
        assert_eq!(q(json!(150)), Some(150));
        for bad in [
            json!("0%"),
            json!("-5%"),
            json!("102401%"),
            json!("99999999999999999999%"),
            json!(0),
            json!(-5),
            json!(102401),
        ] {
            let e = reject(json!({ "cpu_quota": bad }));
            assert_eq!(e.field, "cpu_quota");
            assert!(e.rule.contains("between 1% and 102400%"), "{bad}: {e}");
        }
        for bad in ["150", "%", "abc%", "150 %", " 150%", "150%%", "١٥٠%"] {
            let e = reject(json!({ "cpu_quota": bad }));
            assert_eq!(e.field, "cpu_quota");
            assert!(
                e.rule.contains("expected a percentage like \"150%\""),
                "{bad:?}: {e}"
            );
        }
        let e = reject(json!({"cpu_quota": "1.5%"}));
        assert!(e.rule.contains("whole percentage"), "{e}");
        let e = reject(json!({"cpu_quota": true}));
        assert!(e.rule.contains("got a boolean"), "{e}");
    }

    #[test]
    fn cpu_weight_and_quota_are_exclusive() {
        let e = reject(json!({"cpu_weight": 100, "cpu_quota": "50%"}));
        assert_eq!(e.field, "cpu_quota");
        assert!(e.rule.contains("cannot be combined with cpu_weight"), "{e}");
        // null does not count as given.
        let spec = accept(json!({"name": "dev", "cpu_weight": null, "cpu_quota": "50%"}));
        assert_eq!(spec.resources.cpu_quota_percent, Some(50));
    }

    #[test]
    fn cpu_quota_per_sec_usec() {
        let spec = accept(json!({"name": "dev", "cpu_quota": "150%"}));
        assert_eq!(spec.cpu_quota_per_sec_usec(), Some(1_500_000));
        let spec = accept(json!({"name": "dev", "cpu_quota": "102400%"}));
        assert_eq!(spec.cpu_quota_per_sec_usec(), Some(1_024_000_000));
        assert_eq!(
            accept(json!({"name": "dev"})).cpu_quota_per_sec_usec(),
            None
        );
    }

    #[test]
    fn tasks_max() {
        let t = |v: Value| {
            accept(json!({"name": "dev", "tasks_max": v}))
                .resources
                .tasks_max
        };
        assert_eq!(t(json!(1)), Some(1));
        assert_eq!(t(json!(512)), Some(512));
        assert_eq!(t(json!(4194304)), Some(4194304));
        for bad in [json!(0), json!(-1), json!(4194305)] {
            let e = reject(json!({ "tasks_max": bad }));
            assert_eq!(e.field, "tasks_max");
            assert!(e.rule.contains("between 1 and 4194304"), "{e}");
        }
        let e = reject(json!({"tasks_max": "infinity"}));
        assert!(e.rule.contains("got a string"), "{e}");
    }

    // --- settings ------------------------------------------------------

    #[test]
    fn settings() {
        let spec = accept(json!({
            "name": "dev",
            "modules": ["git"],
            "settings": {"ssh": {"port": 22}, "code-server": {}}
        }));
        // Settings may be given for modules that are known but not selected.
        assert_eq!(spec.settings.len(), 2);
        assert_eq!(
            Value::Object(spec.settings["ssh"].clone()),
            json!({"port": 22})
        );
        assert!(
            accept(json!({"name": "dev", "settings": {}}))
                .settings
                .is_empty()
        );

        let e = reject(json!({"settings": {"ssh": {}, "nope": {}}}));
        assert_eq!(e.field, "settings.nope");
        assert!(
            e.rule.starts_with("unknown module 'nope'; available: "),
            "{e}"
        );
        let e = reject(json!({"settings": {"ssh": ["port"]}}));
        assert_eq!(e.field, "settings.ssh");
        assert_eq!(
            e.rule,
            "expected an object of settings for module 'ssh', got a list"
        );
        let e = reject(json!({"settings": {"ssh": null}}));
        assert_eq!(e.field, "settings.ssh");
        let e = reject(json!({"settings": []}));
        assert_eq!(e.field, "settings");
        assert!(e.rule.contains("got a list"), "{e}");
    }

    // --- to_build_json -------------------------------------------------

    #[test]
    fn build_json() {
        let spec = accept(json!({
            "name": "dev",
            "modules": ["git", "fish"],
            "workspace": false,
            "memory_max": "2G",
            "cpu_quota": "150%",
            "settings": {"ssh": {"port": 22}}
        }));
        assert_eq!(
            spec.to_build_json(|_, _| false),
            json!({
                "name": "dev",
                "modules": ["git", "fish"],
                "workspace": false,
                "settings": {"ssh": {"port": 22}},
                "resources": {"memory_max": 2147483648u64, "cpu_quota_percent": 150}
            })
        );
        assert_eq!(
            accept(json!({"name": "x"})).to_build_json(|_, _| false),
            json!({"name": "x", "modules": [], "workspace": true,
                   "settings": {}, "resources": {}})
        );
    }

    #[test]
    fn personal_settings_are_left_out_of_the_build_and_handed_over_apart() {
        let spec = accept(json!({
            "name": "dev",
            "modules": ["git", "ssh"],
            "settings": {
                "git": {"user_name": "Ada", "user_email": "ada@x"},
                "ssh": {"port": 2222, "authorized_keys": ["ssh-ed25519 AAAA ada"]},
                "fish": {"user_name": "not selected"}
            }
        }));
        let personal = |m: &str, k: &str| {
            matches!(
                (m, k),
                ("git", "user_name" | "user_email") | ("ssh", "authorized_keys") | ("fish", _)
            )
        };
        let build = spec.to_build_json(personal);
        assert_eq!(
            build["settings"],
            json!({"git": {}, "ssh": {"port": 2222}, "fish": {}})
        );
        assert_eq!(
            Value::Object(spec.personal_settings(personal)),
            json!({"git": {"user_name": "Ada", "user_email": "ada@x"},
                   "ssh": {"authorized_keys": ["ssh-ed25519 AAAA ada"]}})
        );
        assert!(spec.personal_settings(|_, _| false).is_empty());
    }

    #[test]
    fn serde_round_trip() {
        let spec = accept(json!({"name": "dev", "modules": ["git"], "tasks_max": 5,
                                 "settings": {"ssh": {"a": [1, {"b": null}]}}}));
        let text = serde_json::to_string(&spec).expect("serialize");
        let back: ContainerSpec = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, spec);
    }
}
