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

/// The simplified silhouette of a clustering (Hruschka et al., 2004; Vendramin et al., 2010):
/// the mean over windows of `1 - a / b`, `a` a window's distance to its nearest centroid and
/// `b` to the next nearest. 1 when every window sits on its centroid far from the others, near
/// 0 when the clusters cut one cloud. Measured against centroids rather than against every
/// other window (the silhouette's own definition), so it costs what one k-means assignment
/// costs: the daemon can measure it at every refresh. A window on two centroids at once (or
/// with fewer than two centroids) counts 0.
pub fn simplified_silhouette(centroids: &Array2<f64>, windows: &Array2<f64>) -> f64 {
    if centroids.nrows() < 2 || windows.nrows() == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for window in windows.outer_iter() {
        let x = window.as_slice().expect("rows are contiguous");
        let (mut a, mut b) = (f64::INFINITY, f64::INFINITY);
        for centroid in centroids.outer_iter() {
            let d = squared_distance(x, centroid.as_slice().expect("contiguous"));
            if d < a {
                b = a;
                a = d;
            } else if d < b {
                b = d;
            }
        }
        if b > 0.0 {
            total += 1.0 - (a / b).sqrt();
        }
    }
    total / windows.nrows() as f64
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
