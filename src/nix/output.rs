//! Reading what Nix prints on stderr: progress lines turned into short
//! friendly ones ("building 3 of 17: hello-2.12"), and the useful part of an
//! error (the `error:` block, not the trace or a wall of build output).

use std::collections::VecDeque;

/// Lines of a failed build's log that are shown.
pub const LOG_TAIL_LINES: usize = 20;
/// At most this many lines of an error message are kept.
pub const MESSAGE_MAX_LINES: usize = 15;
/// At most this many characters of an error message are kept.
pub const MESSAGE_MAX_CHARS: usize = 2000;

/// The name part of a store path: `/nix/store/<hash>-hello-2.12.drv` →
/// `hello-2.12`. Anything else is returned without a `.drv` suffix.
pub fn store_path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 && !name.is_empty() => name,
        _ => base,
    }
}

/// The first `'...'`-quoted text after `prefix` in `line`.
fn quoted_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let start = line.find(prefix)? + prefix.len();
    let rest = &line[start..];
    let rest = rest.strip_prefix('\'')?;
    let end = rest.find('\'')?;
    Some(&rest[..end])
}

/// The leading count of lines like "these 17 derivations will be built:".
fn count_after_these(line: &str) -> Option<usize> {
    line.strip_prefix("these ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Turns Nix's stderr lines into progress lines, counting builds and
/// fetches from Nix's own announcements.
#[derive(Debug, Default)]
pub struct ProgressParser {
    total_builds: Option<usize>,
    builds: usize,
    total_fetches: Option<usize>,
    fetches: usize,
    /// The derivation whose builder output is being printed (Nix prints
    /// builds one after the other unless max-jobs > 1).
    current: Option<String>,
    /// The last lines of builder output for `current`.
    current_output: VecDeque<String>,
}

impl ProgressParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line; returns the line to show, if any.
    pub fn feed(&mut self, line: &str) -> Option<String> {
        let t = line.trim();
        if t.is_empty() {
            return None;
        }
        // "these 3 derivations will be built:" / "this derivation will be built:"
        if t.ends_with("will be built:") {
            let n = if t.starts_with("this ") {
                1
            } else {
                count_after_these(t)?
            };
            self.total_builds = Some(n);
            return Some(format!(
                "{n} derivation{} to build",
                if n == 1 { "" } else { "s" }
            ));
        }
        // "these 40 paths will be fetched (12.3 MiB download, 50.1 MiB unpacked):"
        if t.contains("will be fetched") {
            let n = if t.starts_with("this ") {
                1
            } else {
                count_after_these(t)?
            };
            self.total_fetches = Some(n);
            let sizes = t
                .find('(')
                .and_then(|i| t[i + 1..].split(',').next())
                .map(|s| format!(" ({})", s.trim_end_matches(')').trim()))
                .unwrap_or_default();
            return Some(format!(
                "{n} path{} to fetch{sizes}",
                if n == 1 { "" } else { "s" }
            ));
        }
        // Members of the lists above.
        if line.starts_with("  /") {
            return None;
        }
        if t.starts_with("building '")
            && let Some(drv) = quoted_after(t, "building ")
        {
            self.builds += 1;
            self.current = Some(drv.to_string());
            self.current_output.clear();
            let name = store_path_name(drv);
            return Some(match self.total_builds {
                Some(total) if self.builds <= total => {
                    format!("building {} of {total}: {name}", self.builds)
                }
                _ => format!("building {name}"),
            });
        }
        if t.starts_with("copying path '")
            && let Some(path) = quoted_after(t, "copying path ")
        {
            self.fetches += 1;
            let name = store_path_name(path);
            return Some(match self.total_fetches {
                Some(total) if self.fetches <= total => {
                    format!("copying {} of {total}: {name}", self.fetches)
                }
                _ => format!("copying {name}"),
            });
        }
        if t.starts_with("error:") || t.starts_with("warning:") {
            return None;
        }
        // Builder output.
        if self.current.is_some() {
            if self.current_output.len() == LOG_TAIL_LINES {
                self.current_output.pop_front();
            }
            self.current_output.push_back(line.to_string());
        }
        None
    }

    /// Builds announced so far (counting from "building" lines).
    pub fn builds(&self) -> usize {
        self.builds
    }

    /// The last builder output lines seen for `drv`, if it was the last
    /// derivation whose build started.
    pub fn output_of(&self, drv: &str) -> Option<Vec<String>> {
        (self.current.as_deref() == Some(drv))
            .then(|| self.current_output.iter().cloned().collect())
    }
}

/// The derivation a failed `nix-store --realise` names as failed: the
/// builder that failed, or the derivation of a hash mismatch, or the first
/// `.drv` an error line quotes.
pub fn failed_drv(lines: &[String]) -> Option<String> {
    let errors = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("error:"));
    for l in errors.clone() {
        if let Some(d) = quoted_after(l, "builder for ") {
            return Some(d.to_string());
        }
    }
    for l in errors.clone() {
        if let Some(d) = quoted_after(l, "fixed-output derivation ") {
            return Some(d.to_string());
        }
    }
    for l in errors {
        let mut rest = l;
        while let Some(i) = rest.find('\'') {
            rest = &rest[i + 1..];
            if let Some(end) = rest.find('\'') {
                let q = &rest[..end];
                if q.starts_with('/') && q.ends_with(".drv") {
                    return Some(q.to_string());
                }
                rest = &rest[end + 1..];
            }
        }
    }
    None
}

/// The lines Nix printed as "last N log lines" of a failed build (Nix 2.13
/// and later), without their "> " prefix.
pub fn embedded_log_lines(lines: &[String]) -> Vec<String> {
    let Some(start) = lines.iter().position(|l| {
        let t = l.trim();
        t.starts_with("last ") && t.ends_with("log lines:")
    }) else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with('>'))
        .map(|l| l.strip_prefix("> ").unwrap_or(&l[1..]).to_string())
        .collect()
}

/// The last `n` lines of `text`, without trailing empty lines.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let start = end.saturating_sub(n);
    lines[start..end].join("\n")
}

/// The useful part of a Nix error on stderr: the innermost `error:` block
/// (newer Nix prints a trace of "… while evaluating" frames before it),
/// without hints or warnings, dedented and capped.
pub fn error_message(lines: &[String]) -> String {
    let last_error = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("error:"));
    let Some(start) = last_error else {
        // No error line at all: the last few meaningful lines.
        let meaningful: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("warning:"))
            .collect();
        let from = meaningful.len().saturating_sub(5);
        return cap(&meaningful[from..].join("\n"));
    };
    // An "error:" line with nothing after it introduces a block whose first
    // line is the message (newer Nix), unless it is the innermost error of a
    // trace, in which case the message is on the same line.
    let block: Vec<&String> = lines[start..]
        .iter()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("(use '--show-trace'")
                && !t.starts_with("warning:")
                && !t.starts_with("For full logs, run")
        })
        .collect();
    let indent = block
        .iter()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| leading_blanks(l))
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = Vec::new();
    for (i, l) in block.iter().enumerate() {
        let text = if i == 0 {
            l.trim_start()
                .strip_prefix("error:")
                .unwrap_or(l)
                .trim()
                .to_string()
        } else {
            // Blanks are ASCII, so `cut` is a character boundary.
            let cut = indent.min(leading_blanks(l));
            l[cut..].trim_end().to_string()
        };
        if text.is_empty() && out.last().is_none_or(|p: &String| p.is_empty()) {
            continue; // no leading or doubled blank lines
        }
        out.push(text);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    cap(&out.join("\n"))
}

/// Leading spaces and tabs, in bytes.
fn leading_blanks(line: &str) -> usize {
    line.bytes()
        .take_while(|b| *b == b' ' || *b == b'\t')
        .count()
}

/// At most [`MESSAGE_MAX_LINES`] lines and [`MESSAGE_MAX_CHARS`] characters.
pub fn cap(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut cut = false;
    if lines.len() > MESSAGE_MAX_LINES {
        lines.truncate(MESSAGE_MAX_LINES);
        cut = true;
    }
    let mut out = lines.join("\n");
    if out.chars().count() > MESSAGE_MAX_CHARS {
        out = out.chars().take(MESSAGE_MAX_CHARS).collect();
        cut = true;
    }
    if cut {
        out.push_str("\n…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn store_path_names() {
        assert_eq!(
            store_path_name("/nix/store/a0xkc9amz0v2fvm3wnr3mr1b1ngn7nn6-hello-2.12.drv"),
            "hello-2.12"
        );
        assert_eq!(
            store_path_name("/nix/store/a0xkc9amz0v2fvm3wnr3mr1b1ngn7nn6-hello-2.12"),
            "hello-2.12"
        );
        assert_eq!(store_path_name("weird"), "weird");
        assert_eq!(store_path_name(""), "");
    }

    /// Nix 2.8's stderr for `nix-store --realise` of a small system.
    const REALISE_2_8: &str = "\
these 3 derivations will be built:
  /nix/store/a0xkc9amz0v2fvm3wnr3mr1b1ngn7nn6-hello-2.12.drv
  /nix/store/gh845h0f1dx90fkkvcdj0smkm25977fl-bad-1.0.drv
  /nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-nixos-system-x.drv
these 2 paths will be fetched (1.20 MiB download, 5.00 MiB unpacked):
  /nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-bash-5.2
  /nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-glibc-2.40
copying path '/nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-bash-5.2' from 'https://cache.nixos.org'...
building '/nix/store/gh845h0f1dx90fkkvcdj0smkm25977fl-bad-1.0.drv'...
line1 of bad-1.0
err
building '/nix/store/a0xkc9amz0v2fvm3wnr3mr1b1ngn7nn6-hello-2.12.drv'...
line1 of hello-2.12
building '/nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-nixos-system-x.drv'...
building '/nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-extra-1.drv'...
warning: you did not specify '--add-root'; the result might be removed by the garbage collector";

    #[test]
    fn progress_counts_builds_and_fetches() {
        let mut p = ProgressParser::new();
        let shown: Vec<String> = lines(REALISE_2_8)
            .iter()
            .filter_map(|l| p.feed(l))
            .collect();
        assert_eq!(
            shown,
            [
                "3 derivations to build",
                "2 paths to fetch (1.20 MiB download)",
                "copying 1 of 2: bash-5.2",
                "building 1 of 3: bad-1.0",
                "building 2 of 3: hello-2.12",
                "building 3 of 3: nixos-system-x",
                "building extra-1",
            ]
        );
        assert_eq!(p.builds(), 4);
        assert_eq!(
            p.output_of("/nix/store/5g0krkqfcajqxxb5j8cjywcxqpa2hghh-extra-1.drv"),
            Some(vec![])
        );
    }

    #[test]
    fn single_derivation_wording() {
        let mut p = ProgressParser::new();
        assert_eq!(
            p.feed("this derivation will be built:").as_deref(),
            Some("1 derivation to build")
        );
        assert_eq!(
            p.feed("this path will be fetched (0.01 MiB download, 0.02 MiB unpacked):")
                .as_deref(),
            Some("1 path to fetch (0.01 MiB download)")
        );
        assert_eq!(
            p.feed("building '/nix/store/x-y.drv'..."),
            Some("building 1 of 1: x-y".into())
        );
    }

    #[test]
    fn builder_output_is_kept_for_the_current_build() {
        let mut p = ProgressParser::new();
        p.feed("building '/nix/store/gh845h0f1dx90fkkvcdj0smkm25977fl-bad-1.0.drv'...");
        for i in 0..30 {
            assert_eq!(p.feed(&format!("log {i}")), None);
        }
        let out = p
            .output_of("/nix/store/gh845h0f1dx90fkkvcdj0smkm25977fl-bad-1.0.drv")
            .unwrap();
        assert_eq!(out.len(), LOG_TAIL_LINES);
        assert_eq!(out.last().unwrap(), "log 29");
        assert!(p.output_of("/nix/store/other.drv").is_none());
    }

    #[test]
    fn failed_derivation_is_found() {
        let l = lines(
            "error: builder for '/nix/store/wx2r-bad-1.0.drv' failed with exit code 3\n\
             error: 1 dependencies of derivation '/nix/store/hzks-nixos-system-x.drv' failed to build",
        );
        assert_eq!(
            failed_drv(&l).as_deref(),
            Some("/nix/store/wx2r-bad-1.0.drv")
        );
        let l = lines("error: hash mismatch in fixed-output derivation '/nix/store/abc-src.drv':");
        assert_eq!(failed_drv(&l).as_deref(), Some("/nix/store/abc-src.drv"));
        let l =
            lines("error: 1 dependencies of derivation '/nix/store/hzks-sys.drv' failed to build");
        assert_eq!(failed_drv(&l).as_deref(), Some("/nix/store/hzks-sys.drv"));
        assert_eq!(failed_drv(&lines("error: out of disk 'x'")), None);
    }

    #[test]
    fn embedded_log_lines_of_newer_nix() {
        let l = lines(
            "error: builder for '/nix/store/x-bad.drv' failed with exit code 3;\n       \
             last 3 log lines:\n       > a\n       > b\n       >\n       \
             For full logs, run 'nix log /nix/store/x-bad.drv'.",
        );
        assert_eq!(embedded_log_lines(&l), ["a", "b", ""]);
        assert!(embedded_log_lines(&lines("nothing")).is_empty());
    }

    #[test]
    fn eval_error_of_nix_2_8() {
        let l = lines(
            "warning: something\n\
             error: voxnix: unknown module 'foo' (available: code-server, dev, fish, git)\n\
             (use '--show-trace' to show detailed location information)",
        );
        assert_eq!(
            error_message(&l),
            "voxnix: unknown module 'foo' (available: code-server, dev, fish, git)"
        );
        let l = lines(
            "error: attribute 'b' missing\n\n       at «string»:1:12:\n\n            1| let f = x: x.a.b; in f { a = {}; }\n             |            ^\n(use '--show-trace' to show detailed location information)",
        );
        assert_eq!(
            error_message(&l),
            "attribute 'b' missing\n\nat «string»:1:12:\n\n     1| let f = x: x.a.b; in f { a = {}; }\n      |            ^"
        );
    }

    #[test]
    fn eval_error_of_newer_nix_keeps_the_innermost_error() {
        let l = lines(
            "error:\n       … while evaluating the attribute 'config.system.build.toplevel'\n\
             \x20        at /nix/store/x-source/nixos/modules/system/activation/top-level.nix:71:5:\n\
             \x20          70|\n\
             \x20      … while calling the 'throw' builtin\n\n\
             \x20      error: voxnix: unknown module 'foo' (available: git)",
        );
        assert_eq!(
            error_message(&l),
            "voxnix: unknown module 'foo' (available: git)"
        );
        let l = lines(
            "error:\n       … while evaluating\n\n       error:\n       Failed assertions:\n       - voxnix: setting 'ssh.port' must be between 1 and 65535, got 0",
        );
        assert_eq!(
            error_message(&l),
            "Failed assertions:\n- voxnix: setting 'ssh.port' must be between 1 and 65535, got 0"
        );
    }

    #[test]
    fn messages_are_capped() {
        let mut text = String::from("error: first\n");
        for i in 0..100 {
            text.push_str(&format!("       line {i}\n"));
        }
        let m = error_message(&lines(&text));
        assert!(m.lines().count() <= MESSAGE_MAX_LINES + 1, "{m}");
        assert!(m.ends_with('…'));
        let long = format!("error: {}", "x".repeat(10_000));
        assert!(error_message(&lines(&long)).chars().count() <= MESSAGE_MAX_CHARS + 2);
        assert_eq!(
            error_message(&lines("just noise\nmore")),
            "just noise\nmore"
        );
        assert_eq!(error_message(&[]), "");
    }

    #[test]
    fn unicode_blanks_do_not_split_characters() {
        let l = lines("error: x\n\u{3000}\u{3000}wide blank\n y");
        assert_eq!(error_message(&l), "x\n\u{3000}\u{3000}wide blank\n y");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }
}
