//! Deterministic synthetic data for tests, benchmarks and examples (no `rand` dependency, so the
//! numbers never change under a dependency upgrade).
//!
//! ```
//! use vitq_core::synth::Rng;
//! let mut rng = Rng::new(42);
//! let g: Vec<f32> = (0..4).map(|_| rng.gaussian()).collect();
//! assert_eq!(g, { let mut r = Rng::new(42); (0..4).map(|_| r.gaussian()).collect::<Vec<_>>() });
//! ```

/// SplitMix64: a small, fast, well-mixed generator (Steele, Lea and Flood 2014).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Laplace with location 0 and scale 1 (variance 2).
    pub fn laplacian(&mut self) -> f32 {
        let u = self.uniform() - 0.5;
        (-u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()) as f32
    }

    /// `n` standard normal values.
    pub fn gaussian_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.gaussian()).collect()
    }
}
