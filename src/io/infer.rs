//! The architecture a plain PyTorch `nn.Sequential` state dict determines:
//! [`infer_layers`] and [`mlp_from_state_dict`].

use std::collections::BTreeMap;

use crate::io::{load_weights_into, IoError, SafeTensors, Tensor};
use crate::nn::{Init, Layer, Loss, Mlp};

/// The prefix of this crate's own files, also accepted here.
const PREFIX: &str = "layers.";

/// The layers a plain `nn.Sequential` state dict determines, with each run of
/// tensor-free modules between two modules with tensors filled by `fill`.
/// Returns the input width and the layers; dense layers get [`Init::He`],
/// which only matters if the network is re-initialised.
///
/// A state dict names each module's tensors by the module's index in the
/// Sequential (`0.weight`, `1.running_mean`, …), and those names and shapes
/// determine every module that has tensors:
///
/// | tensors at index `i` | module |
/// |---|---|
/// | `weight` `[out, in]`, `bias` `[out]` | `nn.Linear(in, out)` → [`Layer::Dense`] |
/// | `weight` `[out, in]` only | `nn.Linear(in, out, bias=False)` |
/// | `running_mean`, `running_var` (+ `num_batches_tracked`), with `weight` and `bias` or without | `nn.BatchNorm1d`, affine or not → [`Layer::BatchNorm`] |
/// | `weight`, `bias`, both `[width]`, no running statistics | `nn.LayerNorm` → [`Layer::LayerNorm`] |
///
/// What a state dict never holds is a module without tensors: an activation,
/// a dropout, a LayerNorm without affine. Their indices are the gaps between
/// the indices above, and their kinds cannot be read from the file; the
/// caller says what fills each gap (`fill`, e.g. `[ReLU]`, or `[ReLU,
/// Dropout(0.5)]`), and every gap must have exactly that many modules (two
/// modules with tensors may also follow each other directly, as a Linear and
/// the BatchNorm after it). The fill is trusted: a network whose gaps hold
/// different activations needs its architecture given. A gap
/// of another length, a module before the first tensor, nested modules
/// (residual blocks) and tensor sets that match no row above are refused
/// with [`IoError::Inference`], naming the index. Modules after the last
/// tensor leave no trace at all (a final `nn.Sigmoid`): append them to the
/// returned layers.
///
/// Names may carry the prefix `layers.` (this crate's files); otherwise
/// every tensor must be named `{index}.{name}`.
///
/// # Errors
/// [`IoError::Inference`] when the names and shapes do not determine the
/// architecture, saying where: no tensors; a name that is not
/// `{index}.{name}`; a module whose tensors match no known module or whose
/// shapes disagree with each other or with the width before it; a gap
/// whose length is not `fill.len()`; a module before the first tensor; a
/// `fill` layer that has tensors.
///
/// ```
/// use backprop::io::{infer_layers, Tensor, SafeTensors};
/// use backprop::nn::{Activation, Init, Layer};
/// // nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
/// let mut st = SafeTensors::default();
/// st.tensors.insert("0.weight".into(), Tensor::new(vec![4, 3], vec![0.0; 12]));
/// st.tensors.insert("0.bias".into(), Tensor::new(vec![4], vec![0.0; 4]));
/// st.tensors.insert("2.weight".into(), Tensor::new(vec![2, 4], vec![0.0; 8]));
/// let relu = Layer::Act(Activation::Relu);
/// let (input, layers) = infer_layers(&st, &[relu.clone()]).unwrap();
/// assert_eq!(input, 3);
/// assert_eq!(layers, [
///     Layer::Dense { units: 4, init: Init::He, bias: true },
///     relu,
///     Layer::Dense { units: 2, init: Init::He, bias: false },
/// ]);
/// // Without a fill, the gap at index 1 cannot be read.
/// assert!(infer_layers(&st, &[]).unwrap_err().to_string().contains("index 1"));
/// ```
pub fn infer_layers(st: &SafeTensors, fill: &[Layer]) -> Result<(usize, Vec<Layer>), IoError> {
    if let Some(k) = fill.iter().position(has_tensors) {
        return Err(fail(format!(
            "fill layer {k} ({:?}) has tensors; only tensor-free layers (activations, \
             dropout, a norm without affine) can fill a gap",
            fill[k]
        )));
    }
    let prefix = if st.tensors.keys().any(|k| k.starts_with(PREFIX)) {
        PREFIX
    } else {
        ""
    };
    let mut modules: BTreeMap<usize, BTreeMap<&str, &Tensor>> = BTreeMap::new();
    for (name, t) in &st.tensors {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue; // another part of a checkpoint (`optimizer.…`)
        };
        // Indices as PyTorch writes them: decimal digits, no sign, no
        // leading zero (so `01.weight` and `1.weight` never merge).
        let canonical = |i: &str| {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && (i == "0" || !i.starts_with('0'))
        };
        let parsed = rest
            .split_once('.')
            .filter(|(i, n)| canonical(i) && !n.contains('.'))
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n)));
        let Some((index, field)) = parsed else {
            return Err(fail(format!(
                "tensor {name:?} is not named {prefix}{{index}}.{{name}}: only a flat \
                 nn.Sequential is inferred (give the architecture for nested modules)"
            )));
        };
        modules.entry(index).or_default().insert(field, t);
    }
    let Some(&first) = modules.keys().next() else {
        return Err(fail(
            "the file holds no tensors under a module index".into(),
        ));
    };
    if first != 0 {
        return Err(fail(format!(
            "modules 0..{first} hold no tensors, so their kinds cannot be read; the first \
             module must have tensors (give the architecture instead)"
        )));
    }
    let mut layers = Vec::new();
    let mut input = None;
    let mut width = 0;
    let mut previous: Option<usize> = None;
    for (&index, tensors) in &modules {
        if let Some(p) = previous {
            let gap = index - p - 1;
            if gap != 0 && gap != fill.len() {
                return Err(fail(format!(
                    "index {}: {gap} module(s) without tensors between index {p} and index \
                     {index}, but {} fill layer(s) were given; their kinds cannot be read \
                     from the file",
                    p + 1,
                    fill.len()
                )));
            }
            if gap != 0 {
                layers.extend_from_slice(fill);
            }
        }
        let (layer, takes, gives) = module(index, tensors)?;
        let takes = takes.unwrap_or(gives);
        match input {
            None => input = Some(takes),
            Some(_) if takes != width => {
                return Err(fail(format!(
                    "index {index}: takes {takes} features but the module before gives {width}"
                )))
            }
            Some(_) => {}
        }
        layers.push(layer);
        width = gives;
        previous = Some(index);
    }
    let input = input.expect("at least one module");
    Ok((input, layers))
}

/// Builds the network a plain `nn.Sequential` state dict determines
/// ([`infer_layers`] with `fill`), trained with `loss`, and loads its
/// weights and BatchNorm statistics, in evaluation mode.
///
/// # Errors
/// Those of [`infer_layers`], and of [`load_weights_into`] (a checksum that
/// does not match, a NaN or infinite value).
///
/// ```
/// use backprop::io::{mlp_from_state_dict, Tensor, SafeTensors};
/// use backprop::matrix::MatRef;
/// use backprop::nn::{Activation, Inference, Layer, Loss};
/// let mut st = SafeTensors::default();
/// st.tensors.insert("0.weight".into(), Tensor::new(vec![2, 2], vec![1.0, 0.0, 0.0, -1.0]));
/// st.tensors.insert("0.bias".into(), Tensor::new(vec![2], vec![0.5, 0.5]));
/// st.tensors.insert("2.weight".into(), Tensor::new(vec![1, 2], vec![1.0, 1.0]));
/// st.tensors.insert("2.bias".into(), Tensor::new(vec![1], vec![0.0]));
/// let net = mlp_from_state_dict(&st, &[Layer::Act(Activation::Relu)], Loss::Mse).unwrap();
/// let mut ws = Inference::default();
/// let h = net.infer(MatRef::from_slice(&[1.0, 1.0], 1, 2), &mut ws).unwrap();
/// assert_eq!(h.to_vec(), [1.5]); // relu(1.5) + relu(-0.5)
/// ```
pub fn mlp_from_state_dict(st: &SafeTensors, fill: &[Layer], loss: Loss) -> Result<Mlp, IoError> {
    let (input, layers) = infer_layers(st, fill)?;
    let mut net = Mlp::new(input, &layers, loss, None)?;
    load_weights_into(&mut net, st)?;
    net.set_training(false);
    Ok(net)
}

fn fail(message: String) -> IoError {
    IoError::Inference { message }
}

/// Whether a layer declares tensors (and so cannot stand in a gap).
fn has_tensors(layer: &Layer) -> bool {
    match layer {
        Layer::Act(_) | Layer::Dropout { .. } => false,
        Layer::LayerNorm { affine } => *affine,
        Layer::BatchNorm { .. } => true, // its running statistics
        Layer::Dense { .. } => true,
        Layer::Residual(inner) => inner.iter().any(has_tensors),
    }
}

/// The width of a norm module's vectors.
fn norm_width(tensors: &BTreeMap<&str, &Tensor>) -> usize {
    tensors
        .iter()
        .find(|(n, _)| **n != "num_batches_tracked")
        .map_or(0, |(_, t)| t.shape.first().copied().unwrap_or(0))
}

/// The module at `index` from its tensors: the layer, the width it takes
/// (`None` for a norm, which keeps any width) and the width it gives.
fn module(
    index: usize,
    tensors: &BTreeMap<&str, &Tensor>,
) -> Result<(Layer, Option<usize>, usize), IoError> {
    let names: Vec<&str> = tensors.keys().copied().collect();
    let shape = |n: &str| tensors.get(n).map(|t| t.shape.as_slice());
    let unknown = || {
        fail(format!(
            "index {index}: tensors {names:?} match no nn.Linear, nn.BatchNorm1d or nn.LayerNorm"
        ))
    };
    let vector = |n: &str, d: usize| -> Result<(), IoError> {
        match shape(n) {
            Some([len]) if *len == d => Ok(()),
            Some(s) => Err(fail(format!(
                "index {index}: {n} has shape {s:?}, expected [{d}]"
            ))),
            None => Err(unknown()),
        }
    };
    let has = |n: &str| tensors.contains_key(n);
    if let Some([out, input]) = shape("weight") {
        // nn.Linear: weight [out, in], and a bias [out] or none.
        if names.iter().any(|n| *n != "weight" && *n != "bias") {
            return Err(unknown());
        }
        if has("bias") {
            vector("bias", *out)?;
        }
        let layer = Layer::Dense {
            units: *out,
            init: Init::He,
            bias: has("bias"),
        };
        return Ok((layer, Some(*input), *out));
    }
    let d = norm_width(tensors);
    let affine = has("weight") || has("bias");
    if affine {
        vector("weight", d)?;
        vector("bias", d)?;
    }
    if has("running_mean") || has("running_var") {
        vector("running_mean", d)?;
        vector("running_var", d)?;
        let known = [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ];
        if names.iter().any(|n| !known.contains(n)) {
            return Err(unknown());
        }
        return Ok((Layer::BatchNorm { affine }, None, d));
    }
    if affine && names.len() == 2 {
        return Ok((Layer::LayerNorm { affine: true }, None, d));
    }
    Err(unknown())
}
