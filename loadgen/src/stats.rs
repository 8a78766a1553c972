//! Percentiles of one run and the median and spread of repeated runs.

use serde::Serialize;

/// Latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From latencies in microseconds (sorted here).
    pub fn of(latencies_us: &mut [u64]) -> Self {
        latencies_us.sort_unstable();
        let at = |p: f64| {
            if latencies_us.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest value with at least p of the samples at or below it.
            let rank =
                ((p * latencies_us.len() as f64).ceil() as usize).clamp(1, latencies_us.len());
            latencies_us[rank - 1] as f64 / 1000.0
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// A figure measured several times: the median, the smallest and largest, and every run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Spread {
    pub fn of(runs: &[f64]) -> Self {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            runs: runs.to_vec(),
        }
    }

    /// `1234 (1200–1300)`, with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        if self.runs.len() <= 1 {
            return format!("{:.digits$}", self.median);
        }
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// Median of each percentile over repeated runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySpread {
    pub p50: Spread,
    pub p95: Spread,
    pub p99: Spread,
}

impl LatencySpread {
    pub fn of(runs: &[Percentiles]) -> Self {
        let pick = |f: fn(&Percentiles) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        Self {
            p50: pick(|p| p.p50),
            p95: pick(|p| p.p95),
            p99: pick(|p| p.p99),
        }
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []).p99, 0.0);
    }

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
        assert_eq!(s.show(0), "2 (1–3)");
    }
}
