//! Networks as safetensors files with PyTorch `nn.Sequential` names.

use std::collections::BTreeSet;
use std::path::Path;

use super::arch;
use super::container::{read_file, write_file, SafeTensors, Tensor};
use super::IoError;
use crate::nn::layer::{self, Compiled, Layout, Slot, Store};
use crate::nn::{Layer, Loss, Mlp};

/// The network file format version, stored under `backprop.format_version`.
///
/// Version 2 added the checksum ([`KEY_CHECKSUM`]), which it requires.
/// Version 1 files (written before) still load, without that verification.
pub const FORMAT_VERSION: &str = "2";

/// The format version before the checksum; still read, unverified.
const FORMAT_VERSION_UNCHECKED: &str = "1";

/// The metadata key of the file's checksum: `fnv1a64:` and 16 hex digits,
/// the 64-bit FNV-1a hash of every other metadata entry and every tensor
/// (see [`checksum`]).
pub const KEY_CHECKSUM: &str = "backprop.checksum";

pub(crate) const KEY_VERSION: &str = "backprop.format_version";
pub(crate) const KEY_INPUT: &str = "backprop.input_dim";
pub(crate) const KEY_LOSS: &str = "backprop.loss";
pub(crate) const KEY_LAYERS: &str = "backprop.layers";

/// The checksum stored under [`KEY_CHECKSUM`]: `fnv1a64:` and the 64-bit
/// FNV-1a hash, as 16 lowercase hex digits, of
///
/// * each metadata entry but [`KEY_CHECKSUM`] itself, in key order: the key's
///   UTF-8 bytes, a byte `0xff`, the value's bytes, `0xff`;
/// * then each tensor in name order: the name's bytes, `0xff`, the rank and
///   each dimension as little-endian `u64`s, then the elements as
///   little-endian `f32` (the bytes of an F32 data section), `0xff`.
///
/// (`0xff` never occurs in UTF-8, so the fields cannot run into each other.)
/// A plain metadata entry, so any safetensors reader can check it. Any
/// single changed byte changes the hash, since each FNV-1a step is a
/// bijection of the state.
///
/// ```
/// use backprop::io::{checksum, mlp_to_safetensors, KEY_CHECKSUM};
/// use backprop::nn::MlpBuilder;
/// let mut st = mlp_to_safetensors(&MlpBuilder::new(2).dense(3).build(0).unwrap());
/// assert_eq!(st.metadata[KEY_CHECKSUM], checksum(&st));
/// st.tensors.get_mut("layers.0.bias").unwrap().data[1] += 1.0;
/// assert_ne!(st.metadata[KEY_CHECKSUM], checksum(&st));
/// ```
pub fn checksum(st: &SafeTensors) -> String {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in &st.metadata {
        if k != KEY_CHECKSUM {
            eat(k.as_bytes());
            eat(&[0xff]);
            eat(v.as_bytes());
            eat(&[0xff]);
        }
    }
    for (name, t) in &st.tensors {
        eat(name.as_bytes());
        eat(&[0xff]);
        eat(&(t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            eat(&(d as u64).to_le_bytes());
        }
        for &x in &t.data {
            eat(&x.to_le_bytes());
        }
        eat(&[0xff]);
    }
    format!("fnv1a64:{h:016x}")
}

/// Stores the checksum of `st` under [`KEY_CHECKSUM`] (after every other
/// entry and tensor is in place).
pub(crate) fn seal(st: &mut SafeTensors) {
    let sum = checksum(st);
    st.metadata.insert(KEY_CHECKSUM.into(), sum);
}

/// Checks the stored checksum: required from format version 2 on, checked
/// whenever present.
fn verify(st: &SafeTensors, required: bool) -> Result<(), IoError> {
    let Some(stored) = st.metadata.get(KEY_CHECKSUM) else {
        return match required {
            true => Err(IoError::MissingMetadata { key: KEY_CHECKSUM }),
            false => Ok(()),
        };
    };
    let computed = checksum(st);
    if *stored != computed {
        return Err(IoError::Checksum {
            stored: stored.clone(),
            computed,
        });
    }
    Ok(())
}

/// The first NaN or infinite value among `tensors` (name, data), as
/// [`IoError::NonFinite`].
pub(crate) fn check_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [f32])>,
) -> Result<(), IoError> {
    for (name, data) in tensors {
        if let Some(index) = data.iter().position(|x| !x.is_finite()) {
            return Err(IoError::NonFinite {
                tensor: name.to_string(),
                index,
                value: data[index],
            });
        }
    }
    Ok(())
}

/// Tensor-name prefix of the network's layers.
const PREFIX: &str = "layers.";

/// Every tensor of a network description, in arena order, as its layers
/// declare them (`crate::nn::layer`), and the arena sizes.
struct Plan {
    compiled: Compiled,
}

impl Plan {
    fn new(input: usize, layers: &[Layer]) -> Result<Plan, IoError> {
        Ok(Plan {
            compiled: layer::compile(input, layers)?,
        })
    }

    /// The full tensor name of a slot, under `prefix`.
    fn name(prefix: &str, s: &Slot) -> String {
        format!("{prefix}{}{}", s.path, s.tensor.name)
    }

    /// Finds every slot's tensor and checks its shape, then copies the
    /// values into fresh `(params, buffers)` arenas. Allocates only after
    /// every slot is matched to a distinct tensor, so the arenas are no
    /// larger than the tensors already in memory.
    ///
    /// Names are looked up under `prefix` (`layers.` in this crate's files,
    /// empty in a plain `nn.Sequential` state dict). Every tensor under the
    /// prefix must belong to the architecture; with an empty prefix that is
    /// every tensor (PyTorch's strict `load_state_dict`).
    fn gather(&self, st: &SafeTensors, prefix: &str) -> Result<(Vec<f32>, Vec<f32>), IoError> {
        let c = &self.compiled;
        let mut found = Vec::with_capacity(c.slots.len());
        for s in &c.slots {
            let name = Plan::name(prefix, s);
            let Some(t) = st.tensors.get(&name) else {
                return Err(IoError::MissingTensor { name });
            };
            if t.shape != s.tensor.shape || t.data.len() != s.len {
                return Err(IoError::WrongShape {
                    name,
                    expected: s.tensor.shape.clone(),
                    got: t.shape.clone(),
                });
            }
            check_finite([(name.as_str(), t.data.as_slice())])?;
            found.push(t);
        }
        let known: BTreeSet<String> = c
            .slots
            .iter()
            .map(|s| Plan::name(prefix, s))
            .chain(c.ignored.iter().map(|n| format!("{prefix}{n}")))
            .collect();
        for name in st.tensors.keys() {
            if name.starts_with(prefix) && !known.contains(name) {
                return Err(IoError::UnexpectedTensor { name: name.clone() });
            }
        }
        let mut params = vec![0.0f32; c.params];
        let mut buffers = vec![0.0f32; c.buffers];
        for (s, t) in c.slots.iter().zip(found) {
            let dst = match s.tensor.store {
                Store::Param => &mut params[s.range()],
                Store::Buffer => &mut buffers[s.range()],
            };
            match s.tensor.layout {
                // Tensor [fan_out, fan_in] → W (fan_in × fan_out): W[i][j] = T[j][i].
                Layout::Transposed { fan_in, fan_out } => {
                    for (j, row) in t.data.chunks_exact(fan_in.max(1)).enumerate() {
                        for (i, &v) in row.iter().enumerate() {
                            dst[i * fan_out + j] = v;
                        }
                    }
                }
                Layout::Plain => dst.copy_from_slice(&t.data),
            }
        }
        Ok((params, buffers))
    }
}

/// The network's tensors and architecture metadata, in memory.
///
/// # Tensor names and shapes
/// The names are those of a PyTorch module whose attribute `layers` is an
/// `nn.Sequential` of the same layers, i.e. its `state_dict()` keys. Each
/// entry of [`Mlp::layers`] takes one Sequential index `i`, activations
/// included (they have no tensors):
///
/// | layer | tensors |
/// |---|---|
/// | dense (`nn.Linear`) | `layers.{i}.weight` `[out, in]`, `layers.{i}.bias` `[out]` (none without bias) |
/// | BatchNorm (`nn.BatchNorm1d`) | `layers.{i}.weight` (γ), `layers.{i}.bias` (β) (both only if affine), `layers.{i}.running_mean`, `layers.{i}.running_var`, each `[width]` |
/// | LayerNorm (`nn.LayerNorm`) | `layers.{i}.weight` (γ), `layers.{i}.bias` (β), each `[width]` (none without affine) |
/// | activation | none |
/// | dropout (`nn.Dropout`) | none |
/// | residual block | its inner layers as `layers.{i}.inner.{j}.…`, recursively |
///
/// PyTorch has no standard residual module; the names are those of a module
/// with an attribute `inner = nn.Sequential(…)` whose forward is
/// `x + self.inner(x)`. A dense weight is `[out, in]` as in `nn.Linear`: the
/// **transpose** of the arena's `W` (`fan_in × fan_out`, see
/// `../DESIGN.md` section 1), so `weight[j][i]` = `W[i][j]`. BatchNorm's
/// `num_batches_tracked` is not written (PyTorch fills it in when loading a
/// state dict without it) and is ignored when present.
///
/// # Metadata
/// | key | value |
/// |---|---|
/// | `backprop.format_version` | [`FORMAT_VERSION`] (`"2"`) |
/// | `backprop.checksum` | the [`checksum`] of everything else, verified on load |
/// | `backprop.input_dim` | input features, decimal |
/// | `backprop.loss` | `mse`, `logistic` or `softmax_cross_entropy` |
/// | `backprop.layers` | the layer list as JSON text (below) |
///
/// The layer list is a JSON array of objects with a `"type"`:
/// `{"type":"dense","units":8,"init":"he"}` (init `he`, `xavier`,
/// `xavier_uniform`, `lecun`, or `normal` with `"std":"0.02"`; `"bias":false`
/// for a layer without bias);
/// `{"type":"activation","name":"relu"}` (names as [`Activation::name`](crate::nn::Activation::name);
/// `leaky_relu` adds `"slope":"0.01"`); `{"type":"batch_norm"}`;
/// `{"type":"layer_norm"}` (each with `"affine":false` when it has no γ, β);
/// `{"type":"dropout","p":"0.5"}`;
/// `{"type":"residual","layers":[…]}`. Integers are
/// JSON integers; `f32` values are written as strings in Rust's shortest
/// round-trip decimal form, so they load bit for bit, and are read from a
/// string or a JSON number (`"slope":0.01`). When reading, a dense layer's
/// `init` may be left out (He; it matters only for re-initialising) and so
/// may `slope` (0.01, PyTorch's default). Unknown keys are refused.
///
/// ```
/// use backprop::io::mlp_to_safetensors;
/// use backprop::nn::{Activation, MlpBuilder};
/// let net = MlpBuilder::new(4).dense(8).act(Activation::Relu).batch_norm().dense(3)
///     .build(0).unwrap();
/// let st = mlp_to_safetensors(&net);
/// let names: Vec<_> = st.tensors.keys().map(String::as_str).collect();
/// assert_eq!(names, ["layers.0.bias", "layers.0.weight", "layers.2.bias", "layers.2.running_mean",
///                    "layers.2.running_var", "layers.2.weight", "layers.3.bias", "layers.3.weight"]);
/// assert_eq!(st.tensors["layers.0.weight"].shape, [8, 4]);
/// assert_eq!(st.metadata["backprop.input_dim"], "4");
/// ```
pub fn mlp_to_safetensors(net: &Mlp) -> SafeTensors {
    let mut st = SafeTensors::default();
    for s in net.slots() {
        let src = match s.tensor.store {
            Store::Param => &net.params()[s.range()],
            Store::Buffer => &net.buffers()[s.range()],
        };
        let data = match s.tensor.layout {
            // W (fan_in × fan_out) → tensor [fan_out, fan_in]: T[j][i] = W[i][j].
            Layout::Transposed { fan_in, fan_out } => {
                let mut t = Vec::with_capacity(s.len);
                for j in 0..fan_out {
                    t.extend((0..fan_in).map(|i| src[i * fan_out + j]));
                }
                t
            }
            Layout::Plain => src.to_vec(),
        };
        st.tensors.insert(
            Plan::name(PREFIX, s),
            Tensor::new(s.tensor.shape.clone(), data),
        );
    }
    write_architecture(net, &mut st);
    seal(&mut st);
    st
}

/// Stores the architecture metadata keys of `net` in `st`.
fn write_architecture(net: &Mlp, st: &mut SafeTensors) {
    let m = &mut st.metadata;
    m.insert(KEY_VERSION.into(), FORMAT_VERSION.into());
    m.insert(KEY_INPUT.into(), net.input_dim().to_string());
    m.insert(KEY_LOSS.into(), loss_name(net.loss_kind()).into());
    m.insert(KEY_LAYERS.into(), arch::encode(net.layers()));
}

/// Rebuilds a network from tensors and metadata made by
/// [`mlp_to_safetensors`] (or by PyTorch, with the metadata added). Tensors
/// outside `layers.` (e.g. a checkpoint's `optimizer.*`) are ignored; within
/// it, every tensor must belong to the architecture.
/// The network is in evaluation mode, as [`load_mlp`] says.
///
/// # Errors
/// [`IoError::MissingMetadata`] / [`IoError::Metadata`] for an absent or
/// malformed architecture (or a format version other than
/// [`FORMAT_VERSION`] and the unverified version `"1"`);
/// [`IoError::Checksum`] if the contents do not match the stored checksum
/// (and [`IoError::MissingMetadata`] for a version 2 file without one);
/// [`IoError::MissingTensor`], [`IoError::WrongShape`],
/// [`IoError::UnexpectedTensor`] for tensors that do not fit it;
/// [`IoError::NonFinite`] for a NaN or infinite parameter or statistic;
/// [`IoError::Build`] if the architecture itself does not build (e.g. a zero
/// width, a residual block that changes the width, or more parameters than
/// [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS)).
pub fn mlp_from_safetensors(st: &SafeTensors) -> Result<Mlp, IoError> {
    let version = meta(st, KEY_VERSION)?;
    if version != FORMAT_VERSION && version != FORMAT_VERSION_UNCHECKED {
        return Err(IoError::Metadata {
            key: KEY_VERSION.into(),
            message: format!(
                "format version {version:?} is not supported (this build reads \
                 {FORMAT_VERSION_UNCHECKED:?} and {FORMAT_VERSION:?})"
            ),
        });
    }
    verify(st, version == FORMAT_VERSION)?;
    let input_text = meta(st, KEY_INPUT)?;
    let input: usize = input_text.parse().map_err(|_| IoError::Metadata {
        key: KEY_INPUT.into(),
        message: format!("{input_text:?} is not a non-negative integer"),
    })?;
    let loss_text = meta(st, KEY_LOSS)?;
    let loss = parse_loss(loss_text).ok_or_else(|| IoError::Metadata {
        key: KEY_LOSS.into(),
        message: format!("unknown loss {loss_text:?}"),
    })?;
    let layers_text = meta(st, KEY_LAYERS)?;
    let bad_layers = |message: String| IoError::Metadata {
        key: KEY_LAYERS.into(),
        message,
    };
    let layers = arch::decode(layers_text).map_err(bad_layers)?;
    let (params, buffers) = Plan::new(input, &layers)?.gather(st, PREFIX)?;
    let mut net = Mlp::from_parts(input, &layers, loss, params, buffers)?;
    // A saved network is for use: BatchNorm with its running averages, so
    // one sample can go through it. Training switches the mode back.
    net.set_training(false);
    Ok(net)
}

/// Copies parameters and BatchNorm statistics from `st` into `net`, by name,
/// ignoring the architecture metadata: this loads weights saved by PyTorch
/// into a network built with the same layers. `net` is unchanged on error.
/// (When the names and shapes determine the layers, [`mlp_from_state_dict`](super::mlp_from_state_dict)
/// builds the network too.)
///
/// Two naming schemes are read:
/// * a plain `nn.Sequential`'s state dict,
///   `safetensors.torch.save_file(seq.state_dict(), f)`: keys `0.weight`,
///   `0.bias`, `2.running_mean`, … ([`Mlp::tensors`]' names). Chosen when no
///   tensor name starts with `layers.`; every tensor must then belong to the
///   network (PyTorch's strict `load_state_dict`).
/// * a module whose attribute `layers` is the `nn.Sequential` (this crate's
///   files, [`mlp_to_safetensors`]): keys `layers.0.weight`, …; tensors
///   outside `layers.` are ignored.
///
/// BatchNorm's `num_batches_tracked` is accepted and ignored in both. A
/// [`KEY_CHECKSUM`] entry, if present, is verified.
///
/// # Errors
/// [`IoError::Checksum`], [`IoError::MissingTensor`], [`IoError::WrongShape`],
/// [`IoError::UnexpectedTensor`], [`IoError::NonFinite`] as
/// [`mlp_from_safetensors`].
///
/// ```
/// use backprop::io::{load_weights_into, mlp_to_safetensors};
/// use backprop::nn::MlpBuilder;
/// let a = MlpBuilder::new(3).dense(5).layer_norm().dense(2).build(1).unwrap();
/// let mut b = MlpBuilder::new(3).dense(5).layer_norm().dense(2).build(2).unwrap();
/// load_weights_into(&mut b, &mlp_to_safetensors(&a)).unwrap();
/// assert_eq!(a.params(), b.params());
/// ```
pub fn load_weights_into(net: &mut Mlp, st: &SafeTensors) -> Result<(), IoError> {
    verify(st, false)?;
    let prefix = match st.tensors.keys().any(|k| k.starts_with(PREFIX)) {
        true => PREFIX,
        false => "",
    };
    let (params, buffers) = Plan::new(net.input_dim(), net.layers())?.gather(st, prefix)?;
    net.params_mut().copy_from_slice(&params);
    net.buffers_mut().copy_from_slice(&buffers);
    Ok(())
}

/// Saves `net` (parameters, BatchNorm running statistics and architecture;
/// see [`mlp_to_safetensors`] for the names and keys) to a safetensors file,
/// atomically ([`write_atomic`](super::write_atomic)).
///
/// # Errors
/// [`IoError::NonFinite`] (and nothing written) if a parameter or statistic
/// is NaN or infinite: such a file would not load. [`IoError::Io`] if the
/// file cannot be written.
///
/// ```
/// use backprop::io::{load_mlp, save_mlp};
/// use backprop::nn::{Activation, MlpBuilder};
/// let net = MlpBuilder::new(2).dense(4).act(Activation::Tanh).dense(1).build(3).unwrap();
/// let path = std::env::temp_dir().join(format!("backprop-save-doc-{}.safetensors", std::process::id()));
/// save_mlp(&net, &path).unwrap();
/// assert_eq!(load_mlp(&path).unwrap().params(), net.params());
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn save_mlp(net: &Mlp, path: impl AsRef<Path>) -> Result<(), IoError> {
    write_finite(&mlp_to_safetensors(net), path.as_ref())
}

/// Writes `st` atomically after checking that every tensor is finite.
pub(crate) fn write_finite(st: &SafeTensors, path: &Path) -> Result<(), IoError> {
    check_finite(
        st.tensors
            .iter()
            .map(|(name, t)| (name.as_str(), t.data.as_slice())),
    )?;
    write_file(st, path)
}

/// Loads a network saved by [`save_mlp`] (or a checkpoint's network), in
/// evaluation mode ([`Mlp::is_training`] is false: BatchNorm uses its running
/// averages, so it predicts from a single sample). A [`Trainer`](crate::train::Trainer)
/// switches it to training mode at its first step.
///
/// # Errors
/// [`IoError::Io`] if the file cannot be read, the errors of
/// [`from_bytes`](super::from_bytes) for a malformed file and those of
/// [`mlp_from_safetensors`] for one that does not describe a network.
pub fn load_mlp(path: impl AsRef<Path>) -> Result<Mlp, IoError> {
    mlp_from_safetensors(&read_file(path)?)
}

/// A metadata value, or [`IoError::MissingMetadata`].
pub(crate) fn meta<'a>(st: &'a SafeTensors, key: &'static str) -> Result<&'a str, IoError> {
    st.metadata
        .get(key)
        .map(String::as_str)
        .ok_or(IoError::MissingMetadata { key })
}

fn loss_name(loss: Loss) -> &'static str {
    match loss {
        Loss::Mse => "mse",
        Loss::Logistic => "logistic",
        Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
    }
}

fn parse_loss(s: &str) -> Option<Loss> {
    match s {
        "mse" => Some(Loss::Mse),
        "logistic" => Some(Loss::Logistic),
        "softmax_cross_entropy" => Some(Loss::SoftmaxCrossEntropy),
        _ => None,
    }
}
