//! How requests spread over the models: the SageMaker blog's three traffic
//! patterns, and custom weights.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// A traffic pattern: relative weights for the first models, and one
/// weight for all the other models together, spread uniformly over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    label: String,
    head: Vec<f64>,
    rest: f64,
}

impl Pattern {
    /// Uniform over every model.
    pub fn even() -> Self {
        Pattern {
            label: "even".into(),
            head: Vec::new(),
            rest: 1.0,
        }
    }

    /// 90% to model 0, the rest uniform over the others.
    pub fn hot() -> Self {
        Pattern {
            label: "hot".into(),
            head: vec![0.9],
            rest: 0.1,
        }
    }

    /// 90% to the first 10 models, the rest uniform over the others.
    pub fn few_hot() -> Self {
        Pattern {
            label: "few-hot".into(),
            head: vec![0.09; 10],
            rest: 0.1,
        }
    }

    /// The share of requests model `index` of `models` gets.
    pub fn share(&self, index: usize, models: usize) -> f64 {
        let head = self.head.len().min(models);
        let rest = if models > head { self.rest } else { 0.0 };
        let total: f64 = self.head[..head].iter().sum::<f64>() + rest;
        if total <= 0.0 {
            return 1.0 / models.max(1) as f64;
        }
        match self.head.get(index) {
            Some(weight) if index < head => weight / total,
            _ => rest / total / (models - head).max(1) as f64,
        }
    }

    /// Draws the index of the next model out of `models`.
    pub fn pick(&self, rng: &mut impl Rng, models: usize) -> usize {
        let models = models.max(1);
        let head = self.head.len().min(models);
        let rest = if models > head { self.rest } else { 0.0 };
        let total: f64 = self.head[..head].iter().sum::<f64>() + rest;
        if total <= 0.0 {
            return rng.random_range(0..models);
        }
        let mut draw = rng.random_range(0.0..total);
        for (index, weight) in self.head[..head].iter().enumerate() {
            if draw < *weight {
                return index;
            }
            draw -= weight;
        }
        rng.random_range(head..models)
    }
}

impl FromStr for Pattern {
    type Err = String;

    /// `even`, `hot`, `few-hot`, or `weights:W0,W1,…[,rest=W]`: relative
    /// weights of models 0, 1, …, and of all the others together (0 when
    /// `rest` is not given).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "even" => return Ok(Pattern::even()),
            "hot" => return Ok(Pattern::hot()),
            "few-hot" => return Ok(Pattern::few_hot()),
            _ => {}
        }
        let Some(list) = text.strip_prefix("weights:") else {
            return Err(format!(
                "unknown pattern {text:?}: use even, hot, few-hot or weights:W0,W1,…[,rest=W]"
            ));
        };
        let weight = |item: &str| -> Result<f64, String> {
            item.trim()
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| format!("{item:?} in {text:?} is not a weight (a number ≥ 0)"))
        };
        let mut head = Vec::new();
        let mut rest = 0.0;
        for item in list.split(',') {
            match item.trim().strip_prefix("rest=") {
                Some(value) => rest = weight(value)?,
                None => head.push(weight(item)?),
            }
        }
        if head.iter().sum::<f64>() + rest <= 0.0 {
            return Err(format!("{text:?}: the weights add up to 0"));
        }
        Ok(Pattern {
            label: text.to_string(),
            head,
            rest,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn counts(pattern: &Pattern, models: usize, draws: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; models];
        for _ in 0..draws {
            counts[pattern.pick(&mut rng, models)] += 1;
        }
        counts
    }

    #[test]
    fn hot_sends_ninety_percent_to_model_zero() {
        let counts = counts(&Pattern::hot(), 100, 100_000);
        let hot = counts[0] as f64 / 100_000.0;
        assert!((hot - 0.9).abs() < 0.01, "{hot}");
        assert!(counts[1..].iter().all(|&c| c > 0));
    }

    #[test]
    fn few_hot_sends_ninety_percent_to_the_first_ten() {
        let counts = counts(&Pattern::few_hot(), 100, 100_000);
        let hot: usize = counts[..10].iter().sum();
        assert!((hot as f64 / 100_000.0 - 0.9).abs() < 0.01);
    }

    #[test]
    fn even_is_uniform_and_small_model_counts_work() {
        let counts_even = counts(&Pattern::even(), 10, 100_000);
        assert!(
            counts_even.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts_even:?}"
        );
        assert_eq!(counts(&Pattern::hot(), 1, 10), vec![10]);
        assert_eq!(counts(&Pattern::few_hot(), 5, 10).iter().sum::<usize>(), 10);
    }

    #[test]
    fn custom_weights_are_followed_and_shares_add_up() {
        let pattern: Pattern = "weights:5,3,rest=2".parse().unwrap();
        let drawn = counts(&pattern, 12, 100_000);
        for (index, &count) in drawn.iter().enumerate() {
            let share = pattern.share(index, 12);
            assert!(
                (count as f64 / 100_000.0 - share).abs() < 0.01,
                "model {index}"
            );
        }
        assert!((pattern.share(0, 12) - 0.5).abs() < 1e-12);
        assert!((pattern.share(5, 12) - 0.02).abs() < 1e-12);
        let total: f64 = (0..12).map(|i| pattern.share(i, 12)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let only_two: Pattern = "weights:1,1".parse().unwrap();
        assert!(counts(&only_two, 10, 1000)[2..].iter().all(|&c| c == 0));
    }

    #[test]
    fn patterns_parse_print_and_refuse_nonsense() {
        for name in ["even", "hot", "few-hot", "weights:1,2,rest=3"] {
            assert_eq!(name.parse::<Pattern>().unwrap().to_string(), name);
        }
        for bad in [
            "lukewarm",
            "weights:",
            "weights:a",
            "weights:-1",
            "weights:0,rest=0",
            "weights:NaN",
        ] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
    }
}
