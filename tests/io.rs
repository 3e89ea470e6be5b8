//! Model files and checkpoints: round trips for every layer kind, the PyTorch
//! names and layouts, hand-built files, corrupt input (typed errors, never a
//! panic), atomic replacement, and bitwise-exact resumption of training.

use std::path::{Path, PathBuf};

use backprop::io::{
    checkpoint_from_safetensors, checkpoint_to_safetensors, from_bytes, load_checkpoint, load_mlp,
    load_weights_into, mlp_from_safetensors, mlp_to_safetensors, read_file, restore,
    save_checkpoint, save_mlp, to_bytes, write_atomic, write_file, IoError, SafeTensors, Tensor,
    KEY_CHECKSUM, MAX_HEADER_LEN,
};
use backprop::matrix::MatRef;
use backprop::nn::{Activation, Init, Layer, Loss, Mlp, MlpBuilder, Targets};
use backprop::optim::{Adam, AdamConfig, Optimizer, Schedule, Sgd, SgdConfig, WeightDecay};
use backprop::train::{Dataset, Trainer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- helpers

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backprop-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `st` with its checksum recomputed (as after a deliberate edit).
fn resealed(st: &SafeTensors) -> SafeTensors {
    let mut st = st.clone();
    let sum = backprop::io::checksum(&st);
    st.metadata.insert(KEY_CHECKSUM.into(), sum);
    st
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn random_input(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect()
}

/// Output of the network in evaluation mode on `x` (`rows × input`).
fn eval_output(net: &mut Mlp, x: &[f32], rows: usize) -> Vec<f32> {
    let was = net.is_training();
    net.set_training(false);
    let out = net
        .forward(MatRef::from_slice(x, rows, net.input_dim()))
        .unwrap()
        .as_row_major_slice()
        .unwrap()
        .to_vec();
    net.set_training(was);
    out
}

/// Gives BatchNorm non-trivial running statistics: a few training-mode
/// forward passes, then a perturbation so no entry is 0 or 1.
fn warm_up_stats(net: &mut Mlp, seed: u64) {
    let d = net.input_dim();
    for k in 0..3 {
        let x = random_input(16, d, seed + k);
        net.forward(MatRef::from_slice(&x, 16, d)).unwrap();
    }
    for (i, b) in net.buffers_mut().iter_mut().enumerate() {
        *b += 0.01 * (i as f32 + 1.0);
    }
}

/// Networks covering every layer kind, activation, init and loss.
fn zoo() -> Vec<(&'static str, Mlp)> {
    let mut nets = Vec::new();
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.07 },
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Gelu,
        Activation::GeluErf,
        Activation::Softplus,
    ];
    // Every activation, fused after a dense layer and standalone.
    let mut b = MlpBuilder::new(5);
    for (i, &a) in acts.iter().enumerate() {
        b = b.dense(6 + i % 2).act(a);
    }
    for &a in &acts {
        b = b.act(a);
    }
    nets.push(("activations", b.dense(2).build(11).unwrap()));
    // Every init.
    let inits = [
        Init::He,
        Init::Xavier,
        Init::XavierUniform,
        Init::LeCun,
        Init::Normal(0.0123),
    ];
    let mut b = MlpBuilder::new(3);
    for &init in &inits {
        b = b.dense_init(4, init).act(Activation::Tanh);
    }
    nets.push(("inits", b.dense(1).loss(Loss::Logistic).build(12).unwrap()));
    nets.push((
        "batch_norm",
        MlpBuilder::new(4)
            .batch_norm()
            .dense(8)
            .act(Activation::Relu)
            .batch_norm()
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(13)
            .unwrap(),
    ));
    nets.push((
        "layer_norm",
        MlpBuilder::new(4)
            .dense(6)
            .layer_norm()
            .act(Activation::Gelu)
            .dense(2)
            .layer_norm()
            .build(14)
            .unwrap(),
    ));
    nets.push((
        "without_bias_or_affine",
        MlpBuilder::new(5)
            .dense_without_bias(6)
            .batch_norm_without_affine()
            .act(Activation::Relu)
            .dense_without_bias(4)
            .act(Activation::Tanh)
            .dense(4)
            .layer_norm_without_affine()
            .dense_without_bias(2)
            .build(16)
            .unwrap(),
    ));
    nets.push((
        "residual",
        MlpBuilder::new(6)
            .dense(5)
            .act(Activation::Relu)
            .residual(|r| {
                r.batch_norm()
                    .dense(7)
                    .act(Activation::LeakyRelu { slope: 0.2 })
                    .dense(5)
                    .residual(|q| q.layer_norm().dense(5).act(Activation::Softplus).dense(5))
            })
            .residual(|r| r.act(Activation::Tanh))
            .batch_norm()
            .dense(4)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(15)
            .unwrap(),
    ));
    for (i, (_, net)) in nets.iter_mut().enumerate() {
        warm_up_stats(net, 100 + i as u64);
        // Non-trivial γ, β too: perturb every parameter a little.
        for (k, p) in net.params_mut().iter_mut().enumerate() {
            *p += 1e-3 * ((k % 7) as f32 - 3.0);
        }
    }
    nets
}

fn assert_same_net(a: &mut Mlp, b: &mut Mlp, what: &str) {
    assert_eq!(a.input_dim(), b.input_dim(), "{what}");
    assert_eq!(a.output_dim(), b.output_dim(), "{what}");
    assert_eq!(a.loss_kind(), b.loss_kind(), "{what}");
    assert_eq!(a.layers(), b.layers(), "{what}");
    assert_eq!(bits(a.params()), bits(b.params()), "{what}: params");
    assert_eq!(bits(a.buffers()), bits(b.buffers()), "{what}: buffers");
    let x = random_input(9, a.input_dim(), 77);
    assert_eq!(
        bits(&eval_output(a, &x, 9)),
        bits(&eval_output(b, &x, 9)),
        "{what}: eval outputs"
    );
}

/// A safetensors file from a header text and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The network of the PyTorch-layout test:
/// `nn.Sequential(nn.Linear(4,8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8,3))`.
fn torch_like() -> Mlp {
    let mut net = MlpBuilder::new(4)
        .dense(8)
        .act(Activation::Relu)
        .batch_norm()
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(5)
        .unwrap();
    warm_up_stats(&mut net, 9);
    net
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trips_every_layer_kind_in_memory_and_on_disk() {
    let dir = temp_dir("roundtrip");
    for (name, mut net) in zoo() {
        let bytes = to_bytes(&mlp_to_safetensors(&net)).unwrap();
        let mut back = mlp_from_safetensors(&from_bytes(&bytes).unwrap()).unwrap();
        assert_same_net(&mut net, &mut back, name);

        let path = dir.join(format!("{name}.safetensors"));
        save_mlp(&net, &path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{name}: file = to_bytes"
        );
        let mut loaded = load_mlp(&path).unwrap();
        // Loaded for use: evaluation mode (issue 14).
        assert!(!loaded.is_training());
        assert_same_net(&mut net, &mut loaded, name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn float_hyperparameters_survive_bit_for_bit() {
    for slope in [0.1f32, 1e-30, 3.4e38, -0.5, f32::MIN_POSITIVE, 1.0 / 3.0] {
        let net = MlpBuilder::new(2)
            .dense_init(3, Init::Normal(slope.abs() / 7.0))
            .act(Activation::LeakyRelu { slope })
            .dense(1)
            .build(1)
            .unwrap();
        let back = mlp_from_safetensors(&mlp_to_safetensors(&net)).unwrap();
        assert_eq!(back.layers(), net.layers(), "slope {slope:e}");
    }
}

#[test]
fn load_weights_into_copies_by_name() {
    let mut a = torch_like();
    let mut b = MlpBuilder::new(4)
        .dense(8)
        .act(Activation::Relu)
        .batch_norm()
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(99)
        .unwrap();
    assert_ne!(bits(a.params()), bits(b.params()));
    let mut st = mlp_to_safetensors(&a);
    st.metadata.clear(); // names alone suffice
    load_weights_into(&mut b, &st).unwrap();
    assert_same_net(&mut a, &mut b, "load_weights_into");

    // A mismatching file leaves the network untouched.
    let before = bits(b.params());
    st.tensors.remove("layers.3.bias");
    let err = load_weights_into(&mut b, &st).unwrap_err();
    assert!(matches!(&err, IoError::MissingTensor { name } if name == "layers.3.bias"));
    assert_eq!(bits(b.params()), before);
}

// ---------------------------------------------------------------- PyTorch layout

#[test]
fn names_and_shapes_are_pytorch_sequential_state_dict() {
    let net = torch_like();
    let st = mlp_to_safetensors(&net);
    let mut got: Vec<(&str, Vec<usize>)> = st
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.shape.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        ("layers.0.weight", vec![8, 4]),
        ("layers.0.bias", vec![8]),
        ("layers.2.weight", vec![8]),
        ("layers.2.bias", vec![8]),
        ("layers.2.running_mean", vec![8]),
        ("layers.2.running_var", vec![8]),
        ("layers.3.weight", vec![3, 8]),
        ("layers.3.bias", vec![3]),
    ];
    want.sort();
    assert_eq!(got, want);

    // Dense weights are Wᵀ: weight[j][i] = W[i][j] (W is fan_in × fan_out).
    let dense = net.dense_layers();
    assert_eq!(dense.len(), 2);
    for (d, name) in dense.into_iter().zip(["layers.0", "layers.3"]) {
        let (w, b, fan_in, fan_out) = (d.weight, d.bias.unwrap(), d.fan_in, d.fan_out);
        let wt = &st.tensors[&format!("{name}.weight")];
        assert_eq!(wt.shape, [fan_out, fan_in]);
        let arena = &net.params()[w];
        for i in 0..fan_in {
            for j in 0..fan_out {
                assert_eq!(
                    wt.data[j * fan_in + i].to_bits(),
                    arena[i * fan_out + j].to_bits(),
                    "{name} ({i},{j})"
                );
            }
        }
        assert_eq!(
            bits(&st.tensors[&format!("{name}.bias")].data),
            bits(&net.params()[b])
        );
    }
    // BatchNorm: γ, β after the first dense layer (32 + 8 values); the running
    // mean then variance in the buffers.
    let p = net.params();
    assert_eq!(bits(&st.tensors["layers.2.weight"].data), bits(&p[40..48]));
    assert_eq!(bits(&st.tensors["layers.2.bias"].data), bits(&p[48..56]));
    let buf = net.buffers();
    assert_eq!(
        bits(&st.tensors["layers.2.running_mean"].data),
        bits(&buf[..8])
    );
    assert_eq!(
        bits(&st.tensors["layers.2.running_var"].data),
        bits(&buf[8..])
    );
    assert!(
        buf[8..].iter().all(|&v| v != 1.0),
        "running var was updated"
    );

    // The metadata describes the architecture.
    assert_eq!(st.metadata["backprop.format_version"], "2");
    assert_eq!(st.metadata["backprop.input_dim"], "4");
    assert_eq!(st.metadata["backprop.loss"], "softmax_cross_entropy");
    assert_eq!(
        st.metadata["backprop.layers"],
        r#"[{"type":"dense","units":8,"init":"he"},{"type":"activation","name":"relu"},{"type":"batch_norm"},{"type":"dense","units":3,"init":"he"}]"#
    );
}

/// The tensors, read with PyTorch's semantics (`y = x·weightᵀ + bias`,
/// BatchNorm in eval mode with eps 1e-5), compute what the network computes.
#[test]
fn tensors_mean_what_pytorch_means() {
    let mut net = torch_like();
    let st = mlp_to_safetensors(&net);
    let t = |n: &str| st.tensors[n].data.clone();
    let linear = |x: &[f32], w: &[f32], b: &[f32], out: usize| -> Vec<f32> {
        let inp = x.len();
        (0..out)
            .map(|j| b[j] + (0..inp).map(|i| x[i] * w[j * inp + i]).sum::<f32>())
            .collect()
    };
    let rows = 5;
    let x = random_input(rows, 4, 3);
    let ours = eval_output(&mut net, &x, rows);
    for r in 0..rows {
        let h = linear(
            &x[r * 4..r * 4 + 4],
            &t("layers.0.weight"),
            &t("layers.0.bias"),
            8,
        );
        let h: Vec<f32> = h.iter().map(|v| v.max(0.0)).collect();
        let (g, be, m, v) = (
            t("layers.2.weight"),
            t("layers.2.bias"),
            t("layers.2.running_mean"),
            t("layers.2.running_var"),
        );
        let h: Vec<f32> = (0..8)
            .map(|k| (h[k] - m[k]) / (v[k] + 1e-5).sqrt() * g[k] + be[k])
            .collect();
        let y = linear(&h, &t("layers.3.weight"), &t("layers.3.bias"), 3);
        for j in 0..3 {
            let o = ours[r * 3 + j];
            assert!(
                (o - y[j]).abs() <= 1e-4 * (1.0 + y[j].abs()),
                "row {r} out {j}: {o} vs {}",
                y[j]
            );
        }
    }
}

#[test]
fn residual_blocks_nest_under_inner() {
    let net = MlpBuilder::new(3)
        .dense(4)
        .residual(|r| {
            r.act(Activation::Relu)
                .dense(4)
                .residual(|q| q.layer_norm())
        })
        .build(1)
        .unwrap();
    let st = mlp_to_safetensors(&net);
    let names: Vec<&str> = st.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.inner.1.bias",
            "layers.1.inner.1.weight",
            "layers.1.inner.2.inner.0.bias",
            "layers.1.inner.2.inner.0.weight",
        ]
    );
    assert_eq!(st.tensors["layers.1.inner.1.weight"].shape, [4, 4]);
    assert_eq!(st.tensors["layers.1.inner.2.inner.0.weight"].shape, [4]);
}

// ---------------------------------------------------------------- hand-built files

#[test]
fn reads_a_hand_built_file() {
    // Tensors listed out of data order, an escaped name, a scalar, F64 and
    // I64, whitespace and trailing space padding in the header.
    let header = "{ \"__metadata__\" : {\"format\":\"pt\", \"note\":\"tab\\there \\u00e9 \\ud83d\\ude00 \\\"q\\\" \\/\"},\n\
                  \"b\\u0020\\\"x\\\"\": {\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[12,28]},\n\
                  \"a\": {\"shape\":[1,3],\"dtype\":\"F32\",\"data_offsets\":[0,12]},\n\
                  \"c\": {\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[28,36]},\n\
                  \"empty\": {\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[36,36]}}   ";
    let mut data = f32_bytes(&[1.0, -2.5, 3.25]);
    data.extend_from_slice(&0.1f64.to_le_bytes());
    data.extend_from_slice(&(-4.0f64).to_le_bytes());
    data.extend_from_slice(&12345i64.to_le_bytes());
    let st = from_bytes(&file(header, &data)).unwrap();
    assert_eq!(st.metadata.len(), 2);
    assert_eq!(st.metadata["format"], "pt");
    assert_eq!(st.metadata["note"], "tab\there é 😀 \"q\" /");
    assert_eq!(st.tensors.len(), 4);
    assert_eq!(
        st.tensors["a"],
        Tensor::new(vec![1, 3], vec![1.0, -2.5, 3.25])
    );
    assert_eq!(
        st.tensors["b \"x\""],
        Tensor::new(vec![2], vec![0.1f64 as f32, -4.0])
    );
    assert_eq!(st.tensors["c"], Tensor::new(vec![], vec![12345.0]));
    assert_eq!(st.tensors["empty"], Tensor::new(vec![0, 5], vec![]));

    // What we write reads back the same, escapes included.
    assert_eq!(from_bytes(&to_bytes(&st).unwrap()).unwrap(), st);
    // The empty file: `{}` and no data.
    assert_eq!(
        from_bytes(&file("{}", &[])).unwrap(),
        SafeTensors::default()
    );
}

#[test]
fn writes_the_documented_bytes() {
    let mut st = SafeTensors::default();
    st.tensors
        .insert("w".into(), Tensor::new(vec![2], vec![1.0, 2.0]));
    st.metadata.insert("k".into(), "v\n".into());
    let bytes = to_bytes(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data section is 8-byte aligned");
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert_eq!(
        header.trim_end(),
        r#"{"__metadata__":{"k":"v\n"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
    );
    assert_eq!(&bytes[8 + n..], &f32_bytes(&[1.0, 2.0])[..]);
    // Writing checks the tensors.
    st.tensors
        .insert("bad".into(), Tensor::new(vec![3], vec![1.0]));
    assert!(
        matches!(to_bytes(&st), Err(IoError::DataLength { tensor, len: 1, .. }) if tensor == "bad")
    );
    st.tensors.remove("bad");
    st.tensors
        .insert("__metadata__".into(), Tensor::new(vec![], vec![1.0]));
    assert!(matches!(to_bytes(&st), Err(IoError::ReservedName)));
}

/// A PyTorch-style file written by hand — `Linear(2, 3)` then `BatchNorm1d(3)`
/// with `num_batches_tracked` — plus our architecture metadata, loads into
/// the arena layout.
#[test]
fn loads_a_hand_built_network_file() {
    let layers = r#"[{"type":"dense","units":3,"init":"xavier"},{"type":"batch_norm"}]"#;
    let mut meta = String::new();
    for (k, v) in [
        ("backprop.format_version", "1"),
        ("backprop.input_dim", "2"),
        ("backprop.loss", "mse"),
        ("backprop.layers", layers),
    ] {
        let v = v.replace('"', "\\\"");
        meta.push_str(&format!("\"{k}\":\"{v}\","));
    }
    meta.pop();
    let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [out=3, in=2]
    let b = [0.5f32, -0.5, 0.25];
    let gamma = [1.5f32, 2.0, 0.5];
    let beta = [0.1f32, 0.2, 0.3];
    let mean = [0.0f32, 1.0, -1.0];
    let var = [4.0f32, 1.0, 0.25];
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for (name, shape, v) in [
        ("layers.0.weight", "[3,2]", &w[..]),
        ("layers.0.bias", "[3]", &b),
        ("layers.1.weight", "[3]", &gamma),
        ("layers.1.bias", "[3]", &beta),
        ("layers.1.running_mean", "[3]", &mean),
        ("layers.1.running_var", "[3]", &var),
    ] {
        let start = data.len();
        data.extend(f32_bytes(v));
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    let start = data.len();
    data.extend_from_slice(&7i64.to_le_bytes());
    entries.push(format!(
        "\"layers.1.num_batches_tracked\":{{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[{start},{}]}}",
        data.len()
    ));
    let header = format!("{{\"__metadata__\":{{{meta}}},{}}}", entries.join(","));
    let st = from_bytes(&file(&header, &data)).unwrap();
    let mut net = mlp_from_safetensors(&st).unwrap();
    assert_eq!(
        net.layers(),
        [
            Layer::Dense {
                units: 3,
                init: Init::Xavier,
                bias: true,
            },
            Layer::BatchNorm { affine: true }
        ]
    );
    // W = weightᵀ (2 × 3), then b, γ, β; running mean then var.
    assert_eq!(
        net.params(),
        [1.0, 3.0, 5.0, 2.0, 4.0, 6.0, 0.5, -0.5, 0.25, 1.5, 2.0, 0.5, 0.1, 0.2, 0.3]
    );
    assert_eq!(net.buffers(), [0.0, 1.0, -1.0, 4.0, 1.0, 0.25]);
    // x = (1, 1): z = (3.5, 6.5, 11.25); BN eval: (z − m)/√(v + ε)·γ + β.
    let out = eval_output(&mut net, &[1.0, 1.0], 1);
    let expect = [
        3.5 / (4.0f32 + 1e-5).sqrt() * 1.5 + 0.1,
        5.5 / (1.0f32 + 1e-5).sqrt() * 2.0 + 0.2,
        12.25 / (0.25f32 + 1e-5).sqrt() * 0.5 + 0.3,
    ];
    for (o, e) in out.iter().zip(expect) {
        assert!((o - e).abs() < 1e-4, "{out:?} vs {expect:?}");
    }
}

// ---------------------------------------------------------------- corrupt input

fn tensor_header(entries: &[(&str, &str, &str, (u64, u64))]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(name, dtype, shape, (b, e))| {
            format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{b},{e}]}}"
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[test]
fn malformed_containers_give_typed_errors() {
    let valid = to_bytes(&mlp_to_safetensors(&torch_like())).unwrap();
    let n = valid.len();
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let data12 = f32_bytes(&[1.0, 2.0, 3.0]);
    let with_prefix = |len: u64| {
        let mut m = valid.clone();
        m[..8].copy_from_slice(&len.to_le_bytes());
        m
    };
    let mut bad_utf8 = file("{\"a\":{}}", &[]);
    bad_utf8[10] = 0xFF;

    // Each input is refused by the `safetensors` crate as not a valid file;
    // the message says why.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (valid[..5].to_vec(), "shorter than the length prefix"),
        (Vec::new(), "empty"),
        (valid[..n - 1].to_vec(), "cut inside the data"),
        (
            valid[..8 + header_len / 2].to_vec(),
            "cut inside the header",
        ),
        (
            with_prefix((n - 8 + 1) as u64),
            "header length past the end",
        ),
        (with_prefix(u64::MAX), "huge header length"),
        (
            with_prefix(MAX_HEADER_LEN + 1),
            "header length over the limit",
        ),
        (file("{\"a\":", &[]), "unterminated JSON"),
        (file("{\"a\":{}}}", &[]), "trailing brace"),
        (file("[1]x", &[]), "not an object"),
        (file("{\"a\":1.5}", &[]), "entry a number"),
        (file("{'a':1}", &[]), "single quotes"),
        (file("", &[]), "empty header"),
        (file("[]", &[]), "an array"),
        (bad_utf8, "invalid UTF-8"),
        (
            file(&tensor_header(&[("t", "F32", "[3]", (0, 100))]), &data12),
            "offsets out of bounds",
        ),
        (
            file(
                &tensor_header(&[("t", "F32", "[0]", (8, 4)), ("u", "F32", "[3]", (0, 12))]),
                &data12,
            ),
            "reversed offsets",
        ),
        (
            file(
                &tensor_header(&[("a", "F32", "[2]", (0, 8)), ("b", "F32", "[2]", (4, 12))]),
                &data12,
            ),
            "overlap",
        ),
        (
            file(
                &tensor_header(&[("a", "F32", "[1]", (0, 4)), ("b", "F32", "[1]", (8, 12))]),
                &data12,
            ),
            "gap between tensors",
        ),
        (
            file(&tensor_header(&[("a", "F32", "[2]", (4, 12))]), &data12),
            "leading gap",
        ),
        (
            file(&tensor_header(&[("a", "F32", "[2]", (0, 8))]), &data12),
            "trailing bytes",
        ),
        (
            file(&tensor_header(&[("s", "F32", "[2,2]", (0, 12))]), &data12),
            "shape against byte count",
        ),
        (
            file(
                &tensor_header(&[("s", "F32", "[18446744073709551615,2]", (0, 12))]),
                &data12,
            ),
            "overflowing shape",
        ),
        (
            file(&tensor_header(&[("s", "F64", "[3]", (0, 12))]), &data12),
            "F64 size",
        ),
        (
            file(&tensor_header(&[("x", "f32", "[3]", (0, 12))]), &data12),
            "unknown dtype spelling",
        ),
        (
            file(r#"{"x":{"dtype":"F32","shape":[3]}}"#, &data12),
            "no offsets",
        ),
        (
            file(r#"{"x":{"dtype":"F32","data_offsets":[0,12]}}"#, &data12),
            "no shape",
        ),
        (
            file(r#"{"x":{"shape":[3],"data_offsets":[0,12]}}"#, &data12),
            "no dtype",
        ),
        (
            file(
                r#"{"x":{"dtype":"F32","shape":["3"],"data_offsets":[0,12]}}"#,
                &data12,
            ),
            "string dim",
        ),
        (
            file(
                r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12,12]}}"#,
                &data12,
            ),
            "three offsets",
        ),
        (file(r#"{"x":[]}"#, &data12), "entry not an object"),
        (
            file(r#"{"__metadata__":{"k":1}}"#, &[]),
            "metadata value not a string",
        ),
        (
            file(r#"{"__metadata__":[]}"#, &[]),
            "metadata not an object",
        ),
    ];
    for (bytes, what) in cases {
        match from_bytes(&bytes) {
            Err(IoError::Format { message }) => {
                let e = IoError::Format { message };
                assert!(
                    e.to_string().starts_with("not a safetensors file: "),
                    "{what}: {e}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }

    // Valid files with a dtype this crate does not read: typed, naming it.
    for dtype in ["U8", "I32", "BOOL"] {
        let size = if dtype == "I32" { 4 } else { 1 };
        let data = vec![0u8; 3 * size];
        let bytes = file(
            &tensor_header(&[("x", dtype, "[3]", (0, 3 * size as u64))]),
            &data,
        );
        let e = from_bytes(&bytes).unwrap_err();
        assert!(
            matches!(&e, IoError::UnsupportedDtype { tensor, dtype: d } if tensor == "x" && d == dtype),
            "{dtype}: {e:?}"
        );
    }
}

/// Half-precision and double files (as PyTorch writes them after
/// `model.half()`, `model.bfloat16()` or `model.double()`), made by the
/// `safetensors` crate's own writer, load converted to `f32`.
#[test]
fn half_bfloat_and_double_tensors_are_converted_on_load() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    // f16 bit patterns and the f32 each stands for exactly.
    let f16: [(u16, f32); 8] = [
        (0x3c00, 1.0),
        (0xc000, -2.0),
        (0x7bff, 65504.0),
        (0x0001, 5.960_464_5e-8),
        (0x8400, -6.103_515_6e-5),
        (0x3555, 0.333_251_95),
        (0x0000, 0.0),
        (0x7c00, f32::INFINITY),
    ];
    let f16_bytes: Vec<u8> = f16.iter().flat_map(|(b, _)| b.to_le_bytes()).collect();
    let bf16_values = [1.0f32, -3.5, 2f32.powi(100), 0.15625];
    let bf16_bytes: Vec<u8> = bf16_values
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let f64_values = [0.1f64, -1.0e-3, 12345.678];
    let f64_bytes: Vec<u8> = f64_values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = [
        (
            "h",
            TensorView::new(Dtype::F16, vec![2, 4], &f16_bytes).unwrap(),
        ),
        (
            "b",
            TensorView::new(Dtype::BF16, vec![4], &bf16_bytes).unwrap(),
        ),
        (
            "d",
            TensorView::new(Dtype::F64, vec![3, 1], &f64_bytes).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    let st = from_bytes(&bytes).unwrap();
    assert_eq!(st.tensors["h"].shape, [2, 4]);
    let want: Vec<f32> = f16.iter().map(|&(_, v)| v).collect();
    assert_eq!(bits(&st.tensors["h"].data), bits(&want));
    assert_eq!(bits(&st.tensors["b"].data), bits(&bf16_values));
    let want: Vec<f32> = f64_values.iter().map(|&v| v as f32).collect();
    assert_eq!(st.tensors["d"], Tensor::new(vec![3, 1], want));

    // Every finite f16 against its value computed from the definition.
    let all: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let views = [(
        "all",
        TensorView::new(Dtype::F16, vec![1 << 16], &all).unwrap(),
    )];
    let st = from_bytes(&safetensors::serialize(views, None).unwrap()).unwrap();
    for (h, &got) in (0..=u16::MAX).zip(&st.tensors["all"].data) {
        let (sign, exp, man) = (h >> 15, i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
        let magnitude = match exp {
            0 => man * 2f64.powi(-24),
            31 if man == 0.0 => f64::INFINITY,
            31 => f64::NAN,
            _ => (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
        };
        let want = if sign == 1 { -magnitude } else { magnitude };
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}");
        } else {
            assert_eq!(got.to_bits(), (want as f32).to_bits(), "{h:#06x}");
        }
    }
}

/// What `to_bytes` writes, the `safetensors` crate reads back as the same
/// tensors and metadata, and equal contents give equal bytes.
#[test]
fn files_written_here_read_back_through_the_crate_and_are_deterministic() {
    let mut st = mlp_to_safetensors(&torch_like());
    st.metadata
        .insert("note".into(), "é \"quoted\" \\ \n".into());
    let bytes = to_bytes(&st).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(parsed.len(), st.tensors.len());
    for (name, t) in &st.tensors {
        let view = parsed.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        assert_eq!(view.shape(), &t.shape[..]);
        assert_eq!(view.data(), &f32_bytes(&t.data)[..]);
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert_eq!(meta.len(), st.metadata.len());
    for (k, v) in &st.metadata {
        assert_eq!(&meta[k.as_str()], v);
    }
    assert_eq!(to_bytes(&st.clone()).unwrap(), bytes);
    assert_eq!(to_bytes(&from_bytes(&bytes).unwrap()).unwrap(), bytes);
}

#[test]
fn files_that_do_not_fit_the_architecture_give_typed_errors() {
    let good = mlp_to_safetensors(&torch_like());
    // Edited contents get a fresh checksum, to reach the checks behind it.
    let load = |st: &SafeTensors| {
        mlp_from_safetensors(&from_bytes(&to_bytes(&resealed(st)).unwrap()).unwrap())
    };
    assert!(load(&good).is_ok());

    // A tensor missing.
    let mut st = good.clone();
    st.tensors.remove("layers.2.running_var");
    let e = load(&st).unwrap_err();
    assert!(
        matches!(&e, IoError::MissingTensor { name } if name == "layers.2.running_var"),
        "{e}"
    );
    assert!(e.to_string().contains("layers.2.running_var"));

    // Wrong shapes: the untransposed weight, and a bias of the wrong length.
    let mut st = good.clone();
    let w = st.tensors.get_mut("layers.0.weight").unwrap();
    w.shape = vec![4, 8];
    let e = load(&st).unwrap_err();
    assert!(
        matches!(&e, IoError::WrongShape { name, expected, got }
            if name == "layers.0.weight" && expected == &[8, 4] && got == &[4, 8]),
        "{e}"
    );
    let mut st = good.clone();
    st.tensors
        .insert("layers.3.bias".into(), Tensor::new(vec![4], vec![0.0; 4]));
    assert!(matches!(load(&st), Err(IoError::WrongShape { name, .. }) if name == "layers.3.bias"));

    // A tensor the architecture lacks; tensors outside `layers.` are ignored.
    let mut st = good.clone();
    st.tensors
        .insert("layers.1.weight".into(), Tensor::new(vec![1], vec![0.0]));
    assert!(
        matches!(load(&st), Err(IoError::UnexpectedTensor { name }) if name == "layers.1.weight")
    );
    let mut st = good.clone();
    st.tensors
        .insert("extra".into(), Tensor::new(vec![1], vec![0.0]));
    assert!(load(&st).is_ok());

    // Metadata missing or malformed.
    for key in [
        "backprop.format_version",
        "backprop.input_dim",
        "backprop.loss",
        "backprop.layers",
    ] {
        let mut st = good.clone();
        st.metadata.remove(key);
        assert!(
            matches!(load(&st), Err(IoError::MissingMetadata { key: k }) if k == key),
            "{key}"
        );
    }
    for (key, value) in [
        ("backprop.format_version", "3"),
        ("backprop.input_dim", "-4"),
        ("backprop.input_dim", "four"),
        ("backprop.loss", "hinge"),
        ("backprop.layers", "[{\"type\":\"dense\"}]"),
        (
            "backprop.layers",
            "[{\"type\":\"dense\",\"units\":8,\"init\":\"he\",}]",
        ),
        ("backprop.layers", "{}"),
        (
            "backprop.layers",
            "[{\"type\":\"activation\",\"name\":\"leaky_relu\",\"slope\":\"steep\"}]",
        ),
    ] {
        let mut st = good.clone();
        st.metadata.insert(key.into(), value.into());
        let e = load(&st).unwrap_err();
        assert!(
            matches!(&e, IoError::Metadata { key: k, .. } if k == key),
            "{key}={value}: {e}"
        );
    }
    // An architecture that names the right tensors but does not build.
    let mut st = good.clone();
    st.metadata
        .insert("backprop.loss".into(), "logistic".into());
    assert!(matches!(load(&st), Err(IoError::Build(_))));

    // Absurd sizes in the metadata are refused before anything is allocated.
    for units in ["1099511627776", "18446744073709551615"] {
        let mut st = good.clone();
        let layers = st.metadata["backprop.layers"].replacen(
            "\"units\":8",
            &format!("\"units\":{units}"),
            1,
        );
        st.metadata.insert("backprop.layers".into(), layers);
        let e = load(&st).unwrap_err();
        // The layout is computed from the layers' declarations, which check
        // the arena against MAX_ELEMENTS: a size past it is a build error.
        assert!(
            matches!(
                e,
                IoError::WrongShape { .. }
                    | IoError::Metadata { .. }
                    | IoError::Build(backprop::nn::BuildError::TooLarge { .. })
            ),
            "units {units}: {e}"
        );
    }
    let mut st = good.clone();
    st.metadata
        .insert("backprop.input_dim".into(), u64::MAX.to_string());
    assert!(load(&st).is_err());
    // Deep nesting in the layer list.
    let mut st = good;
    let deep = "[{\"type\":\"residual\",\"layers\":".repeat(200) + &"]".repeat(200);
    st.metadata.insert("backprop.layers".into(), deep);
    assert!(matches!(load(&st), Err(IoError::Metadata { .. })));
}

/// Seeded random mutations of valid files: parsing and rebuilding return
/// errors or values, never panic.
#[test]
fn random_mutations_never_panic() {
    let trainer = small_trainer(OptKind::Adam, 3);
    let sources = [
        to_bytes(&mlp_to_safetensors(&zoo().swap_remove(4).1)).unwrap(),
        to_bytes(&checkpoint_to_safetensors(&trainer)).unwrap(),
    ];
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut ok, mut err) = (0, 0);
    for round in 0..2000 {
        let src = &sources[round % 2];
        let mut m = src.clone();
        let header_end = 8 + u64::from_le_bytes(src[..8].try_into().unwrap()) as usize;
        for _ in 0..rng.random_range(1..4) {
            // Mostly in the header, where the structure is.
            let pos = if rng.random_bool(0.85) {
                rng.random_range(0..header_end.min(m.len()).max(1))
            } else {
                rng.random_range(0..m.len().max(1))
            };
            match rng.random_range(0..7) {
                0 if pos < m.len() => m[pos] ^= 1 << rng.random_range(0..8),
                1 if pos < m.len() => m[pos] = rng.random(),
                2 if pos < m.len() => {
                    let alphabet = b"0123456789{}[]\":,\\ u-.e";
                    m[pos] = alphabet[rng.random_range(0..alphabet.len())];
                }
                3 => m.truncate(pos),
                4 => m.insert(pos.min(m.len()), rng.random()),
                5 if pos < m.len() => {
                    m.remove(pos);
                }
                6 => {
                    let len: u64 = match rng.random_range(0..3) {
                        0 => rng.random(),
                        1 => rng.random_range(0..m.len() as u64 + 16),
                        _ => (header_end as u64 - 8).wrapping_add(rng.random_range(0..5)) - 2,
                    };
                    if m.len() >= 8 {
                        m[..8].copy_from_slice(&len.to_le_bytes());
                    }
                }
                _ => {}
            }
        }
        match from_bytes(&m) {
            Ok(st) => {
                ok += 1;
                let _ = mlp_from_safetensors(&st).map(|net| net.num_params());
                let _ = checkpoint_from_safetensors(&st).map(|c| c.steps);
            }
            Err(e) => {
                err += 1;
                let _ = e.to_string();
            }
        }
    }
    assert!(ok > 50 && err > 500, "ok {ok}, err {err}");
}

// ---------------------------------------------------------------- atomic writes

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_write_replaces_whole_files_and_cleans_up() {
    let dir = temp_dir("atomic");
    let target = dir.join("model.safetensors");
    write_atomic(&target, b"old content").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"old content");
    write_atomic(&target, b"new").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert_eq!(dir_entries(&dir), ["model.safetensors"]);

    // Failures: a missing directory, and a target that is a non-empty
    // directory (the rename fails after the temporary file was written).
    let e = write_atomic(dir.join("missing").join("x"), b"data").unwrap_err();
    assert!(matches!(&e, IoError::Io { .. }), "{e}");
    let blocker = dir.join("blocker");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("inside"), b"keep").unwrap();
    let e = write_atomic(&blocker, b"data").unwrap_err();
    assert!(
        matches!(&e, IoError::Io { path, .. } if path == &blocker),
        "{e}"
    );
    assert_eq!(dir_entries(&dir), ["blocker", "model.safetensors"]);
    assert_eq!(std::fs::read(blocker.join("inside")).unwrap(), b"keep");

    // A reader racing the writer sees one version or the other, whole.
    let a = vec![b'a'; 100_000];
    let b = vec![b'b'; 3_000];
    write_atomic(&target, &a).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::fs::read(&target).unwrap();
                assert!(got == a || got == b, "torn read of {} bytes", got.len());
                reads += 1;
            }
            reads
        });
        for i in 0..100 {
            write_atomic(&target, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(dir_entries(&dir), ["blocker", "model.safetensors"]);

    // write_file / read_file go through the same path.
    let mut st = SafeTensors::default();
    st.tensors
        .insert("x".into(), Tensor::new(vec![1], vec![4.0]));
    write_file(&st, &target).unwrap();
    assert_eq!(read_file(&target).unwrap(), st);
    assert!(matches!(
        read_file(dir.join("nope")),
        Err(IoError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- checkpoints

#[derive(Clone, Copy, Debug)]
enum OptKind {
    Adam,
    SgdMomentum,
}

fn dataset() -> Dataset {
    let mut rng = StdRng::seed_from_u64(8);
    let (n, d) = (53, 5); // 53 = 6 batches of 8 and one of 5
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let c: Vec<usize> = (0..n)
        .map(|i| {
            let r = &x[i * d..(i + 1) * d];
            usize::from(r[0] + r[1] > 0.0) + usize::from(r[2] > 0.3)
        })
        .collect();
    Dataset::new(x, n, d, Targets::Classes(&c)).unwrap()
}

fn optimizer(kind: OptKind, n: usize) -> Box<dyn Optimizer + Send> {
    match kind {
        OptKind::Adam => Box::new(Adam::new(n, AdamConfig::adamw(0.01))),
        OptKind::SgdMomentum => Box::new(Sgd::new(
            n,
            SgdConfig {
                momentum: 0.9,
                nesterov: false,
                weight_decay: WeightDecay::L2(1e-4),
            },
        )),
    }
}

/// The same configuration every time; `init_seed` only changes the initial
/// weights (a restored trainer's are overwritten).
fn small_trainer(kind: OptKind, init_seed: u64) -> Trainer {
    let net = MlpBuilder::new(5)
        .dense(12)
        .act(Activation::Relu)
        .batch_norm()
        .residual(|r| r.dense(12).act(Activation::Tanh).layer_norm())
        .dense(3)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(init_seed)
        .unwrap();
    let opt = optimizer(kind, net.num_params());
    let schedule = Schedule::warmup(5, 0.1, Schedule::cosine(0.05, 0.001, 40));
    Trainer::new(net, opt, schedule, 31)
}

fn assert_same_trainer(a: &Trainer, b: &Trainer, what: &str) {
    assert_eq!(a.steps(), b.steps(), "{what}");
    assert_eq!(a.epochs(), b.epochs(), "{what}");
    assert_eq!(
        bits(a.net().params()),
        bits(b.net().params()),
        "{what}: params"
    );
    assert_eq!(
        bits(a.net().buffers()),
        bits(b.net().buffers()),
        "{what}: buffers"
    );
    let (sa, sb) = (a.optimizer().state(), b.optimizer().state());
    assert_eq!(sa.steps, sb.steps, "{what}");
    assert_eq!(sa.buffers.len(), sb.buffers.len(), "{what}");
    for (x, y) in sa.buffers.iter().zip(&sb.buffers) {
        assert_eq!(bits(x), bits(y), "{what}: optimizer state");
    }
}

fn resume_is_bitwise_exact(kind: OptKind) {
    let data = dataset();
    let (e1, e2, batch) = (3, 2, 8);
    let dir = temp_dir(&format!("resume-{kind:?}"));
    let path = dir.join("ckpt.safetensors");

    let mut straight = small_trainer(kind, 1);
    for _ in 0..e1 + e2 {
        straight.train_epoch(&data, batch).unwrap();
    }

    let mut first = small_trainer(kind, 1);
    for _ in 0..e1 {
        first.train_epoch(&data, batch).unwrap();
    }
    save_checkpoint(&first, &path).unwrap();
    drop(first);
    let ckpt = load_checkpoint(&path).unwrap();
    assert_eq!((ckpt.steps, ckpt.epochs, ckpt.seed), (21, 3, 31));
    assert_eq!(ckpt.optimizer.steps, 21);

    // Into a freshly built trainer with different initial weights.
    let mut resumed = small_trainer(kind, 2);
    restore(&mut resumed, &ckpt).unwrap();
    for _ in 0..e2 {
        resumed.train_epoch(&data, batch).unwrap();
    }
    assert_same_trainer(&straight, &resumed, "restore");
    assert!(straight.net().params().iter().all(|p| p.is_finite()));

    // The same through `into_trainer`.
    let n = ckpt.net.num_params();
    let mut rebuilt = ckpt.into_trainer(optimizer(kind, n)).unwrap();
    for _ in 0..e2 {
        rebuilt.train_epoch(&data, batch).unwrap();
    }
    assert_same_trainer(&straight, &rebuilt, "into_trainer");

    // The checkpoint is also a network file.
    let net = load_mlp(&path).unwrap();
    assert_eq!(net.num_params(), n);
    assert_eq!(dir_entries(&dir), ["ckpt.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_with_adam_is_bitwise_exact() {
    resume_is_bitwise_exact(OptKind::Adam);
}

#[test]
fn resume_with_sgd_momentum_is_bitwise_exact() {
    resume_is_bitwise_exact(OptKind::SgdMomentum);
}

#[test]
fn checkpoint_layout_and_metadata() {
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1);
    t.train_epoch(&data, 8).unwrap();
    let st = checkpoint_to_safetensors(&t);
    let n = t.net().num_params();
    assert_eq!(st.tensors["optimizer.exp_avg"].shape, [n]);
    assert_eq!(st.tensors["optimizer.exp_avg_sq"].shape, [n]);
    let state = t.optimizer().state();
    assert_eq!(
        bits(&st.tensors["optimizer.exp_avg"].data),
        bits(state.buffers[0])
    );
    assert_eq!(
        bits(&st.tensors["optimizer.exp_avg_sq"].data),
        bits(state.buffers[1])
    );
    let m = &st.metadata;
    assert_eq!(m["backprop.checkpoint_version"], "2");
    assert_eq!(m["backprop.optimizer.steps"], "7");
    assert_eq!(
        m["backprop.optimizer.buffers"],
        r#"["exp_avg","exp_avg_sq"]"#
    );
    assert_eq!(m["backprop.trainer.steps"], "7");
    assert_eq!(m["backprop.trainer.epochs"], "1");
    assert_eq!(m["backprop.trainer.seed"], "31");
    assert_eq!(
        m["backprop.trainer.schedule"],
        "warmup:5:0.1:cosine:0.05:0.001:40"
    );
    assert_eq!(m["backprop.input_dim"], "5");

    // Plain SGD has no buffers.
    let net = MlpBuilder::new(2).dense(1).build(0).unwrap();
    let opt = Sgd::new(net.num_params(), SgdConfig::default());
    let t = Trainer::new(net, Box::new(opt), Schedule::constant(0.1), 0);
    let st = checkpoint_to_safetensors(&t);
    assert_eq!(st.metadata["backprop.optimizer.buffers"], "[]");
    assert!(st.tensors.keys().all(|k| k.starts_with("layers.")));
    let c = checkpoint_from_safetensors(&st).unwrap();
    assert!(c.optimizer.buffers.is_empty());
}

#[test]
fn restore_refuses_a_different_configuration() {
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1);
    t.train_epoch(&data, 8).unwrap();
    let ckpt = checkpoint_from_safetensors(&checkpoint_to_safetensors(&t)).unwrap();

    // SGD trainer, Adam state.
    let mut sgd = small_trainer(OptKind::SgdMomentum, 1);
    let before = bits(sgd.net().params());
    let e = restore(&mut sgd, &ckpt).unwrap_err();
    assert!(
        matches!(&e, IoError::Mismatch { what, .. } if *what == "optimizer state buffers"),
        "{e}"
    );
    assert_eq!(bits(sgd.net().params()), before, "unchanged on error");
    assert_eq!(sgd.steps(), 0);

    // Different seed, schedule, architecture.
    let mk = |seed: u64, schedule: Schedule, units: usize| {
        let net = MlpBuilder::new(5)
            .dense(12)
            .act(Activation::Relu)
            .batch_norm()
            .residual(|r| r.dense(12).act(Activation::Tanh).layer_norm())
            .dense(units)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(1)
            .unwrap();
        let opt = optimizer(OptKind::Adam, net.num_params());
        Trainer::new(net, opt, schedule, seed)
    };
    let sched = || Schedule::warmup(5, 0.1, Schedule::cosine(0.05, 0.001, 40));
    let cases = [
        (mk(32, sched(), 3), "seed"),
        (mk(31, Schedule::constant(0.05), 3), "schedule"),
        (mk(31, sched(), 4), "network layers"),
    ];
    for (mut t, what) in cases {
        let e = restore(&mut t, &ckpt).unwrap_err();
        assert!(
            matches!(&e, IoError::Mismatch { what: w, .. } if *w == what),
            "{what}: {e}"
        );
        assert_eq!(t.steps(), 0);
    }
    restore(&mut mk(31, sched(), 3), &ckpt).unwrap();

    // into_trainer with a wrongly sized or wrong kind of optimizer.
    assert!(matches!(
        ckpt.clone().into_trainer(optimizer(OptKind::Adam, 3)),
        Err(IoError::Mismatch { .. })
    ));
    let n = ckpt.net.num_params();
    assert!(matches!(
        ckpt.into_trainer(optimizer(OptKind::SgdMomentum, n)),
        Err(IoError::Mismatch { .. })
    ));
}

#[test]
fn corrupt_checkpoints_give_typed_errors() {
    let t = small_trainer(OptKind::Adam, 1);
    let good = checkpoint_to_safetensors(&t);
    assert!(checkpoint_from_safetensors(&good).is_ok());
    let n = t.net().num_params();
    // Edited contents get a fresh checksum, to reach the checks behind it.
    let from = |st: &SafeTensors| checkpoint_from_safetensors(&resealed(st));

    let mut st = good.clone();
    st.tensors.remove("optimizer.exp_avg_sq");
    assert!(matches!(
        from(&st),
        Err(IoError::MissingTensor { name }) if name == "optimizer.exp_avg_sq"
    ));
    let mut st = good.clone();
    st.tensors.insert(
        "optimizer.exp_avg".into(),
        Tensor::new(vec![n - 1], vec![0.0; n - 1]),
    );
    assert!(matches!(
        from(&st),
        Err(IoError::WrongShape { name, .. }) if name == "optimizer.exp_avg"
    ));
    let mut st = good.clone();
    st.tensors.insert(
        "optimizer.momentum_buffer".into(),
        Tensor::new(vec![n], vec![0.0; n]),
    );
    assert!(matches!(
        from(&st),
        Err(IoError::UnexpectedTensor { name }) if name == "optimizer.momentum_buffer"
    ));
    for (key, value) in [
        ("backprop.trainer.schedule", "cosine:1"),
        ("backprop.trainer.seed", "-1"),
        ("backprop.trainer.steps", "1.5"),
        ("backprop.optimizer.steps", ""),
        ("backprop.optimizer.buffers", "[1]"),
        ("backprop.optimizer.buffers", "exp_avg"),
        ("backprop.checkpoint_version", "0"),
        ("backprop.checkpoint_version", "1"),
    ] {
        let mut st = good.clone();
        st.metadata.insert(key.into(), value.into());
        let e = from(&st).unwrap_err();
        assert!(
            matches!(&e, IoError::Metadata { key: k, .. } if k == key),
            "{key}: {e}"
        );
        if value == "1" {
            // Version 1 shuffled with another generator: say why it is refused.
            assert!(e.to_string().contains("another generator"), "{e}");
        }
    }
    let mut st = good.clone();
    st.metadata.insert(
        "backprop.optimizer.buffers".into(),
        r#"["exp_avg","exp_avg_sq","exp_avg"]"#.into(),
    );
    assert!(matches!(
        from(&st),
        Err(IoError::DuplicateName { name }) if name == "exp_avg"
    ));
    let mut st = good.clone();
    st.metadata.remove("backprop.trainer.epochs");
    assert!(matches!(
        from(&st),
        Err(IoError::MissingMetadata {
            key: "backprop.trainer.epochs"
        })
    ));
    // A network file is not a checkpoint.
    let mut st = mlp_to_safetensors(t.net());
    assert!(matches!(from(&st), Err(IoError::MissingMetadata { .. })));
    st.metadata.clear();
    assert!(mlp_from_safetensors(&st).is_err());
}

/// A network loaded from a file trains on like the original.
#[test]
fn loaded_network_steps_like_the_original() {
    let (_, mut a) = zoo().swap_remove(2);
    let mut b = mlp_from_safetensors(&mlp_to_safetensors(&a)).unwrap();
    // Loaded networks are in evaluation mode; training resumes in training mode.
    assert!(!b.is_training());
    b.set_training(true);
    let x = random_input(6, 4, 5);
    let c = [0usize, 1, 2, 0, 1, 2];
    let la = a
        .forward_backward(MatRef::from_slice(&x, 6, 4), Targets::Classes(&c))
        .unwrap();
    let lb = b
        .forward_backward(MatRef::from_slice(&x, 6, 4), Targets::Classes(&c))
        .unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(bits(a.grads()), bits(b.grads()));
    assert_eq!(bits(a.buffers()), bits(b.buffers()));
}

/// A plain `nn.Sequential` state dict — keys `0.weight`, `2.running_mean`,
/// …, BatchNorm's `num_batches_tracked`, no metadata — loads by name into a
/// network built with the same layers, strictly (issue 14, item 1).
#[test]
fn a_plain_sequential_state_dict_loads_into_a_built_network() {
    let net = torch_like();
    let mut plain = SafeTensors::default();
    for (name, t) in mlp_to_safetensors(&net).tensors {
        plain
            .tensors
            .insert(name.strip_prefix("layers.").unwrap().to_string(), t);
    }
    plain.tensors.insert(
        "2.num_batches_tracked".into(),
        Tensor::new(vec![], vec![7.0]),
    );
    let st = from_bytes(&to_bytes(&plain).unwrap()).unwrap();
    assert!(st.metadata.is_empty());
    let build = || {
        MlpBuilder::new(4)
            .dense(8)
            .act(Activation::Relu)
            .batch_norm()
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(99)
            .unwrap()
    };
    let mut fresh = build();
    load_weights_into(&mut fresh, &st).unwrap();
    assert_eq!(bits(fresh.params()), bits(net.params()));
    assert_eq!(bits(fresh.buffers()), bits(net.buffers()));
    // Strict: a key the network does not have is refused, naming it.
    let mut extra = st.clone();
    extra
        .tensors
        .insert("4.weight".into(), Tensor::new(vec![1], vec![0.0]));
    let mut other = build();
    let e = load_weights_into(&mut other, &extra).unwrap_err();
    assert!(
        matches!(&e, IoError::UnexpectedTensor { name } if name == "4.weight"),
        "{e}"
    );
    assert_eq!(
        bits(other.params()),
        bits(build().params()),
        "unchanged on error"
    );
    // A missing key names the plain name.
    let mut missing = st;
    missing.tensors.remove("3.bias");
    let e = load_weights_into(&mut other, &missing).unwrap_err();
    assert!(
        matches!(&e, IoError::MissingTensor { name } if name == "3.bias"),
        "{e}"
    );
}

/// A loaded network is ready for use: evaluation mode, so a BatchNorm
/// network predicts a single sample (issue 14, item 2), with the bits of the
/// saved network in evaluation mode.
#[test]
fn loaded_networks_are_in_evaluation_mode_and_predict_one_sample() {
    let mut net = torch_like();
    warm_up_stats(&mut net, 9);
    let dir = temp_dir("eval-mode");
    let path = dir.join("m.safetensors");
    save_mlp(&net, &path).unwrap();
    let back = load_mlp(&path).unwrap();
    assert!(!back.is_training());
    let x = random_input(1, 4, 3);
    let p = back.predict(MatRef::from_slice(&x, 1, 4)).unwrap();
    assert_eq!(p.len(), 1);
    let mut ws = backprop::nn::Inference::default();
    let h = back
        .infer(MatRef::from_slice(&x, 1, 4), &mut ws)
        .unwrap()
        .to_vec();
    assert_eq!(bits(&h), bits(&eval_output(&mut net, &x, 1)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression (found by reviewing the `parsers` fuzz target): a checkpoint
/// whose schedule string nests thousands of warm-ups overflowed the stack in
/// `Schedule::from_str`. It is now a typed error.
#[test]
fn deeply_nested_schedule_in_a_checkpoint_is_an_error_not_a_stack_overflow() {
    use backprop::io::{checkpoint_from_safetensors, checkpoint_to_safetensors};
    let net = backprop::nn::MlpBuilder::new(2).dense(2).build(1).unwrap();
    let opt = backprop::optim::Sgd::new(net.num_params(), Default::default());
    let t = backprop::train::Trainer::new(
        net,
        Box::new(opt),
        backprop::optim::Schedule::constant(0.1),
        1,
    );
    let mut st = checkpoint_to_safetensors(&t);
    let deep = "warmup:0:0:".repeat(50_000) + "constant:1";
    let key = st
        .metadata
        .keys()
        .find(|k| k.contains("schedule"))
        .expect("the checkpoint stores its schedule")
        .clone();
    st.metadata.insert(key, deep);
    assert!(checkpoint_from_safetensors(&st).is_err());
    // The limit itself: 8 nested warm-ups parse, 9 do not.
    let ok = "warmup:1:0.5:".repeat(backprop::optim::MAX_WARMUP_NESTING) + "constant:1";
    assert!(ok.parse::<backprop::optim::Schedule>().is_ok());
    let too_deep = "warmup:1:0.5:".repeat(backprop::optim::MAX_WARMUP_NESTING + 1) + "constant:1";
    assert!(too_deep.parse::<backprop::optim::Schedule>().is_err());
}

// ---------------------------------------------------------------- issue 11: integrity

/// Every single-bit flip anywhere in a checkpoint file is refused on load;
/// flips in the data section by the checksum, with a message that says the
/// file is corrupted (item 11).
#[test]
fn every_single_bit_flip_in_a_checkpoint_is_refused() {
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1);
    t.train_epoch(&data, 8).unwrap();
    let bytes = to_bytes(&checkpoint_to_safetensors(&t)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8 + header_len;
    let (mut checksum_errors, mut other_errors) = (0, 0);
    for bit in 0..bytes.len() * 8 {
        let mut m = bytes.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let loaded = from_bytes(&m).and_then(|st| checkpoint_from_safetensors(&st));
        match loaded {
            Ok(_) => panic!("a flip of bit {bit} (byte {}) loaded", bit / 8),
            Err(IoError::Checksum { .. }) => checksum_errors += 1,
            Err(e) if bit / 8 >= data_start => panic!("data bit {bit}: {e}"),
            Err(_) => other_errors += 1,
        }
    }
    assert!(checksum_errors >= (bytes.len() - data_start) * 8);
    assert!(other_errors > 0);
    // The message says what happened.
    let mut m = bytes.clone();
    m[data_start + 3] ^= 0x10;
    let e = checkpoint_from_safetensors(&from_bytes(&m).unwrap()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("checksum mismatch: the file's metadata says fnv1a64:")
            && text.ends_with("the file is corrupted"),
        "{text}"
    );
}

/// Files written before the checksum existed (format version 1) still load,
/// unverified; a version 2 file without its checksum is refused.
#[test]
fn files_from_before_the_checksum_load_and_version_2_requires_it() {
    let net = torch_like();
    let mut st = mlp_to_safetensors(&net);
    st.metadata.remove(KEY_CHECKSUM);
    let e = mlp_from_safetensors(&st).unwrap_err();
    assert!(
        matches!(e, IoError::MissingMetadata { key } if key == KEY_CHECKSUM),
        "{e}"
    );
    st.metadata
        .insert("backprop.format_version".into(), "1".into());
    assert_eq!(
        bits(mlp_from_safetensors(&st).unwrap().params()),
        bits(net.params())
    );

    // A version 1 checkpoint (no checksum, no optimizer configuration)
    // resumes, under any optimizer with the same buffers.
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1);
    t.train_epoch(&data, 8).unwrap();
    let mut st = checkpoint_to_safetensors(&t);
    st.metadata.remove(KEY_CHECKSUM);
    st.metadata.remove("backprop.optimizer.config");
    st.metadata
        .insert("backprop.format_version".into(), "1".into());
    let ckpt = checkpoint_from_safetensors(&st).unwrap();
    assert_eq!(ckpt.optimizer.config, None);
    let mut b = small_trainer(OptKind::Adam, 2);
    restore(&mut b, &ckpt).unwrap();
    assert_same_trainer(&t, &b, "version 1 checkpoint");
}

/// Adam and AdamW have the same buffer names; the stored optimizer
/// configuration tells them apart (item 9's `--opt adamw` on an Adam run).
#[test]
fn a_checkpoint_resumes_only_under_the_same_optimizer_configuration() {
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1); // AdamW(0.01)
    t.train_epoch(&data, 8).unwrap();
    let ckpt = checkpoint_from_safetensors(&checkpoint_to_safetensors(&t)).unwrap();
    assert_eq!(
        ckpt.optimizer.config.as_deref(),
        Some("adam:beta1=0.9:beta2=0.999:eps=0.00000001:weight_decay=decoupled(0.01)")
    );
    let n = t.net().num_params();
    let plain_adam = Box::new(Adam::new(n, AdamConfig::default()));
    let Err(e) = ckpt.clone().into_trainer(plain_adam) else {
        panic!("an Adam checkpoint resumed under AdamW")
    };
    assert!(
        matches!(&e, IoError::Mismatch { what, .. } if *what == "optimizer"),
        "{e}"
    );
    assert!(e.to_string().contains("weight_decay=none"), "{e}");
    assert!(ckpt.into_trainer(optimizer(OptKind::Adam, n)).is_ok());
}

/// NaN or infinite parameters, statistics or optimizer state are refused on
/// save (nothing is written, the previous file stays) and on load (a file
/// edited or written by another tool), naming the tensor (item 10).
#[test]
fn non_finite_networks_and_checkpoints_are_refused_on_save_and_load() {
    let dir = temp_dir("non-finite");
    let path = dir.join("m.safetensors");
    let mut net = torch_like();
    save_mlp(&net, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    net.params_mut()[3] = f32::NAN;
    let e = save_mlp(&net, &path).unwrap_err();
    assert!(
        matches!(&e, IoError::NonFinite { tensor, .. } if tensor == "layers.0.weight"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "old file kept");
    assert_eq!(dir_entries(&dir), ["m.safetensors"]);

    // On load: an infinite running variance, written by someone else.
    let mut st = mlp_to_safetensors(&torch_like());
    st.tensors.get_mut("layers.2.running_var").unwrap().data[5] = f32::INFINITY;
    let e = mlp_from_safetensors(&resealed(&st)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"layers.2.running_var\" holds inf at element 5; networks and checkpoints \
         must be finite"
    );

    // A checkpoint whose optimizer state is not finite.
    let data = dataset();
    let mut t = small_trainer(OptKind::Adam, 1);
    t.train_epoch(&data, 8).unwrap();
    let ck = dir.join("ck.safetensors");
    save_checkpoint(&t, &ck).unwrap();
    let saved = std::fs::read(&ck).unwrap();
    let mut st = checkpoint_to_safetensors(&t);
    st.tensors.get_mut("optimizer.exp_avg_sq").unwrap().data[0] = f32::NAN;
    let e = checkpoint_from_safetensors(&resealed(&st)).unwrap_err();
    assert!(
        matches!(&e, IoError::NonFinite { tensor, index: 0, .. } if tensor == "optimizer.exp_avg_sq"),
        "{e}"
    );
    // …and saving such a trainer leaves the last good checkpoint in place.
    let ckpt = load_checkpoint(&ck).unwrap();
    let mut bad = small_trainer(OptKind::Adam, 1);
    restore(&mut bad, &ckpt).unwrap();
    bad.net_mut().params_mut()[0] = f32::NEG_INFINITY;
    let e = save_checkpoint(&bad, &ck).unwrap_err();
    assert!(matches!(&e, IoError::NonFinite { .. }), "{e}");
    assert_eq!(std::fs::read(&ck).unwrap(), saved);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- issue 11: writes

/// A process killed while writing leaves `.NAME.tmp-PID-N`; the next write
/// of the same target removes those of dead processes, and nothing else
/// (item 7).
#[test]
fn stale_temporary_files_of_dead_writers_are_removed_on_the_next_write() {
    let dir = temp_dir("stale");
    let target = dir.join("ck.safetensors");
    // A pid that is certainly dead: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = [
        format!(".ck.safetensors.tmp-{dead}-0"),
        format!(".ck.safetensors.tmp-{dead}-17"),
    ];
    let keep = [
        // pid 1 is alive; our own pid may be writing now.
        ".ck.safetensors.tmp-1-3".to_string(),
        format!(".ck.safetensors.tmp-{}-999", std::process::id()),
        // Another target's, and names that are not ours.
        format!(".other.tmp-{dead}-0"),
        format!(".ck.safetensors.tmp-{dead}-x"),
        "ck.safetensors.bak".to_string(),
    ];
    for name in stale.iter().chain(&keep) {
        std::fs::write(dir.join(name), vec![0u8; 1000]).unwrap();
    }
    write_atomic(&target, b"new").unwrap();
    let mut expect: Vec<String> = keep.to_vec();
    expect.push("ck.safetensors".into());
    expect.sort();
    assert_eq!(dir_entries(&dir), expect);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Saving onto a symbolic link replaces the file it points to, atomically,
/// and keeps the link (item 10).
#[cfg(unix)]
#[test]
fn writes_follow_symbolic_links() {
    let dir = temp_dir("symlink");
    std::fs::create_dir(dir.join("models")).unwrap();
    let real = dir.join("models").join("v1.safetensors");
    let link = dir.join("latest.safetensors");
    std::os::unix::fs::symlink("models/v1.safetensors", &link).unwrap();
    let net = torch_like();
    save_mlp(&net, &link).unwrap(); // the link dangles: creates its target
    save_mlp(&net, &link).unwrap(); // and now replaces it
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(bits(load_mlp(&real).unwrap().params()), bits(net.params()));
    assert_eq!(dir_entries(&dir), ["latest.safetensors", "models"]);
    assert_eq!(dir_entries(&dir.join("models")), ["v1.safetensors"]);
    // A loop of links is an error naming the user's path.
    let a = dir.join("a");
    std::os::unix::fs::symlink("b", &a).unwrap();
    std::os::unix::fs::symlink("a", dir.join("b")).unwrap();
    let e = write_atomic(&a, b"x").unwrap_err();
    assert!(
        e.to_string()
            .ends_with("a: too many levels of symbolic links"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Write errors name the path the caller gave, never the temporary file;
/// `check_writable` reports the same errors up front and leaves nothing
/// behind (item 8).
#[test]
fn write_errors_name_the_callers_path_and_can_be_checked_up_front() {
    let dir = temp_dir("writable");
    let missing = dir.join("nodir").join("m.safetensors");
    for e in [
        write_atomic(&missing, b"x").unwrap_err(),
        backprop::io::check_writable(&missing).unwrap_err(),
    ] {
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot create a file in ", missing.display())),
            "{text}"
        );
        assert!(!text.contains(".tmp-"), "{text}");
    }
    let e = backprop::io::check_writable(&dir).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: is a directory", dir.display()));
    backprop::io::check_writable(dir.join("ok.safetensors")).unwrap();
    assert!(dir_entries(&dir).is_empty(), "{:?}", dir_entries(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `read_file` allocates from no unchecked size: `/dev/zero` fails after
/// its 8-byte prefix, and a header declaring terabytes fails against the
/// file's length (item 10).
#[test]
fn read_file_allocates_only_what_the_file_holds() {
    if Path::new("/dev/zero").exists() {
        let e = read_file("/dev/zero").unwrap_err();
        assert!(matches!(e, IoError::Format { .. }), "{e}");
    }
    let dir = temp_dir("read-bounded");
    let path = dir.join("huge.safetensors");
    let header =
        br#"{"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 16]);
    std::fs::write(&path, &bytes).unwrap();
    let e = read_file(&path).unwrap_err();
    assert!(matches!(e, IoError::Format { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Dropout's masks follow the trainer's seed and step: a run resumed from a
/// checkpoint draws the masks the uninterrupted run draws, so the weights
/// are bitwise equal; the layer survives the model file.
#[test]
fn dropout_resumes_bitwise_and_round_trips() {
    let data = dataset();
    let make = || {
        let net = MlpBuilder::new(5)
            .dense(12)
            .act(Activation::Relu)
            .dropout(0.3)
            .residual(|r| r.dense(12).act(Activation::Tanh).dropout(0.1))
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(4)
            .unwrap();
        let opt = optimizer(OptKind::Adam, net.num_params());
        Trainer::new(net, opt, Schedule::constant(0.01), 17)
    };
    let mut straight = make();
    for _ in 0..4 {
        straight.train_epoch(&data, 8).unwrap();
    }
    let mut first = make();
    for _ in 0..2 {
        first.train_epoch(&data, 8).unwrap();
    }
    let st = from_bytes(&to_bytes(&checkpoint_to_safetensors(&first)).unwrap()).unwrap();
    let ckpt = checkpoint_from_safetensors(&st).unwrap();
    assert_eq!(ckpt.net.layers(), first.net().layers());
    let n = ckpt.net.num_params();
    let mut resumed = ckpt.into_trainer(optimizer(OptKind::Adam, n)).unwrap();
    for _ in 0..2 {
        resumed.train_epoch(&data, 8).unwrap();
    }
    assert_same_trainer(&straight, &resumed, "dropout resume");
    // Without dropout's masks the run would differ: the layer did something.
    let mut plain = {
        let net = MlpBuilder::new(5)
            .dense(12)
            .act(Activation::Relu)
            .dropout(0.0)
            .residual(|r| r.dense(12).act(Activation::Tanh).dropout(0.0))
            .dense(3)
            .loss(Loss::SoftmaxCrossEntropy)
            .build(4)
            .unwrap();
        let opt = optimizer(OptKind::Adam, net.num_params());
        Trainer::new(net, opt, Schedule::constant(0.01), 17)
    };
    for _ in 0..4 {
        plain.train_epoch(&data, 8).unwrap();
    }
    assert_ne!(bits(plain.net().params()), bits(straight.net().params()));
}
