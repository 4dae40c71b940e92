//! Retention: which snapshots and kept workspaces may go. Pure decisions, so
//! both backends apply exactly the same rules.
//!
//! - A container's snapshots are ordered newest first. The newest one of a
//!   live workspace always stays (it is the last restore point).
//! - Beyond that, a snapshot goes when it is not among the `keep_snapshots`
//!   newest (0 = no count limit) or when it is older than `keep_days` days
//!   (0 = no age limit).
//! - A snapshot something depends on (a ZFS snapshot that is the origin of a
//!   clone) stays; the backend says so with `pinned`.
//! - A kept workspace (what a destroyed container left) goes when its expiry
//!   time has passed.

use super::tiers::{SCHEDULED, Tiers};

/// The reason of a checkpoint's snapshot (engine/checkpoints.rs); such a
/// snapshot goes only with its checkpoint.
pub const CHECKPOINT: &str = "checkpoint";

/// One snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub created: u64,
    /// Why it was taken (`manual`, `scheduled`, `pre-restore`, ...).
    pub reason: String,
    /// Cannot be removed now (e.g. a clone depends on it).
    pub pinned: bool,
}

/// The ids of the snapshots to remove, given all snapshots of one container:
/// with a schedule on, its tiers decide for the snapshots it took and the
/// count and age limits for the others; with none, the limits for all.
pub fn to_remove(
    snapshots: &[Candidate],
    keep_snapshots: u32,
    keep_days: u32,
    tiers: &Tiers,
    now: u64,
) -> Vec<String> {
    // Checkpoints' snapshots are the checkpoint limit's, never retention's.
    let snapshots: Vec<Candidate> = snapshots
        .iter()
        .filter(|s| s.reason != CHECKPOINT)
        .cloned()
        .collect();
    let snapshots = snapshots.as_slice();
    if !tiers.any() {
        return expired_snapshots(snapshots, keep_snapshots, keep_days, now);
    }
    let others: Vec<Candidate> = snapshots
        .iter()
        .filter(|s| s.reason != SCHEDULED)
        .cloned()
        .collect();
    let mut out = expired_snapshots(&others, keep_snapshots, keep_days, now);
    out.extend(super::tiers::expired(snapshots, tiers));
    out
}

/// The ids of the snapshots to remove, given all snapshots of one container.
pub fn expired_snapshots(
    snapshots: &[Candidate],
    keep_snapshots: u32,
    keep_days: u32,
    now: u64,
) -> Vec<String> {
    let mut order: Vec<&Candidate> = snapshots.iter().collect();
    // Newest first; the id breaks ties (it starts with the time, then the reason).
    order.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let max_age = u64::from(keep_days) * 86_400;
    order
        .iter()
        .enumerate()
        .skip(1) // the newest always stays
        .filter(|(i, s)| {
            let too_many = keep_snapshots > 0 && *i >= keep_snapshots as usize;
            let too_old = keep_days > 0 && now.saturating_sub(s.created) > max_age;
            (too_many || too_old) && !s.pinned
        })
        .map(|(_, s)| s.id.clone())
        .collect()
}

/// When a workspace retired at `retired` expires (`u64::MAX`: never, for
/// `keep_days = 0`).
pub fn kept_expiry(retired: u64, keep_days: u32) -> u64 {
    if keep_days == 0 {
        u64::MAX
    } else {
        retired.saturating_add(u64::from(keep_days) * 86_400)
    }
}

/// Whether a kept workspace that expires at `expires` may go at `now`.
pub fn kept_expired(expires: u64, now: u64) -> bool {
    now >= expires
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, created: u64) -> Candidate {
        Candidate {
            id: id.into(),
            created,
            reason: "manual".into(),
            pinned: false,
        }
    }

    #[test]
    fn with_a_schedule_its_tiers_decide_for_its_snapshots_only() {
        let hour = 3600;
        let mut s: Vec<Candidate> = (0..30)
            .map(|h| Candidate {
                id: format!("s{h:02}"),
                created: h * hour,
                reason: SCHEDULED.into(),
                pinned: false,
            })
            .collect();
        s.push(c("m1", 5));
        s.push(c("m2", 6));
        s.push(c("m3", 7));
        let tiers = Tiers::parse("hourly=24").unwrap();
        let now = 30 * hour;
        let gone = to_remove(&s, 2, 0, &tiers, now);
        // The six oldest scheduled ones (beyond 24 hours), and the manual one
        // beyond keep_snapshots = 2; the count limit does not reach the
        // schedule's 24.
        let mut want: Vec<String> = (0..6).map(|h| format!("s{h:02}")).collect();
        want.push("m1".into());
        let mut got = gone.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // No schedule: the limits for all of them.
        assert_eq!(to_remove(&s, 2, 0, &Tiers::default(), now).len(), 31);
    }

    #[test]
    fn checkpoints_are_never_retentions_to_prune() {
        let day = 86_400;
        let mut s: Vec<Candidate> = (0..5)
            .map(|d| Candidate {
                id: format!("cp{d}"),
                created: d * day,
                reason: CHECKPOINT.into(),
                pinned: false,
            })
            .collect();
        s.push(c("m1", 0));
        s.push(c("m2", day));
        let now = 100 * day;
        // Count and age limits: only the manual one beyond them goes.
        assert_eq!(to_remove(&s, 1, 7, &Tiers::default(), now), vec!["m1"]);
        // With a schedule too.
        let tiers = Tiers::parse("hourly=1").unwrap();
        assert_eq!(to_remove(&s, 1, 7, &tiers, now), vec!["m1"]);
    }

    #[test]
    fn by_count_keeps_the_newest() {
        let s = vec![c("a", 1), c("b", 2), c("c", 3), c("d", 4)];
        assert_eq!(expired_snapshots(&s, 2, 0, 10), vec!["b", "a"]);
        assert!(expired_snapshots(&s, 0, 0, 10).is_empty());
        assert!(expired_snapshots(&s, 4, 0, 10).is_empty());
    }

    #[test]
    fn by_age_never_the_newest() {
        let day = 86_400;
        let s = vec![c("a", 0), c("b", day), c("c", 2 * day)];
        let now = 100 * day;
        assert_eq!(expired_snapshots(&s, 10, 7, now), vec!["b", "a"]);
        assert_eq!(expired_snapshots(&s, 10, 0, now), Vec::<String>::new());
        // Exactly keep_days old stays; a second more and it goes.
        assert_eq!(expired_snapshots(&s, 10, 1, 2 * day), vec!["a"]);
        assert_eq!(expired_snapshots(&s, 10, 1, 2 * day + 1), vec!["b", "a"]);
    }

    #[test]
    fn pinned_stay() {
        let mut s = vec![c("a", 1), c("b", 2), c("c", 3)];
        s[0].pinned = true;
        assert_eq!(expired_snapshots(&s, 1, 0, 10), vec!["b"]);
    }

    #[test]
    fn kept() {
        assert_eq!(kept_expiry(10, 0), u64::MAX);
        assert_eq!(kept_expiry(10, 1), 86_410);
        assert_eq!(kept_expiry(u64::MAX - 1, 7), u64::MAX);
        assert!(!kept_expired(86_410, 86_409));
        assert!(kept_expired(86_410, 86_410));
        assert!(!kept_expired(u64::MAX, u64::MAX - 1));
    }
}
