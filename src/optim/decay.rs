//! Which parameters weight decay applies to: PyTorch's parameter groups, in
//! the one form an MLP needs (decay the dense weights, not the biases and
//! norm parameters).

use std::ops::Range;

use super::OptimError;

/// The parameters weight decay applies to: all of them (the default, what a
/// single PyTorch parameter group does) or only the given arena ranges (what
/// users get in PyTorch with two groups, `weight_decay` on one and 0 on the
/// other). Outside the ranges an optimizer steps as without weight decay.
///
/// ```
/// use backprop::nn::MlpBuilder;
/// use backprop::optim::{Adam, AdamConfig, DecayMask, Optimizer};
/// let net = MlpBuilder::new(4).dense(8).layer_norm().dense(2).build(0).unwrap();
/// // AdamW on the two dense weights only: biases and γ, β are not decayed.
/// let mask = DecayMask::only(net.weight_ranges(), net.num_params()).unwrap();
/// let opt = Adam::new(net.num_params(), AdamConfig::adamw(0.01)).with_decay_mask(mask);
/// assert!(opt.config_text().contains("decay_only=0..32,56..72"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecayMask {
    /// `None`: every parameter. Otherwise sorted, disjoint, non-empty ranges.
    ranges: Option<Vec<Range<usize>>>,
}

impl DecayMask {
    /// Weight decay on every parameter.
    pub fn all() -> DecayMask {
        DecayMask::default()
    }

    /// Weight decay only on `ranges` of an arena of `n` parameters (e.g.
    /// [`Mlp::weight_ranges`](crate::nn::Mlp::weight_ranges)). Empty ranges
    /// are dropped; the rest are sorted.
    ///
    /// # Errors
    /// [`OptimError::DecayRanges`] if a range ends past `n` or two overlap.
    pub fn only(mut ranges: Vec<Range<usize>>, n: usize) -> Result<DecayMask, OptimError> {
        ranges.retain(|r| !r.is_empty());
        ranges.sort_by_key(|r| r.start);
        if ranges.iter().any(|r| r.end > n) {
            return Err(OptimError::DecayRanges {
                reason: "a range ends past the parameter arena",
            });
        }
        if ranges.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(OptimError::DecayRanges {
                reason: "two ranges overlap",
            });
        }
        Ok(DecayMask {
            ranges: Some(ranges),
        })
    }

    /// Whether every parameter is decayed.
    pub fn is_all(&self) -> bool {
        self.ranges.is_none()
    }

    /// Cuts `r` into consecutive pieces, each wholly decayed or not, and calls
    /// `f(piece, decayed)` on each in order.
    pub(crate) fn split(&self, r: Range<usize>, mut f: impl FnMut(Range<usize>, bool)) {
        let Some(ranges) = &self.ranges else {
            f(r, true);
            return;
        };
        let mut at = r.start;
        for d in ranges {
            if d.end <= at {
                continue;
            }
            if d.start >= r.end {
                break;
            }
            if d.start > at {
                f(at..d.start, false);
            }
            let end = d.end.min(r.end);
            f(d.start.max(at)..end, true);
            at = end;
        }
        if at < r.end {
            f(at..r.end, false);
        }
    }

    /// The mask for an optimizer's [`config_text`](super::Optimizer::config_text):
    /// empty for all, `:decay_only=a..b,c..d` otherwise.
    pub(crate) fn text(&self) -> String {
        match &self.ranges {
            None => String::new(),
            Some(r) => {
                let list: Vec<String> = r
                    .iter()
                    .map(|r| format!("{}..{}", r.start, r.end))
                    .collect();
                format!(":decay_only={}", list.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(m: &DecayMask, r: Range<usize>) -> Vec<(Range<usize>, bool)> {
        let mut v = Vec::new();
        m.split(r, |p, d| v.push((p, d)));
        v
    }

    #[test]
    fn split_covers_the_range_in_order() {
        let m = DecayMask::only(vec![10..20, 2..5, 30..30], 40).unwrap();
        assert_eq!(
            pieces(&m, 0..40),
            [
                (0..2, false),
                (2..5, true),
                (5..10, false),
                (10..20, true),
                (20..40, false)
            ]
        );
        assert_eq!(
            pieces(&m, 3..12),
            [(3..5, true), (5..10, false), (10..12, true)]
        );
        assert_eq!(pieces(&m, 12..15), [(12..15, true)]);
        assert_eq!(pieces(&DecayMask::all(), 4..9), [(4..9, true)]);
        assert_eq!(
            pieces(&DecayMask::only(vec![], 9).unwrap(), 0..9),
            [(0..9, false)]
        );
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(DecayMask::only(vec![0..5, 4..8], 10).is_err());
        assert!(DecayMask::only(vec![0..5, 6..11], 10).is_err());
    }
}
