//! Model files written by PyTorch itself: `nn.Sequential` state dicts saved
//! with `safetensors.torch.save_file(model.state_dict(), f)` and nothing
//! else (no metadata, keys `0.weight`, …), made by `scripts/torch_fixtures.py`.
//!
//! Each case is loaded twice, into a network built from the architecture
//! (as a user who knows it writes) and by inferring the architecture from
//! the names and shapes with the tensor-free modules given, and both must
//! reproduce PyTorch's evaluation-mode output on the saved inputs.
//!
//! The files come from `tests/fixtures/torch` (committed, made by the script),
//! or from the directory in `BACKPROP_TORCH_FIXTURES`, where `.ci/run` puts
//! files a freshly installed PyTorch just wrote when it can install one.

use std::path::PathBuf;

use backprop::io::{
    infer_layers, load_weights_into, mlp_from_state_dict, read_file, IoError, SafeTensors,
};
use backprop::matrix::MatRef;
use backprop::nn::{Activation, Inference, Init, Layer, Loss, Mlp, MlpBuilder};

fn dir() -> PathBuf {
    match std::env::var_os("BACKPROP_TORCH_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch"),
    }
}

/// The state dict and the (x, y) PyTorch computed, for case `name`.
fn case(name: &str) -> (SafeTensors, Vec<f32>, usize, Vec<f32>) {
    let d = dir();
    let st = read_file(d.join(format!("{name}.safetensors")))
        .unwrap_or_else(|e| panic!("{name}: {e} (run scripts/torch_fixtures.py DIR)"));
    assert!(
        st.metadata.is_empty(),
        "{name}: a plain state dict has no metadata"
    );
    let io = read_file(d.join(format!("{name}.io.safetensors"))).unwrap();
    let (x, y) = (&io.tensors["x"], &io.tensors["y"]);
    (st, x.data.clone(), x.shape[0], y.data.clone())
}

/// `net`'s outputs on `x` match PyTorch's `y` (f32 on both sides, different
/// summation orders: a few ulps of the largest magnitude).
fn assert_reproduces(name: &str, net: &Mlp, x: &[f32], rows: usize, y: &[f32]) {
    assert!(
        !net.is_training(),
        "{name}: loaded networks are for evaluation"
    );
    let mut ws = Inference::default();
    let h = net
        .infer(MatRef::from_slice(x, rows, net.input_dim()), &mut ws)
        .unwrap();
    let h = h.to_vec();
    assert_eq!(h.len(), y.len(), "{name}: output size");
    let scale = y.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (k, (a, b)) in h.iter().zip(y).enumerate() {
        assert!(
            (a - b).abs() <= 2e-6 * scale,
            "{name}: output {k} is {a}, PyTorch gives {b}"
        );
    }
}

/// Builds `builder`'s network, loads the state dict into it by name.
fn load_given(name: &str, builder: MlpBuilder) -> Mlp {
    let (st, x, rows, y) = case(name);
    let mut net = builder.build(0).unwrap();
    load_weights_into(&mut net, &st).unwrap_or_else(|e| panic!("{name}: {e}"));
    net.set_training(false);
    assert_reproduces(name, &net, &x, rows, &y);
    net
}

/// Infers the network with `fill` in the gaps; checks it equals `given`.
fn load_inferred(name: &str, fill: &[Layer], given: &Mlp) {
    let (st, x, rows, y) = case(name);
    let net = mlp_from_state_dict(&st, fill, Loss::Mse).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(net.input_dim(), given.input_dim(), "{name}");
    assert_eq!(net.layers(), given.layers(), "{name}");
    assert_eq!(net.params(), given.params(), "{name}");
    assert_eq!(net.buffers(), given.buffers(), "{name}");
    assert_reproduces(name, &net, &x, rows, &y);
}

#[test]
fn linear_and_relu() {
    let given = load_given(
        "linear_relu",
        MlpBuilder::new(5).dense(8).act(Activation::Relu).dense(3),
    );
    load_inferred("linear_relu", &[Layer::Act(Activation::Relu)], &given);
}

#[test]
fn half_bfloat_and_double_files_are_converted() {
    for dtype in ["f16", "bf16", "f64"] {
        let name = format!("linear_relu_{dtype}");
        let given = load_given(
            &name,
            MlpBuilder::new(5).dense(8).act(Activation::Relu).dense(3),
        );
        load_inferred(&name, &[Layer::Act(Activation::Relu)], &given);
    }
}

#[test]
fn linear_without_bias_and_batch_norm_with_and_without_affine() {
    let given = load_given(
        "no_bias_batch_norm",
        MlpBuilder::new(5)
            .dense_without_bias(8)
            .batch_norm()
            .act(Activation::Tanh)
            .dense(4)
            .batch_norm_without_affine()
            .act(Activation::Sigmoid)
            .dense_without_bias(2),
    );
    assert!(given.tensor("0.bias").is_none() && given.tensor("4.weight").is_none());
    // The gaps hold different activations (Tanh, Sigmoid): the names cannot
    // tell, and a single fill gives the structure with that fill everywhere.
    let (st, ..) = case("no_bias_batch_norm");
    let tanh = Layer::Act(Activation::Tanh);
    let (input, layers) = infer_layers(&st, std::slice::from_ref(&tanh)).unwrap();
    let dense = |units, bias| Layer::Dense {
        units,
        init: Init::He,
        bias,
    };
    assert_eq!(input, 5);
    assert_eq!(
        layers,
        [
            dense(8, false),
            Layer::BatchNorm { affine: true },
            tanh.clone(),
            dense(4, true),
            Layer::BatchNorm { affine: false },
            tanh,
            dense(2, false),
        ]
    );
}

#[test]
fn layer_norm_leaky_relu_and_dropout() {
    let act = Activation::LeakyRelu { slope: 0.2 };
    let given = load_given(
        "layer_norm_dropout",
        MlpBuilder::new(6)
            .dense(7)
            .act(act)
            .dropout(0.3)
            .dense(7)
            .layer_norm()
            .act(act)
            .dropout(0.3)
            .dense(2),
    );
    load_inferred(
        "layer_norm_dropout",
        &[Layer::Act(act), Layer::Dropout { p: 0.3 }],
        &given,
    );
}

#[test]
fn gelu_and_layer_norm_without_affine() {
    let given = load_given(
        "gelu_tanh_plain_layer_norm",
        MlpBuilder::new(4)
            .dense(6)
            .act(Activation::Gelu)
            .layer_norm_without_affine()
            .dense(1),
    );
    load_inferred(
        "gelu_tanh_plain_layer_norm",
        &[
            Layer::Act(Activation::Gelu),
            Layer::LayerNorm { affine: false },
        ],
        &given,
    );
}

#[test]
fn exact_gelu() {
    let given = load_given(
        "gelu_exact",
        MlpBuilder::new(4)
            .dense(6)
            .act(Activation::GeluErf)
            .dense(6)
            .act(Activation::GeluErf)
            .dense(2),
    );
    load_inferred("gelu_exact", &[Layer::Act(Activation::GeluErf)], &given);
    // The tanh form is a different function: PyTorch's outputs are not met.
    let (st, x, rows, y) = case("gelu_exact");
    let tanh_form = mlp_from_state_dict(&st, &[Layer::Act(Activation::Gelu)], Loss::Mse).unwrap();
    let h = tanh_form
        .infer(MatRef::from_slice(&x, rows, 4), &mut Inference::default())
        .unwrap()
        .to_vec();
    let worst = h
        .iter()
        .zip(&y)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst > 1e-5, "the two GELU forms differ by {worst}");
}

#[test]
fn what_the_names_do_not_determine_is_refused_with_the_place() {
    let (st, ..) = case("layer_norm_dropout");
    let relu = Layer::Act(Activation::Relu);
    // Two tensor-free modules at 1..=2, one fill layer.
    let e = infer_layers(&st, std::slice::from_ref(&relu)).unwrap_err();
    assert!(matches!(e, IoError::Inference { .. }), "{e}");
    assert!(e.to_string().contains("index 1"), "{e}");
    // A fill layer with tensors.
    let e = infer_layers(&st, &[Layer::BatchNorm { affine: false }]).unwrap_err();
    assert!(e.to_string().contains("fill layer 0"), "{e}");
    // A module before the first tensor.
    let mut shifted = SafeTensors::default();
    for (k, t) in &st.tensors {
        let (i, rest) = k.split_once('.').unwrap();
        let i: usize = i.parse().unwrap();
        shifted
            .tensors
            .insert(format!("{}.{rest}", i + 1), t.clone());
    }
    let e = infer_layers(&shifted, &[relu.clone(), Layer::Dropout { p: 0.3 }]).unwrap_err();
    assert!(e.to_string().contains("modules 0..1"), "{e}");
    // Nested names (a residual block's) are not inferred.
    let mut nested = st.clone();
    let t = nested.tensors.remove("7.bias").unwrap();
    nested.tensors.insert("7.inner.0.bias".into(), t);
    let e = infer_layers(&nested, &[relu.clone(), relu.clone()]).unwrap_err();
    assert!(e.to_string().contains("7.inner.0.bias"), "{e}");
    // Indices that are not written as PyTorch writes them.
    let mut odd = st.clone();
    let t = odd.tensors.remove("7.bias").unwrap();
    odd.tensors.insert("07.bias".into(), t);
    let e = infer_layers(&odd, &[relu.clone(), relu.clone()]).unwrap_err();
    assert!(e.to_string().contains("07.bias"), "{e}");
    // Widths that do not chain.
    let mut bad = st.clone();
    bad.tensors.get_mut("7.weight").unwrap().shape = vec![1, 14];
    let e = infer_layers(&bad, &[relu.clone(), relu.clone()]).unwrap_err();
    assert!(e.to_string().contains("index 7"), "{e}");
    // A LayerNorm with a weight and no bias is no module this crate has.
    let mut bad = st;
    bad.tensors.remove("4.bias");
    let e = infer_layers(&bad, &[relu.clone(), relu]).unwrap_err();
    assert!(e.to_string().contains("index 4"), "{e}");
}
