//! Inputs the benchmarks share: embedding row ids drawn as `../shared/bench/fbgemm` draws them, and the size of
//! the cache a measurement must flush.

use rand::Rng;

/// `n` row ids of a `rows`-row table: Zipf(`alpha`) ranks mapped through a random permutation of the rows (as
/// `../shared/bench/fbgemm` draws them), or uniform when `alpha` is 0.
pub fn embedding_ids(rng: &mut impl Rng, n: usize, rows: usize, alpha: f64) -> Vec<u32> {
    if alpha == 0.0 {
        return (0..n).map(|_| rng.gen_range(0..rows as u32)).collect();
    }
    let mut cdf = Vec::with_capacity(rows);
    let mut total = 0.0f64;
    for k in 1..=rows {
        total += (k as f64).powf(-alpha);
        cdf.push(total);
    }
    let mut perm: Vec<u32> = (0..rows as u32).collect();
    for i in (1..rows).rev() {
        perm.swap(i, rng.gen_range(0..=i));
    }
    (0..n)
        .map(|_| {
            let u = rng.r#gen::<f64>() * total;
            perm[cdf.partition_point(|&c| c < u).min(rows - 1)]
        })
        .collect()
}

/// The largest CPU cache's size in bytes (sysfs), or 256 MiB when it cannot be read.
pub fn llc_bytes() -> usize {
    let mut best = 0;
    for i in 0..8 {
        let path = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let text = text.trim();
        let (digits, scale) = match text.char_indices().last() {
            Some((at, 'K')) => (&text[..at], 1 << 10),
            Some((at, 'M')) => (&text[..at], 1 << 20),
            Some((at, 'G')) => (&text[..at], 1 << 30),
            _ => (text, 1),
        };
        if let Ok(n) = digits.parse::<usize>() {
            best = best.max(n.saturating_mul(scale));
        }
    }
    if best == 0 { 256 << 20 } else { best }
}
