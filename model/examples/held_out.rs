//! How often a static model's threshold passes on healthy windows it never saw: trained (with
//! `model train`'s defaults) on the training parts of a synthetic set's seeds 11, 12 and 13,
//! judged on the training parts of seeds 100-119 (60,000 windows). No test label is read. For
//! the sets whose training parts are healthy (all but `contaminated`, which hides incidents
//! there), every window over the threshold is a false alarm; two in a row page.
//!
//! `cargo run --release -p model --example held_out -- heavy-tails`

use model::{
    HealthState, Model, TrainOptions,
    synthetic::{SyntheticSet, synthetic_set},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "heavy-tails".into());
    let set = SyntheticSet::from_name(&name).ok_or_else(|| format!("no synthetic set `{name}`"))?;
    let dir = tempfile::tempdir()?;
    let table = |seed: u64| -> Result<model::Table, Box<dyn std::error::Error>> {
        let path = dir.path().join(format!("train-{seed}.csv"));
        std::fs::write(&path, synthetic_set(set, seed).train_csv)?;
        Ok(model::read_table(&path)?)
    };
    let held_out = (100..120).map(table).collect::<Result<Vec<_>, _>>()?;
    for seed in [11, 12, 13] {
        let model = Model::train(&table(seed)?, &TrainOptions::default())?;
        let (mut windows, mut over, mut pages) = (0, 0, 0);
        for part in &held_out {
            let flags: Vec<bool> = model
                .score_table(part)?
                .iter()
                .map(|a| a.state == HealthState::Degraded)
                .collect();
            windows += flags.len();
            over += flags.iter().filter(|f| **f).count();
            pages += flags.windows(2).filter(|w| w[0] && w[1]).count();
        }
        println!(
            "{name} seed {seed}: threshold {:.1} ({:?}): {over} of {windows} held-out windows \
             over ({:.1e} a window), {pages} of them two in a row",
            model.threshold.value,
            model.threshold.tail,
            over as f64 / windows as f64
        );
    }
    Ok(())
}
