//! Tiered retention of scheduled snapshots (sanoid-style): keep the newest
//! snapshot of each of the last N hours, days, weeks and months. Pure
//! decisions over snapshot times, so both backends, the daemon's schedule
//! and the simulation in the tests use one definition.
//!
//! - Only snapshots the schedule took (`reason = scheduled`) are the
//!   schedule's to prune; manual ones, checkpoints and the safety snapshots
//!   of restores and destroys are never touched here, and neither is a
//!   pinned one (a clone depends on it).
//! - Periods are UTC: an hour, a calendar day, an ISO week (Monday to
//!   Sunday) and a calendar month. A tier of N keeps, for each of the N most
//!   recent periods that have a scheduled snapshot, the newest one in it.
//!   What the tiers keep together stays; the rest goes.
//! - A slot is due once per hour: when no scheduled snapshot was taken in the
//!   current hour. A daemon that was down for days takes one on start, not
//!   one per missed hour (the hours it missed have nothing to snapshot that
//!   the one it takes now does not hold).

use std::collections::BTreeSet;
use std::fmt;

use super::retention::Candidate;

/// The reason of snapshots the schedule takes (and prunes).
pub const SCHEDULED: &str = "scheduled";

/// How many periods of each kind to keep; 0 turns a tier off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tiers {
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// Why a tier text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TiersError(pub String);

impl Tiers {
    /// Whether any tier is on (a schedule with none takes no snapshots).
    pub fn any(&self) -> bool {
        self.hourly + self.daily + self.weekly + self.monthly > 0
    }

    /// Parses `hourly=24,daily=7,weekly=4,monthly=6` (any subset, any
    /// order; `""` or `off`: no schedule).
    pub fn parse(text: &str) -> Result<Tiers, TiersError> {
        let text = text.trim();
        let mut t = Tiers::default();
        if text.is_empty() || text == "off" {
            return Ok(t);
        }
        let mut seen = BTreeSet::new();
        for part in text.split(',') {
            let part = part.trim();
            let Some((k, v)) = part.split_once('=') else {
                return Err(TiersError(format!(
                    "'{}': write tiers as hourly=24,daily=7,weekly=4,monthly=6",
                    part.escape_default()
                )));
            };
            let k = k.trim();
            let n: u32 = v.trim().parse().map_err(|_| {
                TiersError(format!(
                    "'{}': the count of {k} must be a whole number",
                    part.escape_default()
                ))
            })?;
            if n > 1000 {
                return Err(TiersError(format!("{k}={n}: at most 1000")));
            }
            if !seen.insert(k.to_string()) {
                return Err(TiersError(format!("{k} is given twice")));
            }
            match k {
                "hourly" => t.hourly = n,
                "daily" => t.daily = n,
                "weekly" => t.weekly = n,
                "monthly" => t.monthly = n,
                other => {
                    return Err(TiersError(format!(
                        "unknown tier '{}': hourly, daily, weekly or monthly",
                        other.escape_default()
                    )));
                }
            }
        }
        Ok(t)
    }

    /// Each tier at most the cap's (the administrator's caps).
    pub fn capped_by(&self, cap: &Tiers) -> Result<(), TiersError> {
        for (name, asked, max) in [
            ("hourly", self.hourly, cap.hourly),
            ("daily", self.daily, cap.daily),
            ("weekly", self.weekly, cap.weekly),
            ("monthly", self.monthly, cap.monthly),
        ] {
            if asked > max {
                return Err(TiersError(format!(
                    "{name}={asked} is more than this host allows ({name}={max})"
                )));
            }
        }
        Ok(())
    }

    /// At most this many scheduled snapshots are kept at once.
    pub fn most_kept(&self) -> u32 {
        self.hourly + self.daily + self.weekly + self.monthly
    }
}

impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.any() {
            return write!(f, "off");
        }
        let parts: Vec<String> = [
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
        write!(f, "{}", parts.join(","))
    }
}

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

fn hour_of(t: u64) -> u64 {
    t / HOUR
}

fn day_of(t: u64) -> u64 {
    t / DAY
}

/// ISO weeks start on Monday; 1970-01-01 was a Thursday.
fn week_of(t: u64) -> u64 {
    (day_of(t) + 3) / 7
}

/// Months since year 0 (UTC civil calendar).
fn month_of(t: u64) -> u64 {
    let (y, m, _) = super::names::civil_from_days((t / DAY) as i64);
    (y * 12 + i64::from(m) - 1).max(0) as u64
}

/// Whether a scheduled snapshot is due at `now`: none was taken in this hour.
pub fn due(snapshots: &[Candidate], now: u64) -> bool {
    !snapshots
        .iter()
        .any(|s| s.reason == SCHEDULED && hour_of(s.created) == hour_of(now))
}

/// The ids of the scheduled snapshots the tiers keep.
pub fn kept(snapshots: &[Candidate], tiers: &Tiers) -> BTreeSet<String> {
    let mut scheduled: Vec<&Candidate> =
        snapshots.iter().filter(|s| s.reason == SCHEDULED).collect();
    // Newest first; the id breaks ties (it starts with the time).
    scheduled.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let mut keep = BTreeSet::new();
    for (count, period) in [
        (tiers.hourly, hour_of as fn(u64) -> u64),
        (tiers.daily, day_of),
        (tiers.weekly, week_of),
        (tiers.monthly, month_of),
    ] {
        let mut periods_seen = 0u32;
        let mut last: Option<u64> = None;
        for s in &scheduled {
            if periods_seen >= count {
                break;
            }
            let p = period(s.created);
            if last != Some(p) {
                // The newest snapshot of a period not seen yet.
                keep.insert(s.id.clone());
                periods_seen += 1;
                last = Some(p);
            }
        }
    }
    keep
}

/// The ids of the scheduled snapshots to remove: not kept by any tier, not
/// pinned. Other snapshots are never in it.
/// With no tier on there is no schedule to decide for: nothing (the
/// ordinary count and age retention still applies to them).
pub fn expired(snapshots: &[Candidate], tiers: &Tiers) -> Vec<String> {
    if !tiers.any() {
        return Vec::new();
    }
    let keep = kept(snapshots, tiers);
    snapshots
        .iter()
        .filter(|s| s.reason == SCHEDULED && !s.pinned && !keep.contains(&s.id))
        .map(|s| s.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(created: u64, reason: &str) -> Candidate {
        Candidate {
            id: format!("{created:012}-{reason}"),
            created,
            reason: reason.into(),
            pinned: false,
        }
    }

    /// 2026-01-05T00:00:00Z, a Monday.
    const MONDAY: u64 = 1_767_571_200;

    #[test]
    fn tiers_parse_and_print() {
        let t = Tiers::parse("hourly=24, daily=7,weekly=4,monthly=6").unwrap();
        assert_eq!(
            t,
            Tiers {
                hourly: 24,
                daily: 7,
                weekly: 4,
                monthly: 6
            }
        );
        assert_eq!(t.to_string(), "hourly=24,daily=7,weekly=4,monthly=6");
        assert_eq!(t.most_kept(), 41);
        assert_eq!(Tiers::parse("").unwrap(), Tiers::default());
        assert_eq!(Tiers::parse("off").unwrap().to_string(), "off");
        assert_eq!(Tiers::parse("daily=3").unwrap().to_string(), "daily=3");
        for (bad, says) in [
            ("hourly", "write tiers as"),
            ("hourly=x", "whole number"),
            ("hourly=-1", "whole number"),
            ("yearly=1", "unknown tier 'yearly'"),
            ("daily=1,daily=2", "daily is given twice"),
            ("hourly=5000", "at most 1000"),
        ] {
            let e = Tiers::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let cap = Tiers::parse("hourly=48,daily=14,weekly=8,monthly=12").unwrap();
        assert!(t.capped_by(&cap).is_ok());
        let e = Tiers::parse("monthly=24")
            .unwrap()
            .capped_by(&cap)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("monthly=24 is more than this host allows (monthly=12)")
        );
    }

    #[test]
    fn periods_are_utc_hours_days_iso_weeks_and_months() {
        assert_eq!(
            week_of(MONDAY),
            week_of(MONDAY + 6 * DAY + DAY - 1),
            "Mon..Sun"
        );
        assert_eq!(week_of(MONDAY) + 1, week_of(MONDAY + 7 * DAY));
        assert_eq!(week_of(MONDAY - 1), week_of(MONDAY) - 1, "Sunday before");
        // 2026-01-31T23:59:59 and 2026-02-01T00:00:00.
        let feb = MONDAY + 27 * DAY;
        assert_eq!(month_of(feb - 1) + 1, month_of(feb));
        assert_eq!(month_of(0), 1970 * 12);
    }

    #[test]
    fn one_slot_per_hour_and_a_missed_one_runs_once() {
        let mut s = vec![taken(MONDAY + 10, SCHEDULED)];
        assert!(!due(&s, MONDAY + 3599), "this hour has one");
        assert!(due(&s, MONDAY + 3600));
        // Other snapshots do not fill a slot.
        s.push(taken(MONDAY + 3700, "manual"));
        assert!(due(&s, MONDAY + 3800));
        // Down for three days: one is due now, and once taken, none more
        // this hour.
        let later = MONDAY + 3 * DAY + 120;
        assert!(due(&s, later));
        s.push(taken(later, SCHEDULED));
        assert!(!due(&s, later + 60));
    }

    /// A schedule run hourly for 100 days, pruned after each snapshot as
    /// the daemon does: exactly the tiers remain.
    #[test]
    fn a_schedule_over_simulated_days_keeps_exactly_the_tiers() {
        let tiers = Tiers::parse("hourly=24,daily=7,weekly=4,monthly=6").unwrap();
        let start = MONDAY + 7 * HOUR + 13; // not on a boundary
        let mut snaps: Vec<Candidate> = vec![taken(start - 5, "manual")];
        let mut pinned_once = false;
        let mut now = start;
        let end = start + 100 * DAY;
        while now < end {
            if due(&snaps, now) {
                snaps.push(taken(now, SCHEDULED));
            }
            // One scheduled snapshot a clone depends on, early on.
            if !pinned_once && now >= start + 30 * HOUR {
                if let Some(s) = snaps.iter_mut().find(|s| s.reason == SCHEDULED) {
                    s.pinned = true;
                }
                pinned_once = true;
            }
            let gone = expired(&snaps, &tiers);
            snaps.retain(|s| !gone.contains(&s.id));
            now += HOUR;
        }
        let last = now - HOUR;
        let scheduled: Vec<&Candidate> = snaps.iter().filter(|s| s.reason == SCHEDULED).collect();
        // The manual snapshot and the pinned one are never pruned.
        assert!(snaps.iter().any(|s| s.reason == "manual"));
        assert_eq!(scheduled.iter().filter(|s| s.pinned).count(), 1);
        let left: BTreeSet<u64> = scheduled
            .iter()
            .filter(|s| !s.pinned)
            .map(|s| s.created)
            .collect();
        // The oracle, from the whole timeline (every hour the schedule ran,
        // none pruned): for each tier, the newest time of each of its last N
        // periods.
        let timeline: Vec<u64> = (0..)
            .map(|k| start + k * HOUR)
            .take_while(|t| *t <= last)
            .collect();
        let mut want = BTreeSet::new();
        for (count, period) in [
            (24u64, hour_of as fn(u64) -> u64),
            (7, day_of),
            (4, week_of),
            (6, month_of),
        ] {
            for k in 0..count {
                let p = period(last) - k;
                if let Some(newest) = timeline.iter().copied().filter(|t| period(*t) == p).max() {
                    want.insert(newest);
                }
            }
        }
        assert_eq!(left, want, "kept: {} wanted: {}", left.len(), want.len());
        // 24 hours, 6 more days, and the ends of earlier weeks and months.
        assert!(want.len() > 30 && want.len() <= tiers.most_kept() as usize);
    }

    #[test]
    fn only_scheduled_snapshots_are_the_tiers_to_prune() {
        let s = vec![
            taken(10, SCHEDULED),
            taken(20, SCHEDULED),
            taken(30, "manual"),
            taken(40, "checkpoint"),
        ];
        let one = Tiers::parse("hourly=1").unwrap();
        assert_eq!(expired(&s, &one), vec![s[0].id.clone()]);
        // No tier on: no schedule, nothing decided here.
        assert!(expired(&s, &Tiers::default()).is_empty());
    }
}
