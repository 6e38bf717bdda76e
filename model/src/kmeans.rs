//! The k-means initialisations of [`crate::Model::train`]: greedy k-means++ seeding and Lloyd
//! iterations with Hamerly's bounds, every initialisation on its own thread. The best run's
//! centroids then go to linfa-clustering, which finishes the fit (see `fit_kmeans` in
//! `model/train.rs`).
//!
//! Every run gives exactly what plain Lloyd iterations from its seeding would give: Hamerly's
//! bounds only skip distance computations whose result cannot change a window's nearest
//! centroid. Run `i` draws from the seeded generator jumped `i` times, and runs share no state,
//! so the result depends on data, settings and seed only, never on the number of threads.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

use ndarray::Array2;
use rand_xoshiro::{
    Xoshiro256Plus,
    rand_core::{RngCore, SeedableRng},
};

/// What every run is given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub k: usize,
    pub runs: usize,
    pub max_iterations: u64,
    /// A run stops when the squared norm of the centroids' move (all centroids together) is at
    /// most this: scikit-learn's rule, `tol` times the mean feature variance.
    pub shift_tolerance: f64,
    pub seed: u64,
    /// Threads to spread the runs over; 0 = the machine's available parallelism.
    pub threads: usize,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    /// `k` rows of `dims` values, row-major.
    pub centroids: Vec<f64>,
    /// Mean squared distance of a window to its nearest centroid.
    pub inertia: f64,
    /// Lloyd iterations done (an assignment and a centroid update each).
    pub iterations: u64,
}

/// Relative slack on Hamerly's bound test: bounds carry the rounding of many additions, so a
/// window whose bounds nearly touch is measured rather than trusted.
const BOUND_SLACK: f64 = 1e-9;

/// Runs every initialisation (in parallel when `threads` allows) and returns the run with the
/// lowest inertia, the lowest run index on ties. `progress(done, runs)` is called on the
/// calling thread after each run.
pub(crate) fn best_run(
    data: &Array2<f64>,
    settings: &Settings,
    progress: &mut impl FnMut(usize, usize),
) -> Run {
    let runs = settings.runs.max(1);
    let contiguous = data.as_standard_layout();
    let rows = contiguous
        .as_slice()
        .expect("standard layout is contiguous");
    let dims = data.ncols();
    let mut generator = Xoshiro256Plus::seed_from_u64(settings.seed);
    let generators: Vec<Xoshiro256Plus> = (0..runs)
        .map(|_| {
            let this = generator.clone();
            generator.jump();
            this
        })
        .collect();
    let simd = Simd::detect();
    let one = |run: usize| {
        let mut rng = generators[run].clone();
        simd.run(rows, dims, settings, &mut rng)
    };

    let threads = match settings.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(runs);
    let mut results: Vec<Option<Run>> = vec![None; runs];
    if threads <= 1 {
        for (run, slot) in results.iter_mut().enumerate() {
            *slot = Some(one(run));
            progress(run + 1, runs);
        }
    } else {
        let next = AtomicUsize::new(0);
        let (sender, receiver) = mpsc::channel();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let sender = sender.clone();
                let (next, one) = (&next, &one);
                scope.spawn(move || {
                    loop {
                        let run = next.fetch_add(1, Ordering::Relaxed);
                        if run >= runs || sender.send((run, one(run))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(sender);
            for (done, (run, result)) in receiver.iter().enumerate() {
                results[run] = Some(result);
                progress(done + 1, runs);
            }
        });
    }
    results
        .into_iter()
        .map(|run| run.expect("every run reports"))
        .reduce(|best, run| {
            if run.inertia < best.inertia {
                run
            } else {
                best
            }
        })
        .expect("at least one run")
}

/// The instruction set the runs are compiled for. With AVX2 the same operations run four
/// doubles at a time; no fused multiply-add is enabled, so every sum is rounded exactly as
/// without it and the results are bit for bit the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Simd {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2;
        }
        Self::Baseline
    }

    pub(crate) fn run(
        self,
        rows: &[f64],
        dims: usize,
        settings: &Settings,
        rng: &mut Xoshiro256Plus,
    ) -> Run {
        match self {
            Self::Baseline => run(rows, dims, settings, rng),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only constructed after `is_x86_feature_detected!("avx2")`.
            Self::Avx2 => unsafe { run_avx2(rows, dims, settings, rng) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(rows: &[f64], dims: usize, settings: &Settings, rng: &mut Xoshiro256Plus) -> Run {
    run(rows, dims, settings, rng)
}

/// One initialisation: greedy k-means++ seeding, then Lloyd iterations.
#[inline(always)]
fn run(rows: &[f64], dims: usize, settings: &Settings, rng: &mut Xoshiro256Plus) -> Run {
    let seeding = greedy_kmeans_plus_plus(rows, dims, settings.k, rng);
    lloyd(rows, dims, seeding, settings)
}

/// Centroids laid out for [`Blocks::distances`]: blocks of four centroids, dimension-major
/// within a block (`[block][dim][lane]`), so one window is compared with four centroids at a
/// time without horizontal sums. Lanes past `k` hold zeros and are never read.
struct Blocks {
    dims: usize,
    k: usize,
    values: Vec<f64>,
}

impl Blocks {
    fn new(dims: usize, k: usize) -> Self {
        Self {
            dims,
            k,
            values: vec![0.0; k.div_ceil(4) * 4 * dims],
        }
    }

    /// Loads `k` row-major centroids.
    #[inline(always)]
    fn load(&mut self, centroids: &[f64]) {
        for (c, centroid) in centroids.chunks_exact(self.dims).enumerate() {
            let block = &mut self.values[(c / 4) * 4 * self.dims..][..4 * self.dims];
            for (d, &value) in centroid.iter().enumerate() {
                block[d * 4 + c % 4] = value;
            }
        }
    }

    /// Squared distances from `x` to every centroid into `out[..k]` (`out` holds a multiple
    /// of four). Four independent sums per lane (dimensions taken four at a time) keep the
    /// additions from waiting on each other.
    #[inline(always)]
    fn distances(&self, x: &[f64], out: &mut [f64]) {
        let dims = self.dims;
        let whole = dims - dims % 4;
        let (x_chunks, x_rest) = x.as_chunks::<4>();
        for (block, out) in self
            .values
            .chunks_exact(4 * dims)
            .zip(out.chunks_exact_mut(4))
        {
            let (c_chunks, c_rest) = block.as_chunks::<16>();
            let mut sums = [[0.0f64; 4]; 4];
            for (x, c) in x_chunks.iter().zip(c_chunks) {
                for part in 0..4 {
                    for lane in 0..4 {
                        let d = x[part] - c[part * 4 + lane];
                        sums[part][lane] += d * d;
                    }
                }
            }
            debug_assert_eq!(c_rest.len(), 4 * (dims - whole));
            for (&x, c) in x_rest.iter().zip(c_rest.chunks_exact(4)) {
                for lane in 0..4 {
                    let d = x - c[lane];
                    sums[0][lane] += d * d;
                }
            }
            for (lane, out) in out.iter_mut().enumerate() {
                *out = (sums[0][lane] + sums[1][lane]) + (sums[2][lane] + sums[3][lane]);
            }
        }
    }

    /// Nearest centroid and the two smallest squared distances.
    #[inline(always)]
    fn nearest_two(&self, x: &[f64], scratch: &mut [f64]) -> (usize, f64, f64) {
        self.distances(x, scratch);
        let (mut best, mut first, mut second) = (0, f64::INFINITY, f64::INFINITY);
        for (c, &d) in scratch[..self.k].iter().enumerate() {
            if d < first {
                (best, first, second) = (c, d, first);
            } else if d < second {
                second = d;
            }
        }
        (best, first, second)
    }
}

/// Squared distance, summed exactly as one lane of [`Blocks::distances`] sums it (so both
/// give the same bits for the same pair).
#[inline(always)]
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let (a_chunks, a_rest) = a.as_chunks::<4>();
    let (b_chunks, b_rest) = b.as_chunks::<4>();
    let mut sums = [0.0f64; 4];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for part in 0..4 {
            let d = x[part] - y[part];
            sums[part] += d * d;
        }
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        sums[0] += (x - y) * (x - y);
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3])
}

/// Uniform in [0, 1).
fn uniform(rng: &mut Xoshiro256Plus) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in 0..n.
fn below(rng: &mut Xoshiro256Plus, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Initial centroids, with what measuring every window against them gives: its nearest
/// centroid and the two smallest squared distances.
struct Seeding {
    centroids: Vec<f64>,
    labels: Vec<usize>,
    first: Vec<f64>,
    second: Vec<f64>,
}

/// Greedy k-means++ (scikit-learn's seeding): the first centroid is a uniformly drawn window;
/// each next one is the best, by the resulting sum of squared distances, of `2 + ln k`
/// candidates drawn with probability proportional to their squared distance to the nearest
/// centroid so far. The distances it measures are those of a first assignment, which it keeps.
#[inline(always)]
fn greedy_kmeans_plus_plus(
    rows: &[f64],
    dims: usize,
    k: usize,
    rng: &mut Xoshiro256Plus,
) -> Seeding {
    let n = rows.len() / dims;
    let row = |i: usize| &rows[i * dims..(i + 1) * dims];
    let trials = 2 + (k as f64).ln() as usize;
    let first_centroid = row(below(rng, n));
    let mut seeding = Seeding {
        centroids: first_centroid.to_vec(),
        labels: vec![0; n],
        first: (0..n)
            .map(|i| squared_distance(row(i), first_centroid))
            .collect(),
        second: vec![f64::INFINITY; n],
    };
    let mut cumulative = vec![0.0; n];
    let mut candidate_distances = vec![0.0; trials * n];
    let mut candidates = Vec::with_capacity(trials);
    let mut loaded = vec![0.0; trials * dims];
    let mut blocks = Blocks::new(dims, trials);
    let mut scratch = vec![0.0; trials.div_ceil(4) * 4];
    for c in 1..k {
        let mut total = 0.0;
        for (sum, d) in cumulative.iter_mut().zip(&seeding.first) {
            total += d;
            *sum = total;
        }
        candidates.clear();
        for _ in 0..trials {
            let target = uniform(rng) * total;
            candidates.push(cumulative.partition_point(|&s| s <= target).min(n - 1));
        }
        for (slot, &candidate) in loaded.chunks_exact_mut(dims).zip(&candidates) {
            slot.copy_from_slice(row(candidate));
        }
        blocks.load(&loaded);
        let mut potentials = vec![0.0; trials];
        for (i, &nearest) in seeding.first.iter().enumerate() {
            blocks.distances(row(i), &mut scratch);
            for (t, potential) in potentials.iter_mut().enumerate() {
                candidate_distances[t * n + i] = scratch[t];
                *potential += scratch[t].min(nearest);
            }
        }
        let mut best = 0;
        for t in 1..trials {
            if potentials[t] < potentials[best] {
                best = t;
            }
        }
        seeding.centroids.extend_from_slice(row(candidates[best]));
        // The same updates, in centroid order, as measuring every window against all the
        // centroids at once (ties go to the lower index either way).
        for (i, &d) in candidate_distances[best * n..(best + 1) * n]
            .iter()
            .enumerate()
        {
            if d < seeding.first[i] {
                seeding.second[i] = seeding.first[i];
                seeding.first[i] = d;
                seeding.labels[i] = c;
            } else if d < seeding.second[i] {
                seeding.second[i] = d;
            }
        }
    }
    seeding
}

/// Lloyd iterations from the seeding with Hamerly's bounds: per window an upper bound on the
/// distance to its centroid and a lower bound on the distance to any other. When the upper
/// bound is below both the lower bound and half the distance from its centroid to the nearest
/// other centroid, no other centroid can be nearer, and the window is not measured. Stops when
/// the centroids' move is within the tolerance, when no window changes cluster (the centroids
/// would not move), or after `max_iterations`; then, as scikit-learn does, assigns the windows
/// to the final centroids for the inertia.
#[inline(always)]
fn lloyd(rows: &[f64], dims: usize, seeding: Seeding, settings: &Settings) -> Run {
    let n = rows.len() / dims;
    let k = settings.k;
    let row = |i: usize| &rows[i * dims..(i + 1) * dims];
    let Seeding {
        mut centroids,
        mut labels,
        first,
        second,
    } = seeding;
    let mut bounds = Bounds {
        upper: first.into_iter().map(f64::sqrt).collect(),
        lower: second.into_iter().map(f64::sqrt).collect(),
        half_gap: vec![0.0; k],
        blocks: Blocks::new(dims, k),
        scratch: vec![0.0; k.div_ceil(4) * 4],
    };
    let mut sums = vec![0.0f64; k * dims];
    let mut counts = vec![0usize; k];
    let mut moved = vec![0.0f64; k];
    for (i, &label) in labels.iter().enumerate() {
        counts[label] += 1;
        for (sum, x) in sums[label * dims..(label + 1) * dims]
            .iter_mut()
            .zip(row(i))
        {
            *sum += x;
        }
    }

    let mut iterations = 0;
    loop {
        iterations += 1;
        // Centroid update: the mean of each cluster's windows (an empty cluster keeps its
        // centroid).
        let mut shift = 0.0;
        for c in 0..k {
            let centroid = &mut centroids[c * dims..(c + 1) * dims];
            if counts[c] == 0 {
                moved[c] = 0.0;
                continue;
            }
            let count = counts[c] as f64;
            let mut squared = 0.0;
            for (value, sum) in centroid.iter_mut().zip(&sums[c * dims..(c + 1) * dims]) {
                let mean = sum / count;
                squared += (mean - *value) * (mean - *value);
                *value = mean;
            }
            moved[c] = squared.sqrt();
            shift += squared;
        }
        if shift <= settings.shift_tolerance || iterations >= settings.max_iterations {
            // The windows' clusters for the final centroids.
            bounds.assign(
                rows,
                &centroids,
                &moved,
                &mut labels,
                &mut sums,
                &mut counts,
            );
            break;
        }
        if !bounds.assign(
            rows,
            &centroids,
            &moved,
            &mut labels,
            &mut sums,
            &mut counts,
        ) {
            // No window changed cluster: the centroids are the means of their windows.
            break;
        }
    }

    let inertia: f64 = labels
        .iter()
        .enumerate()
        .map(|(i, &label)| squared_distance(row(i), &centroids[label * dims..(label + 1) * dims]))
        .sum();
    Run {
        centroids,
        inertia: inertia / n as f64,
        iterations,
    }
}

/// Hamerly's bounds of every window, and what measuring needs.
struct Bounds {
    /// At least the distance from each window to its centroid.
    upper: Vec<f64>,
    /// At most the distance from each window to any other centroid.
    lower: Vec<f64>,
    /// Per centroid, half the distance to the nearest other one.
    half_gap: Vec<f64>,
    blocks: Blocks,
    scratch: Vec<f64>,
}

impl Bounds {
    /// Moves the bounds by the centroids' last move, then measures the windows whose bounds
    /// allow a change of cluster; the sums and counts follow the windows that change (rather
    /// than being summed anew, which would read every window). Whether any window changed.
    #[inline(always)]
    fn assign(
        &mut self,
        rows: &[f64],
        centroids: &[f64],
        moved: &[f64],
        labels: &mut [usize],
        sums: &mut [f64],
        counts: &mut [usize],
    ) -> bool {
        let k = moved.len();
        let dims = centroids.len() / k;
        let centroid = |c: usize| &centroids[c * dims..(c + 1) * dims];
        let (mut most, mut most_at, mut next_most) = (0.0, 0, 0.0);
        for (c, &m) in moved.iter().enumerate() {
            if m > most {
                (next_most, most, most_at) = (most, m, c);
            } else if m > next_most {
                next_most = m;
            }
        }
        for c in 0..k {
            let mut nearest = f64::INFINITY;
            for other in (0..k).filter(|&o| o != c) {
                nearest = nearest.min(squared_distance(centroid(c), centroid(other)));
            }
            self.half_gap[c] = 0.5 * nearest.sqrt();
        }
        self.blocks.load(centroids);
        let mut changed = false;
        for (i, x) in rows.chunks_exact(dims).enumerate() {
            let label = labels[i];
            self.upper[i] += moved[label];
            self.lower[i] -= if label == most_at { next_most } else { most };
            let bound = self.half_gap[label].max(self.lower[i]) * (1.0 - BOUND_SLACK);
            if self.upper[i] <= bound {
                continue;
            }
            self.upper[i] = squared_distance(x, centroid(label)).sqrt() * (1.0 + BOUND_SLACK);
            if self.upper[i] <= bound {
                continue;
            }
            let (best, first, second) = self.blocks.nearest_two(x, &mut self.scratch);
            self.upper[i] = first.sqrt();
            self.lower[i] = second.sqrt();
            if best != label {
                changed = true;
                labels[i] = best;
                counts[label] -= 1;
                counts[best] += 1;
                for (d, value) in x.iter().enumerate() {
                    sums[label * dims + d] -= value;
                    sums[best * dims + d] += value;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, dims: usize, centres: usize) -> Array2<f64> {
        let mut rng = Xoshiro256Plus::seed_from_u64(3);
        let centre_values: Vec<f64> = (0..centres * dims)
            .map(|_| 8.0 * uniform(&mut rng) - 4.0)
            .collect();
        Array2::from_shape_fn((n, dims), |(i, d)| {
            centre_values[(i % centres) * dims + d] + uniform(&mut rng) - 0.5
        })
    }

    fn settings(k: usize, threads: usize) -> Settings {
        Settings {
            k,
            runs: 7,
            max_iterations: 300,
            shift_tolerance: 1e-4,
            seed: 11,
            threads,
        }
    }

    #[test]
    fn block_distances_are_the_plain_ones() {
        for dims in [1, 3, 4, 7, 16, 17] {
            for k in [1, 3, 4, 5, 9] {
                let data = blobs(k + 5, dims, 2);
                let rows = data.as_slice().unwrap();
                let mut blocks = Blocks::new(dims, k);
                blocks.load(&rows[..k * dims]);
                let mut out = vec![f64::NAN; k.div_ceil(4) * 4];
                for x in rows.chunks_exact(dims) {
                    blocks.distances(x, &mut out);
                    for (c, centroid) in rows[..k * dims].chunks_exact(dims).enumerate() {
                        assert_eq!(out[c], squared_distance(x, centroid));
                    }
                }
            }
        }
    }

    /// Hamerly's bounds skip work, never change the outcome: a run equals plain Lloyd
    /// iterations (every window measured, every mean summed anew, every time) from the same
    /// seeding, up to the rounding of the running sums.
    #[test]
    fn bounds_change_nothing() {
        let data = blobs(600, 5, 6);
        let rows = data.as_slice().unwrap();
        let settings = settings(6, 1);
        let mut rng = Xoshiro256Plus::seed_from_u64(5);
        let seeding = greedy_kmeans_plus_plus(rows, 5, 6, &mut rng);
        let mut centroids = seeding.centroids.clone();
        let run = lloyd(rows, 5, seeding, &settings);

        let mut blocks = Blocks::new(5, 6);
        let mut scratch = vec![0.0; 8];
        let mut labels: Vec<usize> = Vec::new();
        for iteration in 1.. {
            blocks.load(&centroids);
            let new_labels: Vec<usize> = rows
                .chunks_exact(5)
                .map(|x| blocks.nearest_two(x, &mut scratch).0)
                .collect();
            if new_labels == labels {
                assert_eq!(run.iterations, iteration - 1);
                break;
            }
            labels = new_labels;
            let mut next = vec![0.0; 30];
            let mut counts = [0usize; 6];
            for (x, &label) in rows.chunks_exact(5).zip(&labels) {
                counts[label] += 1;
                for (sum, v) in next[label * 5..label * 5 + 5].iter_mut().zip(x) {
                    *sum += v;
                }
            }
            let mut shift = 0.0;
            for c in 0..6 {
                for d in 0..5 {
                    let mean = next[c * 5 + d] / counts[c] as f64;
                    shift += (mean - centroids[c * 5 + d]).powi(2);
                    centroids[c * 5 + d] = mean;
                }
            }
            if shift <= settings.shift_tolerance {
                assert_eq!(run.iterations, iteration);
                break;
            }
        }
        for (a, b) in run.centroids.iter().zip(&centroids) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn the_result_does_not_depend_on_threads_or_instruction_set() {
        let data = blobs(2000, 9, 5);
        let reference = best_run(&data, &settings(5, 1), &mut |_, _| {});
        for threads in [2, 3, 8] {
            let mut reports = Vec::new();
            let run = best_run(&data, &settings(5, threads), &mut |done, runs| {
                reports.push((done, runs))
            });
            assert_eq!(run, reference, "{threads} threads");
            assert_eq!(reports, (1..=7).map(|done| (done, 7)).collect::<Vec<_>>());
        }
        let rows = data.as_slice().unwrap();
        let mut a = Xoshiro256Plus::seed_from_u64(1);
        let mut b = a.clone();
        assert_eq!(
            Simd::Baseline.run(rows, 9, &settings(5, 1), &mut a),
            Simd::detect().run(rows, 9, &settings(5, 1), &mut b)
        );
    }
}
