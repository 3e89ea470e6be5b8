//! Weight initialization, by name and formula. Biases start at zero.
//!
//! All draws come from the caller's seeded [`Rng`], whose stream the crate
//! defines (see [`crate::rng`]), so a seed fixes the network across versions.
//! Normal draws use the Box–Muller transform on two uniform draws.

use crate::rng::Rng;

/// How a dense layer's `fan_in × fan_out` weight matrix is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// He (Kaiming) normal: N(0, 2/fan_in). Keeps Var\[z\] constant through ReLU
    /// layers. (PyTorch's `nn.Linear` default is a different one: uniform with
    /// bound 1/√fan_in.)
    He,
    /// Xavier/Glorot normal: N(0, 2/(fan_in + fan_out)).
    Xavier,
    /// Xavier/Glorot uniform: U(−a, a) with a = √(6/(fan_in + fan_out)).
    XavierUniform,
    /// LeCun normal: N(0, 1/fan_in).
    LeCun,
    /// N(0, σ²) with the given σ.
    Normal(f32),
}

impl Init {
    /// The standard deviation of the weights this scheme draws.
    ///
    /// ```
    /// use backprop::nn::Init;
    /// assert_eq!(Init::He.std(50, 10), (2.0f32 / 50.0).sqrt());
    /// assert_eq!(Init::LeCun.std(4, 10), 0.5);
    /// ```
    pub fn std(self, fan_in: usize, fan_out: usize) -> f32 {
        let (i, o) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        match self {
            Init::He => (2.0 / i).sqrt(),
            Init::Xavier => (2.0 / (i + o)).sqrt(),
            Init::XavierUniform => (2.0 / (i + o)).sqrt(),
            Init::LeCun => (1.0 / i).sqrt(),
            Init::Normal(s) => s,
        }
    }

    /// Fills `w` (a `fan_in × fan_out` matrix in any order) with draws from
    /// `rng`, one per element in order.
    ///
    /// ```
    /// use backprop::nn::Init;
    /// use backprop::rng::Rng;
    /// let mut w = [0.0f32; 6];
    /// Init::XavierUniform.fill(&mut w, 2, 3, &mut Rng::seed_from_u64(1));
    /// let a = (6.0f32 / 5.0).sqrt();
    /// assert!(w.iter().all(|&x| (-a..=a).contains(&x)));
    /// ```
    pub fn fill(self, w: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut Rng) {
        let std = self.std(fan_in, fan_out);
        match self {
            Init::XavierUniform => {
                let a = std * 3f32.sqrt(); // U(−a, a) has σ = a/√3
                for x in w.iter_mut() {
                    *x = (f64::from(a) * (2.0 * rng.uniform() - 1.0)) as f32;
                }
            }
            _ => {
                for x in w.iter_mut() {
                    *x = std * standard_normal(rng);
                }
            }
        }
    }
}

/// One N(0, 1) draw ([`Rng::normal`]: Box–Muller, two uniforms per draw),
/// rounded to `f32`.
pub fn standard_normal(rng: &mut Rng) -> f32 {
    rng.normal() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample variance of 200k draws is within 2 % of the formula.
    #[test]
    fn variances_follow_the_formulas() {
        let mut rng = Rng::seed_from_u64(1);
        for (init, fan_in, fan_out) in [
            (Init::He, 300, 100),
            (Init::Xavier, 300, 100),
            (Init::XavierUniform, 300, 100),
            (Init::LeCun, 50, 7),
            (Init::Normal(0.3), 1, 1),
        ] {
            let mut w = vec![0.0f32; 200_000];
            init.fill(&mut w, fan_in, fan_out, &mut rng);
            let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
            let var = w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
            let want = (init.std(fan_in, fan_out) as f64).powi(2);
            assert!(
                (var / want - 1.0).abs() < 0.02,
                "{init:?}: var {var} want {want}"
            );
            assert!(
                mean.abs() < 0.01 * want.sqrt() * 3.0,
                "{init:?}: mean {mean}"
            );
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let draw = |seed| {
            let mut w = vec![0.0f32; 64];
            Init::He.fill(&mut w, 8, 8, &mut Rng::seed_from_u64(seed));
            w
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
