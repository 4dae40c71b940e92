//! Splitting replies at Telegram's message limit (4096 characters, counted in
//! UTF-16 code units), on line boundaries.

/// Telegram's limit for one message's text.
pub const TELEGRAM_LIMIT: usize = 4096;

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Splits `text` into messages of at most `limit` UTF-16 units, breaking
/// between lines; a single line longer than the limit is cut at character
/// boundaries. Empty and blank pieces are dropped (Telegram refuses them).
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_units = 0;
    let mut flush = |cur: &mut String, cur_units: &mut usize| {
        if !cur.trim().is_empty() {
            out.push(std::mem::take(cur));
        }
        cur.clear();
        *cur_units = 0;
    };
    for line in text.trim_end().split('\n') {
        let line = line.trim_end_matches('\r');
        let n = units(line);
        let sep = usize::from(!cur.is_empty());
        if cur_units + sep + n <= limit {
            if sep == 1 {
                cur.push('\n');
            }
            cur.push_str(line);
            cur_units += sep + n;
            continue;
        }
        flush(&mut cur, &mut cur_units);
        if n <= limit {
            cur.push_str(line);
            cur_units = n;
            continue;
        }
        // A line longer than a message: cut it.
        for c in line.chars() {
            let w = c.len_utf16();
            if cur_units + w > limit {
                flush(&mut cur, &mut cur_units);
            }
            cur.push(c);
            cur_units += w;
        }
    }
    flush(&mut cur, &mut cur_units);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_message() {
        assert_eq!(split_message("hello\nworld", 4096), vec!["hello\nworld"]);
        assert!(split_message("  \n ", 4096).is_empty());
    }

    #[test]
    fn splits_on_lines_within_the_limit() {
        let line = "x".repeat(1000);
        let text = vec![line.clone(); 9].join("\n");
        let parts = split_message(&text, TELEGRAM_LIMIT);
        assert_eq!(parts.len(), 3);
        for p in &parts {
            assert!(units(p) <= TELEGRAM_LIMIT);
            assert!(p.split('\n').all(|l| l == line), "lines stay whole");
        }
        assert_eq!(parts.join("\n"), text);
    }

    #[test]
    fn long_lines_are_cut_and_utf16_is_counted() {
        let text = "a".repeat(5000);
        let parts = split_message(&text, TELEGRAM_LIMIT);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![4096, 904]
        );
        // Emoji are two UTF-16 units each.
        let text = "😀".repeat(3000);
        let parts = split_message(&text, TELEGRAM_LIMIT);
        assert!(parts.iter().all(|p| units(p) <= TELEGRAM_LIMIT));
        assert_eq!(parts.concat(), text);
    }
}
