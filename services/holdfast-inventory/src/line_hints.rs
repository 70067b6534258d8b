//! The lines of the reservations this process made, by id. On standalone Redis, Extend and
//! Commit name every hold's keys in their one script call from these, instead of reading the
//! record first (one call each fewer). Only a hint: the script compares it with the record's
//! lines and refuses any difference, and the caller then reads the record and goes on as
//! without one. Bounded (the oldest go first), lost on restart, local to the process: a call
//! that reaches another replica simply has none.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Most reservations remembered; ~100 bytes each.
pub const CAPACITY: usize = 65_536;

/// Reservation id -> its record's lines (JSON), as this process wrote them.
#[derive(Debug, Default)]
pub struct LineHints {
    inner: Mutex<Hints>,
}

#[derive(Debug, Default)]
struct Hints {
    lines: HashMap<String, String>,
    /// Ids in the order remembered (a forgotten one stays until its turn; harmless).
    order: VecDeque<String>,
}

impl LineHints {
    /// Remembers `rid`'s lines, dropping the oldest hint past [`CAPACITY`].
    pub fn remember(&self, rid: &str, lines: &str) {
        let mut hints = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if hints.lines.insert(rid.to_string(), lines.to_string()).is_none() {
            hints.order.push_back(rid.to_string());
        }
        while hints.order.len() > CAPACITY {
            if let Some(oldest) = hints.order.pop_front() {
                hints.lines.remove(&oldest);
            }
        }
    }

    /// `rid`'s lines, if this process remembers them.
    pub fn get(&self, rid: &str) -> Option<String> {
        let hints = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        hints.lines.get(rid).cloned()
    }

    /// Forgets `rid` (settled: nothing will ask again).
    pub fn forget(&self, rid: &str) {
        let mut hints = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        hints.lines.remove(rid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_hints() {
        let hints = LineHints::default();
        for i in 0..CAPACITY + 10 {
            hints.remember(&format!("r{i}"), &format!("[[\"S\",{i},0]]"));
        }
        assert_eq!(hints.get("r9"), None, "the oldest went first");
        assert_eq!(hints.get("r10").as_deref(), Some("[[\"S\",10,0]]"));
        let last = format!("r{}", CAPACITY + 9);
        assert!(hints.get(&last).is_some());
        hints.forget(&last);
        assert_eq!(hints.get(&last), None);
    }

    #[test]
    fn a_hint_remembered_again_replaces_the_old_one() {
        let hints = LineHints::default();
        hints.remember("a", "x");
        hints.forget("a");
        hints.remember("a", "y");
        hints.remember("a", "z");
        assert_eq!(hints.get("a").as_deref(), Some("z"));
    }
}
