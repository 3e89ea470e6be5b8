//! What `Debug` and `Display` show of a network: a summary, never the arrays.

use std::fmt;

use super::Mlp;
use crate::nn::Layer;

impl fmt::Debug for Mlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mlp")
            .field("input", &self.input)
            .field("output", &self.output_dim())
            .field("loss", &self.loss)
            .field("layers", &self.layers.len())
            .field("params", &self.params.len())
            .field("buffers", &self.buffers.len())
            .field("training", &self.training)
            .field("parallelism", &self.exec.parallelism)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Mlp {
    /// One line for the network, then one per layer (nested for residual
    /// blocks) with its PyTorch index path and its tensors' shapes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Mlp: {} inputs → {} outputs, {:?} loss, {} parameters, {} mode",
            self.input,
            self.output_dim(),
            self.loss,
            self.params.len(),
            if self.training {
                "training"
            } else {
                "evaluation"
            }
        )?;
        self.describe(f, &self.layers, "")
    }
}

impl Mlp {
    fn describe(&self, f: &mut fmt::Formatter<'_>, layers: &[Layer], base: &str) -> fmt::Result {
        for (i, layer) in layers.iter().enumerate() {
            let path = format!("{base}{i}.");
            let kind = match layer {
                Layer::Dense { units, init, bias } => {
                    let bias = if *bias { "" } else { ", no bias" };
                    format!("dense {units} ({init:?}{bias})")
                }
                Layer::Act(act) => act.name().to_string(),
                Layer::BatchNorm { affine } => format!("batch_norm{}", plain(*affine)),
                Layer::LayerNorm { affine } => format!("layer_norm{}", plain(*affine)),
                Layer::Residual(_) => "residual x + f(x)".into(),
                Layer::Dropout { p } => format!("dropout p={p}"),
            };
            let tensors: Vec<String> = (self.slots.iter())
                .filter(|s| s.path == path)
                .map(|s| format!("{} {:?}", s.tensor.name, s.tensor.shape))
                .collect();
            let indent = "  ".repeat(1 + base.matches("inner.").count());
            let label = path.trim_end_matches('.');
            if tensors.is_empty() {
                writeln!(f, "{indent}{label}  {kind}")?;
            } else {
                writeln!(f, "{indent}{label}  {kind}  {}", tensors.join(", "))?;
            }
            if let Layer::Residual(inner) = layer {
                self.describe(f, inner, &format!("{path}inner."))?;
            }
        }
        Ok(())
    }
}

/// The summary's mark for a norm without γ and β.
fn plain(affine: bool) -> &'static str {
    if affine {
        ""
    } else {
        " (no affine)"
    }
}
