//! Order, split, merge-tree and parallelism invariance of the
//! [`OrderInvariant`] observers: results must be bit-identical.

use crate::testutil::{bit_identical, Lcg};
use crate::{observe_parallel, Histogram, MinMax, Observer, OrderInvariant, TensorStats};

/// Awkward data: several scales (so the histogram grows many times), exact
/// zeros of both signs, sub-normals, huge values, NaN and infinities.
fn awkward_data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..n)
        .map(|i| match i % 97 {
            0 => -0.0,
            1 => 0.0,
            2 => f32::from_bits(1 + (rng.next_u64() % 1000) as u32),
            3 if i % 3 == 0 => f32::NAN,
            4 if i % 5 == 0 => f32::INFINITY,
            5 if i % 7 == 0 => f32::NEG_INFINITY,
            6 if i % 11 == 0 => -3.0e38,
            _ => (rng.normal() * 10f64.powi((i % 9) as i32 - 4)) as f32,
        })
        .collect()
}

/// Splits `data` into batches of random sizes (including empty ones).
fn random_batches(data: &[f32], rng: &mut Lcg) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = rng.below(rest.len().min(3000) + 1);
        let (head, tail) = rest.split_at(len);
        out.push(head.to_vec());
        rest = tail;
    }
    out
}

/// Observes each batch separately and merges the observers in a random tree.
fn random_merge_tree<O: Observer + Clone>(
    batches: &[Vec<f32>],
    make: impl Fn() -> O,
    rng: &mut Lcg,
) -> O {
    let mut pool: Vec<O> = batches
        .iter()
        .map(|b| {
            let mut o = make();
            o.observe(b);
            o
        })
        .collect();
    pool.push(make());
    while pool.len() > 1 {
        let i = rng.below(pool.len());
        let a = pool.swap_remove(i);
        let j = rng.below(pool.len());
        pool[j].merge(&a);
    }
    pool.pop().unwrap_or_else(make)
}

fn check_invariance<O>(make: impl Fn() -> O + Sync + Send + Copy) -> TensorStats
where
    O: OrderInvariant + Clone + Send,
{
    let data = awkward_data(40_000, 11);
    let mut reference = make();
    reference.observe(&data);
    let reference = reference.stats();
    let mut rng = Lcg::new(12);
    for round in 0..6 {
        let mut shuffled = data.clone();
        rng.shuffle(&mut shuffled);
        let batches = random_batches(&shuffled, &mut rng);

        let mut sequential = make();
        for b in &batches {
            sequential.observe(b);
        }
        assert!(
            bit_identical(&sequential.stats(), &reference),
            "sequential, round {round}"
        );

        let tree = random_merge_tree(&batches, make, &mut rng);
        assert!(
            bit_identical(&tree.stats(), &reference),
            "merge tree, round {round}"
        );

        let parallel = observe_parallel(&batches, make);
        assert!(
            bit_identical(&parallel.stats(), &reference),
            "parallel, round {round}"
        );
    }
    // One value per batch, in reverse order.
    let singles: Vec<[f32; 1]> = data.iter().rev().map(|&x| [x]).collect();
    let parallel = observe_parallel(&singles, make);
    assert!(
        bit_identical(&parallel.stats(), &reference),
        "parallel singles"
    );
    reference
}

#[test]
fn histogram_is_order_invariant() {
    let stats = check_invariance(Histogram::new);
    assert_eq!(stats.min, -3.0e38);
    assert!(stats.has_nonfinite());
    assert_eq!(stats.count + stats.nonfinite.total(), 40_000);
}

#[test]
fn small_histogram_is_order_invariant() {
    // Few bins: growth merges many bins at once.
    let stats = check_invariance(|| Histogram::with_bins(16).unwrap_or_default());
    assert_eq!(stats.histogram.map(|h| h.bins.len()), Some(16));
}

#[test]
fn minmax_is_order_invariant() {
    let stats = check_invariance(MinMax::new);
    assert_eq!((stats.min, stats.max.is_finite()), (-3.0e38, true));
}

#[test]
fn histogram_without_huge_values_is_order_invariant() {
    // Without the -3e38 values the range stays small and the bins are fine,
    // which exercises growth over many octaves.
    let data: Vec<f32> = awkward_data(40_000, 21)
        .into_iter()
        .filter(|x| x.abs() < 1e30)
        .collect();
    let mut reference = Histogram::new();
    reference.observe(&data);
    let mut rng = Lcg::new(22);
    for _ in 0..4 {
        let mut shuffled = data.clone();
        rng.shuffle(&mut shuffled);
        let batches = random_batches(&shuffled, &mut rng);
        let parallel = observe_parallel(&batches, Histogram::new);
        assert_eq!(parallel, reference);
        let tree = random_merge_tree(&batches, Histogram::new, &mut rng);
        assert_eq!(tree, reference);
    }
}
