//! Conversation history per chat, kept and trimmed in whole turns.
//!
//! A *turn* is one message of the person and everything that answered it: the
//! model's tool calls, their results, and the final reply. Turns are only ever
//! kept, dropped or sent whole, so a tool call is never separated from its
//! result and no window starts in the middle of an exchange. The system prompt
//! is not part of the history: it is built afresh for every request.
//!
//! Limits (see [`HistoryLimits`]): a conversation idle for 30 minutes is
//! forgotten; at most 200 messages are kept (oldest whole turns dropped first);
//! at most 40 messages of history are sent with a request (newest whole turns
//! that fit).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation (never the system prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    User(String),
    Assistant {
        text: Option<String>,
        tool_calls: Vec<ToolCallRecord>,
    },
    Tool {
        call_id: String,
        content: String,
    },
}

/// A person's message and everything that answered it.
pub type Turn = Vec<Msg>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub idle: Duration,
    pub max_kept: usize,
    pub max_sent: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            idle: Duration::from_secs(30 * 60),
            max_kept: 200,
            max_sent: 40,
        }
    }
}

#[derive(Debug)]
struct Conversation {
    turns: VecDeque<Turn>,
    messages: usize,
    last_active: Instant,
}

/// Every chat's history, in memory (a restart forgets them).
#[derive(Debug)]
pub struct HistoryStore {
    limits: HistoryLimits,
    chats: Mutex<HashMap<String, Conversation>>,
}

impl HistoryStore {
    pub fn new(limits: HistoryLimits) -> Self {
        HistoryStore {
            limits,
            chats: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conversation>> {
        self.chats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest whole turns of `chat` with at most `budget` messages in all,
    /// oldest first. An idle conversation is forgotten first.
    pub fn window(&self, chat: &str, budget: usize) -> Vec<Msg> {
        self.window_at(chat, budget, Instant::now())
    }

    fn window_at(&self, chat: &str, budget: usize, now: Instant) -> Vec<Msg> {
        let mut chats = self.lock();
        if let Some(c) = chats.get(chat)
            && now.saturating_duration_since(c.last_active) > self.limits.idle
        {
            chats.remove(chat);
        }
        let Some(c) = chats.get(chat) else {
            return Vec::new();
        };
        let mut taken = 0;
        let mut first = c.turns.len();
        for (i, t) in c.turns.iter().enumerate().rev() {
            if taken + t.len() > budget {
                break;
            }
            taken += t.len();
            first = i;
        }
        c.turns.iter().skip(first).flatten().cloned().collect()
    }

    /// Appends a finished turn, then drops the oldest whole turns beyond the
    /// kept limit (the newest turn always stays).
    pub fn push_turn(&self, chat: &str, turn: Turn) {
        self.push_turn_at(chat, turn, Instant::now());
    }

    fn push_turn_at(&self, chat: &str, turn: Turn, now: Instant) {
        if turn.is_empty() {
            return;
        }
        let mut chats = self.lock();
        let c = chats.entry(chat.to_string()).or_insert(Conversation {
            turns: VecDeque::new(),
            messages: 0,
            last_active: now,
        });
        if now.saturating_duration_since(c.last_active) > self.limits.idle {
            c.turns.clear();
            c.messages = 0;
        }
        c.messages += turn.len();
        c.turns.push_back(turn);
        c.last_active = now;
        while c.messages > self.limits.max_kept && c.turns.len() > 1 {
            if let Some(old) = c.turns.pop_front() {
                c.messages -= old.len();
            }
        }
    }

    /// Forgets a chat's conversation (`/reset`).
    pub fn reset(&self, chat: &str) {
        self.lock().remove(chat);
    }

    /// Messages kept for a chat.
    pub fn len(&self, chat: &str) -> usize {
        self.lock().get(chat).map(|c| c.messages).unwrap_or(0)
    }

    pub fn is_empty(&self, chat: &str) -> bool {
        self.len(chat) == 0
    }

    /// Drops every idle conversation (called now and then to free memory).
    pub fn sweep(&self) {
        let now = Instant::now();
        let idle = self.limits.idle;
        self.lock()
            .retain(|_, c| now.saturating_duration_since(c.last_active) <= idle);
    }
}

/// Checks that messages form whole exchanges: every tool result answers a call
/// of the assistant message before it, and every call is answered before the
/// next user or assistant message. Used by tests and debug assertions.
pub fn pairs_are_whole(msgs: &[Msg]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for m in msgs {
        match m {
            Msg::User(_) => {
                if !open.is_empty() {
                    return false;
                }
            }
            Msg::Assistant { tool_calls, .. } => {
                if !open.is_empty() {
                    return false;
                }
                open = tool_calls.iter().map(|c| c.id.as_str()).collect();
            }
            Msg::Tool { call_id, .. } => match open.iter().position(|id| id == call_id) {
                Some(i) => {
                    open.remove(i);
                }
                None => return false,
            },
        }
    }
    open.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(i: usize, calls: usize) -> Turn {
        let mut t = vec![Msg::User(format!("u{i}"))];
        if calls > 0 {
            t.push(Msg::Assistant {
                text: None,
                tool_calls: (0..calls)
                    .map(|c| ToolCallRecord {
                        id: format!("c{i}-{c}"),
                        name: "list_containers".into(),
                        arguments: "{}".into(),
                    })
                    .collect(),
            });
            for c in 0..calls {
                t.push(Msg::Tool {
                    call_id: format!("c{i}-{c}"),
                    content: "[]".into(),
                });
            }
        }
        t.push(Msg::Assistant {
            text: Some(format!("a{i}")),
            tool_calls: vec![],
        });
        t
    }

    #[test]
    fn windows_are_whole_turns_within_budget() {
        let h = HistoryStore::new(HistoryLimits::default());
        for i in 0..30 {
            h.push_turn("c", turn(i, i % 3));
        }
        for budget in [1, 2, 3, 5, 7, 11, 39, 40] {
            let w = h.window("c", budget);
            assert!(w.len() <= budget, "budget {budget}: {}", w.len());
            assert!(pairs_are_whole(&w), "budget {budget}");
            assert!(w.is_empty() || matches!(w[0], Msg::User(_)));
        }
        let w = h.window("c", 40);
        assert!(w.len() > 30, "{}", w.len());
        assert_eq!(w.last(), turn(29, 29 % 3).last());
    }

    #[test]
    fn kept_limit_drops_oldest_whole_turns() {
        let h = HistoryStore::new(HistoryLimits {
            max_kept: 20,
            ..Default::default()
        });
        for i in 0..50 {
            h.push_turn("c", turn(i, 2));
        }
        assert!(h.len("c") <= 20);
        let w = h.window("c", 1000);
        assert!(pairs_are_whole(&w));
        assert_eq!(w[0], Msg::User("u46".into()), "four turns of five messages");
    }

    #[test]
    fn idle_conversations_are_forgotten() {
        let h = HistoryStore::new(HistoryLimits {
            idle: Duration::from_secs(60),
            ..Default::default()
        });
        let t0 = Instant::now();
        h.push_turn_at("c", turn(0, 1), t0);
        assert_eq!(h.window_at("c", 40, t0 + Duration::from_secs(59)).len(), 4);
        assert!(
            h.window_at("c", 40, t0 + Duration::from_secs(61))
                .is_empty()
        );
        h.push_turn_at("d", turn(0, 0), t0);
        h.push_turn_at("d", turn(1, 0), t0 + Duration::from_secs(120));
        assert_eq!(h.window_at("d", 40, t0 + Duration::from_secs(121)).len(), 2);
    }

    #[test]
    fn chats_are_separate_and_reset() {
        let h = HistoryStore::new(HistoryLimits::default());
        h.push_turn("a", turn(0, 0));
        assert!(h.window("b", 40).is_empty());
        h.reset("a");
        assert!(h.is_empty("a"));
    }

    #[test]
    fn pair_checker_catches_splits() {
        let t = turn(0, 2);
        assert!(pairs_are_whole(&t));
        assert!(!pairs_are_whole(&t[2..]));
        assert!(!pairs_are_whole(&t[..3]));
    }
}
