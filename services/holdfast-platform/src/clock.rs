//! Wall-clock time as the services store and send it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in Unix milliseconds (0 before 1970, `i64::MAX` past year 292 million).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_ms_is_after_2023_and_does_not_go_back() {
        let first = now_ms();
        assert!(first > 1_700_000_000_000, "{first}");
        assert!(now_ms() >= first);
    }
}
