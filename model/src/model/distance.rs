//! Euclidean distance in standardized feature space: the one metric k-means fits by, the
//! threshold is calibrated in and windows are scored by.

use linfa_nn::distance::Distance;
use ndarray::{Array2, ArrayView, Dimension};

use super::Cluster;

#[inline]
pub(super) fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    squared_distance_unrolled(a, b)
}

pub(super) fn nearest(centroids: &Array2<f64>, x: &[f64]) -> (usize, f64) {
    centroids
        .outer_iter()
        .enumerate()
        .map(|(c, centroid)| {
            (
                c,
                squared_distance(x, centroid.as_slice().expect("contiguous")),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY))
}

pub(super) fn nearest_of(clusters: &[Cluster], x: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, cluster) in clusters.iter().enumerate() {
        let d = squared_distance(x, &cluster.centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// Euclidean distance for linfa's k-means, the same metric as its `L2Dist`. linfa measures
/// every (window, centroid) pair through this trait; `L2Dist` goes through ndarray-stats'
/// shape-checked generic iteration, while rows of a standard-layout matrix are plain slices that
/// a tight loop with independent sums (which the compiler vectorizes) walks several times
/// faster. That pair loop is nearly all of a fit's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowEuclidean;

impl Distance<f64> for RowEuclidean {
    #[inline]
    fn distance<D: Dimension>(&self, a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
        self.rdistance(a, b).sqrt()
    }

    #[inline]
    fn rdistance<D: Dimension>(&self, a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
        match (a.as_slice(), b.as_slice()) {
            (Some(a), Some(b)) => squared_distance_unrolled(a, b),
            _ => a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum(),
        }
    }

    #[inline]
    fn rdist_to_dist(&self, rdist: f64) -> f64 {
        rdist.sqrt()
    }

    #[inline]
    fn dist_to_rdist(&self, dist: f64) -> f64 {
        dist * dist
    }
}

/// Squared Euclidean distance with four independent running sums, so the additions need not
/// wait for each other (floating-point order rules forbid the compiler from doing this itself).
#[inline]
fn squared_distance_unrolled(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0.0f64; 4];
    let (a_chunks, b_chunks) = (a.chunks_exact(4), b.chunks_exact(4));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..4 {
            let d = x[lane] - y[lane];
            sums[lane] += d * d;
        }
    }
    let mut total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    for (x, y) in a_rest.iter().zip(b_rest) {
        total += (x - y) * (x - y);
    }
    total
}
