//! Patterns measured against a baseline route in turns, round after round.
//!
//! On a machine whose speed moves while it runs (a shared host, a CPU that
//! steps its clock), a pattern measured a minute after its baseline is in
//! effect measured on another machine: one run of the demo on a 2-core
//! cloud host saw `/ping` itself move from 22,000 to 36,000 req/s between
//! runs two minutes apart. Each round here measures the baseline and then
//! every pattern for one short turn, and a pattern's ratio is the median of
//! its rounds' ratios, each taken against the baseline of its own round, so
//! that a step of the machine moves both sides of a ratio or only one round.

use serde_json::{Value, json};

use super::{BenchConfig, BenchError, BenchReport, run};

/// A pattern's turns, each beside the baseline measured in the same round.
#[derive(Debug)]
pub struct Compared {
    /// Every turn of the pattern together: requests, statuses and latencies.
    pub report: BenchReport,
    /// Each round's req/s over the same round's baseline req/s.
    pub throughput_ratios: Vec<f64>,
    /// Each round's p99 latency over the same round's baseline p99.
    pub p99_ratios: Vec<f64>,
}

impl Compared {
    /// The pattern's req/s as a share of the baseline's: the median round.
    pub fn throughput_ratio(&self) -> f64 {
        median(&self.throughput_ratios)
    }

    /// The pattern's p99 as a multiple of the baseline's: the median round.
    pub fn p99_ratio(&self) -> f64 {
        median(&self.p99_ratios)
    }

    /// The table row's note: the ratios, and their spread over the rounds.
    pub fn summary(&self) -> String {
        let spread = |ratios: &[f64]| {
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{low:.2}–{high:.2}")
        };
        if self.throughput_ratios.len() < 2 {
            return format!(
                "{:.2} of baseline, p99 {:.2}× baseline's",
                self.throughput_ratio(),
                self.p99_ratio()
            );
        }
        format!(
            "{:.2} of baseline ({}), p99 {:.2}× baseline's ({}): medians of {} rounds",
            self.throughput_ratio(),
            spread(&self.throughput_ratios),
            self.p99_ratio(),
            spread(&self.p99_ratios),
            self.throughput_ratios.len()
        )
    }

    /// The report's JSON with the ratios and every round's.
    pub fn to_json(&self) -> Value {
        let mut value = self.report.to_json();
        if let Value::Object(fields) = &mut value {
            fields.insert("ratio_of_baseline".into(), json!(self.throughput_ratio()));
            fields.insert("p99_ratio_of_baseline".into(), json!(self.p99_ratio()));
            let rounds: Vec<Value> = self
                .throughput_ratios
                .iter()
                .zip(&self.p99_ratios)
                .map(|(throughput, p99)| {
                    json!({"ratio_of_baseline": throughput, "p99_ratio_of_baseline": p99})
                })
                .collect();
            fields.insert("rounds".into(), Value::Array(rounds));
        }
        value
    }
}

/// Measures `baseline` and then each of `patterns` for one turn each,
/// `rounds` times over; the baseline's turns together, and each pattern's.
/// Each turn is a whole [`run`]. The first round's turns warm up as their
/// configs say (the first turn of a pattern may load its models); a later
/// turn, whose models are loaded, for at most a quarter of its measurement,
/// enough for the connections to fill again.
pub async fn in_rounds(
    baseline: &BenchConfig,
    patterns: &[BenchConfig],
    rounds: usize,
) -> Result<(BenchReport, Vec<Compared>), BenchError> {
    let turn_of = |config: &BenchConfig, round: usize| {
        let mut config = config.clone();
        if round > 0 {
            config.warmup = config.warmup.min(config.duration / 4);
        }
        config
    };
    // Each round's baseline, and each pattern's turns with that round's ratios.
    let mut base_turns = Vec::with_capacity(rounds);
    let mut turns: Vec<Vec<(BenchReport, f64, f64)>> =
        patterns.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let base = run(&turn_of(baseline, round)).await?;
        for (config, its_turns) in patterns.iter().zip(&mut turns) {
            let turn = run(&turn_of(config, round)).await?;
            let throughput_ratio = turn.throughput() / base.throughput().max(f64::EPSILON);
            let p99_ratio = turn.percentile_ms(0.99) / base.percentile_ms(0.99).max(f64::EPSILON);
            its_turns.push((turn, throughput_ratio, p99_ratio));
        }
        base_turns.push(base);
    }
    let no_round = || BenchError::Config("--rounds must be at least 1".into());
    let base = together(base_turns).ok_or_else(no_round)?;
    let compared = turns
        .into_iter()
        .map(|its_turns| {
            let (reports, (throughput_ratios, p99_ratios)): (Vec<_>, (Vec<_>, Vec<_>)) = its_turns
                .into_iter()
                .map(|(report, throughput, p99)| (report, (throughput, p99)))
                .unzip();
            let report = together(reports).ok_or_else(no_round)?;
            Ok(Compared {
                report,
                throughput_ratios,
                p99_ratios,
            })
        })
        .collect::<Result<_, BenchError>>()?;
    Ok((base, compared))
}

/// Turns of one pattern as one report; `None` for no turn.
fn together(turns: Vec<BenchReport>) -> Option<BenchReport> {
    turns.into_iter().reduce(|mut total, turn| {
        total.absorb(turn);
        total
    })
}

/// The middle value; the mean of the two middle ones for an even count.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_round() {
        assert_eq!(median(&[0.9, 0.2, 0.5]), 0.5);
        assert_eq!(median(&[0.9, 0.2, 0.5, 0.7]), 0.6);
        assert_eq!(median(&[1.5]), 1.5);
        assert!(median(&[]).is_nan());
    }
}
