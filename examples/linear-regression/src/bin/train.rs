//! Fits the blog's model natively and writes it for the guest: 100 noisy
//! points of y = 2x + 1, one feature, a fixed seed, so every build is the same.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use linfa::Dataset;
use linfa::traits::Fit;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Points in the training set, as in the blog.
const SAMPLES: usize = 100;
/// Half-width of the uniform noise added to y.
const NOISE: f64 = 0.1;

#[derive(Parser)]
#[command(about = "Fit y = 2x + 1 with linfa and write model.bin")]
struct Args {
    /// Folder to write `model.bin` into.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random points.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let x: Vec<f64> = (0..SAMPLES).map(|_| rng.r#gen::<f64>()).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|x| 2.0 * x + 1.0 + rng.gen_range(-NOISE..NOISE))
        .collect();
    let dataset = Dataset::new(Array2::from_shape_vec((SAMPLES, 1), x)?, Array1::from(y));
    let fitted = LinearRegression::new().fit(&dataset)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join("model.bin");
    let bytes = bincode::serde::encode_to_vec(&fitted, bincode::config::standard())?;
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "fitted y = {:.4}x + {:.4}; wrote {}",
        fitted.params()[0],
        fitted.intercept(),
        path.display()
    );
    Ok(())
}
