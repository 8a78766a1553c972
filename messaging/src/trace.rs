//! W3C trace context (`traceparent`) values carried from a command to its events.

use rand::Rng;

/// A new `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>().max(1);
    let span: u64 = rng.random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Whether `value` is a well-formed version-00 `traceparent`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_valid() {
        let t = new_traceparent();
        assert!(is_valid_traceparent(&t), "{t}");
        assert_eq!(t.split('-').nth(1).unwrap().len(), 32);
        assert!(!is_valid_traceparent("00-abc-def-01"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
    }
}
