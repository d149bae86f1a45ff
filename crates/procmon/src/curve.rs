//! What a memory curve means: the summary and verdict printed when a watch ends.
//!
//! The method, in three parts:
//! - A *step* is a change between two samples much larger than the typical change (four times
//!   the median absolute change, and at least [`STEP_FLOOR`]).
//! - The *steady slope* is a least-squares fit over the curve with its steps taken out, so one
//!   jump does not pass for a trend.
//! - *Growth* compares the floor of the curve at its start and at its end (the lowest sample of
//!   each end window). An allocate-and-free loop that is sampled at the top of a cycle then
//!   does not pass for growth: its floor stays where it was.

use serde::Serialize;

/// Changes smaller than this are never steps: pymalloc arenas alone come and go by 1 MiB.
pub const STEP_FLOOR: u64 = 1 << 20;
/// Growth smaller than this, or than [`RELATIVE_SIGNIFICANCE`] of the start, is noise.
pub const SIGNIFICANT: u64 = 2_000_000;
pub const RELATIVE_SIGNIFICANCE: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    SteadyGrowth,
    StepGrowth,
    Stable,
    Shrinking,
}

impl Verdict {
    pub fn words(self) -> &'static str {
        match self {
            Verdict::SteadyGrowth => "steady growth",
            Verdict::StepGrowth => "step growth",
            Verdict::Stable => "stable",
            Verdict::Shrinking => "shrinking",
        }
    }
}

/// A change between two consecutive samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// Time of the sample before the change, and of the one after, in seconds.
    pub from_t: f64,
    pub t: f64,
    /// Bytes, signed.
    pub change: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub duration: f64,
    pub start: u64,
    pub end: u64,
    pub peak: u64,
    pub peak_t: f64,
    pub total_change: i64,
    /// The biggest change between two samples, up or down.
    pub largest_step: Option<Step>,
    /// Every change that counts as a step, in time order.
    pub steps: Vec<Step>,
    /// Bytes per second, steps excluded.
    pub slope: f64,
    /// The change of the curve's floor from its start to its end, in bytes.
    pub growth: i64,
    pub verdict: Verdict,
}

impl Summary {
    pub fn slope_mb_per_min(&self) -> f64 {
        self.slope * 60.0 / 1e6
    }
}

fn median(values: &mut [u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[values.len() / 2]
}

/// Least-squares slope of `ys` over `ts`; 0 when time does not vary.
fn fit_slope(ts: &[f64], ys: &[f64]) -> f64 {
    let n = ts.len() as f64;
    let t_mean = ts.iter().sum::<f64>() / n;
    let y_mean = ys.iter().sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for (t, y) in ts.iter().zip(ys) {
        cov += (t - t_mean) * (y - y_mean);
        var += (t - t_mean) * (t - t_mean);
    }
    if var > 0.0 {
        cov / var
    } else {
        0.0
    }
}

/// Summarises `(seconds, bytes)` samples in time order. `None` without samples.
pub fn summarize(samples: &[(f64, u64)]) -> Option<Summary> {
    let (&(t0, start), &(t_end, end)) = (samples.first()?, samples.last()?);
    let (peak_t, peak) = samples.iter().fold(
        (t0, start),
        |best, &(t, v)| if v > best.1 { (t, v) } else { best },
    );

    let changes: Vec<Step> = samples
        .windows(2)
        .map(|w| Step {
            from_t: w[0].0,
            t: w[1].0,
            change: w[1].1 as i64 - w[0].1 as i64,
        })
        .collect();
    let typical = median(
        &mut changes
            .iter()
            .map(|s| s.change.unsigned_abs())
            .collect::<Vec<_>>(),
    );
    let step_threshold = (4 * typical).max(STEP_FLOOR);
    let is_step = |s: &Step| s.change.unsigned_abs() >= step_threshold;
    let steps: Vec<Step> = changes.iter().copied().filter(is_step).collect();
    let largest_step = changes
        .iter()
        .copied()
        .max_by_key(|s| s.change.unsigned_abs())
        .filter(|s| s.change != 0);

    // The curve without its steps: a step's change is replaced by the usual change, which
    // keeps the trend that ran on underneath it.
    let mut usual: Vec<i64> = changes
        .iter()
        .filter(|s| !is_step(s))
        .map(|s| s.change)
        .collect();
    usual.sort_unstable();
    let fill = usual.get(usual.len() / 2).copied().unwrap_or(0) as f64;
    let mut level = start as f64;
    let mut destepped = vec![level];
    for s in &changes {
        level += if is_step(s) { fill } else { s.change as f64 };
        destepped.push(level);
    }
    let ts: Vec<f64> = samples.iter().map(|&(t, _)| t).collect();
    let slope = fit_slope(&ts, &destepped);

    let window = (samples.len() / 4).clamp(1, 5);
    let floor = |part: &[(f64, u64)]| part.iter().map(|&(_, v)| v).min().unwrap_or(0);
    let growth =
        floor(&samples[samples.len() - window..]) as i64 - floor(&samples[..window]) as i64;

    let significant = SIGNIFICANT.max((start as f64 * RELATIVE_SIGNIFICANCE) as u64) as i64;
    let steady = slope * (t_end - t0);
    let verdict = if growth >= significant {
        if steady >= growth as f64 / 2.0 {
            Verdict::SteadyGrowth
        } else {
            Verdict::StepGrowth
        }
    } else if growth <= -significant {
        Verdict::Shrinking
    } else {
        Verdict::Stable
    };

    Some(Summary {
        samples: samples.len(),
        duration: t_end - t0,
        start,
        end,
        peak,
        peak_t,
        total_change: end as i64 - start as i64,
        largest_step,
        steps,
        slope,
        growth,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn curve(values: impl IntoIterator<Item = u64>, dt: f64) -> Vec<(f64, u64)> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * dt, v))
            .collect()
    }

    #[test]
    fn one_jump_is_step_growth_at_its_time() {
        let values = (0..16).map(|i| if i < 5 { 10 * MB } else { 43 * MB } + (i % 2) * 4096);
        let s = summarize(&curve(values, 0.2)).unwrap();
        assert_eq!(s.verdict, Verdict::StepGrowth);
        let step = s.largest_step.unwrap();
        assert!((step.t - 1.0).abs() < 1e-9 && (step.from_t - 0.8).abs() < 1e-9);
        assert!(step.change > 32 * MB as i64);
        assert_eq!(s.steps.len(), 1);
        assert!(s.slope_mb_per_min().abs() < 0.1, "{}", s.slope_mb_per_min());
    }

    #[test]
    fn steady_growth_slope_ignores_a_single_jump() {
        // 2 MB per 0.2 s is 600 MB/min, with a 50 MB jump in the middle.
        let values = (0..30).map(|i| 10 * MB + i * 2 * MB + if i >= 15 { 50 * MB } else { 0 });
        let s = summarize(&curve(values, 0.2)).unwrap();
        assert_eq!(s.verdict, Verdict::SteadyGrowth);
        assert!(
            (s.slope_mb_per_min() - 600.0).abs() < 1.0,
            "{}",
            s.slope_mb_per_min()
        );
        assert_eq!(s.largest_step.unwrap().change, 52 * MB as i64);
    }

    #[test]
    fn allocate_and_free_is_stable_whatever_the_phase() {
        // Sampled mostly at the top of each cycle, ending on a top.
        let values = (0..20).map(|i| if i % 3 == 0 { 10 * MB } else { 60 * MB });
        let s = summarize(&curve(values, 0.2)).unwrap();
        assert_eq!(s.verdict, Verdict::Stable, "{s:?}");
        assert_eq!(s.peak, 60 * MB);
    }

    #[test]
    fn flat_is_stable_and_freeing_is_shrinking() {
        let flat = summarize(&curve([10 * MB; 10], 1.0)).unwrap();
        assert_eq!(flat.verdict, Verdict::Stable);
        assert_eq!(flat.largest_step, None);
        let freeing = (0..10).map(|i| if i < 4 { 80 * MB } else { 20 * MB });
        let s = summarize(&curve(freeing, 1.0)).unwrap();
        assert_eq!(s.verdict, Verdict::Shrinking);
        assert_eq!(s.total_change, -60 * MB as i64);
    }

    #[test]
    fn small_drift_is_stable() {
        let values = (0..10).map(|i| 30 * MB + i * 50_000);
        assert_eq!(
            summarize(&curve(values, 1.0)).unwrap().verdict,
            Verdict::Stable
        );
    }

    #[test]
    fn one_sample_and_none() {
        let s = summarize(&[(0.0, 5 * MB)]).unwrap();
        assert_eq!(
            (s.verdict, s.slope, s.duration),
            (Verdict::Stable, 0.0, 0.0)
        );
        assert!(summarize(&[]).is_none());
    }
}
