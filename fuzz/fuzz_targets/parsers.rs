//! Every parser of user files, fed arbitrary bytes: each must return an
//! error or a valid value — never panic, never allocate from an unchecked
//! header field (libFuzzer's `-malloc_limit_mb`, by default the RSS limit,
//! turns such an allocation into a crash).
//!
//! The whole input goes to each parser:
//! * IDX ([`parse_idx`]): the whole input, and the input after its first
//!   byte split in two at the offset that byte gives (an image file and a
//!   label file); parsed arrays go through [`mnist_dataset`].
//! * CSV ([`parse_csv`]) for each [`LabelKind`], on the input as UTF-8
//!   (lossily converted when it is not).
//! * safetensors ([`from_bytes`]): a parsed file must serialise again
//!   ([`to_bytes`]) and read back identical (bitwise, so NaNs compare), and
//!   is then read as a network ([`mlp_from_safetensors`]) and a checkpoint
//!   ([`checkpoint_from_safetensors`]). A network that loads must save and
//!   load back bitwise, and (if small) run a forward pass in eval mode.
//! * The model metadata on its own: the input as text (`input_dim`, a
//!   newline, the layer list) becomes the architecture of an otherwise valid
//!   network file, resealed so its checksum holds, and goes through
//!   [`mlp_from_safetensors`] like a parsed file. Bytes rarely make a valid
//!   container, so this is what reaches the layer-list reader, the names and
//!   the shape checks.

#![no_main]

use backprop::io::{
    checkpoint_from_safetensors, checksum, from_bytes, mlp_from_safetensors, mlp_to_safetensors,
    to_bytes, Checkpoint, SafeTensors, KEY_CHECKSUM,
};
use backprop::matrix::MatRef;
use backprop::nn::Mlp;
use backprop::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use backprop::train::csv::{parse_csv, LabelKind};
use backprop::train::idx::{mnist_dataset, parse_idx, IdxArray};
use backprop::nn::Targets;
use backprop::train::Dataset;
use libfuzzer_sys::fuzz_target;

/// Networks up to this many parameters (and this input width) are run.
const MAX_RUN: usize = 1_000_000;

fuzz_target!(|data: &[u8]| {
    idx(data);
    csv(data);
    safetensors(data);
    model_metadata(data);
});

// ---------------------------------------------------------------- IDX

fn idx(data: &[u8]) {
    if let Some(a) = parse_checked(data) {
        mnist_checked(&a, &a);
    }
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(k).min(rest.len()));
    let a = parse_checked(first);
    let b = parse_checked(second);
    if let (Some(a), Some(b)) = (&a, &b) {
        mnist_checked(a, b);
        mnist_checked(b, a);
    }
}

/// `parse_idx`, checking that a success accounts for exactly the bytes given.
fn parse_checked(bytes: &[u8]) -> Option<IdxArray> {
    let a = parse_idx(bytes, "fuzz").ok()?;
    // The product of the dims (0 if any is 0, however large the others).
    let count = if a.dims.contains(&0) {
        0
    } else {
        a.dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .expect("a parsed IDX array's element count fits in usize")
    };
    assert_eq!(count, a.data.len(), "dims {:?}", a.dims);
    assert_eq!(bytes.len(), 4 + 4 * a.dims.len() + a.data.len());
    assert_eq!(&bytes[4 + 4 * a.dims.len()..], &a.data[..]);
    Some(a)
}

fn mnist_checked(images: &IdxArray, labels: &IdxArray) {
    let Ok(d) = mnist_dataset(images.clone(), labels) else {
        return;
    };
    assert_eq!(images.dims.len(), 3);
    assert_eq!(labels.dims.len(), 1);
    assert_eq!(d.len(), images.dims[0]);
    assert_eq!(d.len(), labels.dims[0]);
    assert_eq!(d.features(), images.dims[1] * images.dims[2]);
    check_dataset(&d);
    assert!(d.x_values().iter().all(|v| (0.0..=1.0).contains(v)));
    match d.labels() {
        Targets::Classes(c) => {
            assert!(c.iter().all(|&c| c < 10));
            let want: Vec<usize> = labels.data.iter().map(|&l| usize::from(l)).collect();
            assert_eq!(c, &want[..]);
        }
        other => panic!("MNIST labels are not classes: {other:?}"),
    }
}

// ---------------------------------------------------------------- CSV

fn csv(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for kind in [LabelKind::Class, LabelKind::Sign, LabelKind::Value] {
        let Ok(d) = parse_csv(&text, kind) else {
            continue;
        };
        assert!(!d.is_empty(), "a parsed CSV has a data line");
        assert!(d.features() >= 1, "a parsed CSV has a feature column");
        check_dataset(&d);
        match (kind, d.labels()) {
            (LabelKind::Class, Targets::Classes(c)) => assert_eq!(c.len(), d.len()),
            (LabelKind::Sign, Targets::Signs(s)) => {
                assert_eq!(s.len(), d.len());
                assert!(s.iter().all(|&v| v == 1.0 || v == -1.0), "{s:?}");
            }
            (LabelKind::Value, Targets::Values(y)) => {
                let (data, width) = (y.to_vec(), y.cols());
                assert_eq!(width, 1);
                assert_eq!(data.len(), d.len());
                assert!(data.iter().all(|v| v.is_finite()), "{data:?}");
            }
            (kind, labels) => panic!("{kind:?} gave labels {labels:?}"),
        }
    }
}

/// Invariants of every dataset.
fn check_dataset(d: &Dataset) {
    let x = d.x_values();
    assert_eq!(x.len(), d.len() * d.features());
    assert!(x.iter().all(|v| v.is_finite()));
    let mut buf = backprop::train::Batch::default();
    let (view, _) = d.slice(0, d.len(), &mut buf);
    assert_eq!((view.rows(), view.cols()), (d.len(), d.features()));
}

// ---------------------------------------------------------------- safetensors

fn safetensors(data: &[u8]) {
    let Ok(st) = from_bytes(data) else {
        return;
    };
    for (name, t) in &st.tensors {
        let count = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        assert_eq!(count, Some(t.data.len()), "tensor {name:?}");
    }

    // Serialise and read back: identical, bitwise.
    let bytes = to_bytes(&st).expect("a parsed file serialises");
    let back = from_bytes(&bytes).expect("a serialised file parses");
    assert_same(&st, &back);
    // The writer is deterministic: a second round gives the same bytes.
    assert_eq!(to_bytes(&back).expect("serialises again"), bytes);

    if let Ok(net) = mlp_from_safetensors(&st) {
        check_net(net, &st);
    }
    if let Ok(ckpt) = checkpoint_from_safetensors(&st) {
        check_checkpoint(ckpt, &st);
    }
}

fn model_metadata(data: &[u8]) {
    use backprop::nn::{Activation, MlpBuilder};
    use std::sync::OnceLock;
    // The tensors of a network that uses every tensor-holding layer kind.
    static TEMPLATE: OnceLock<SafeTensors> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let net = MlpBuilder::new(4)
            .dense(8)
            .act(Activation::Relu)
            .batch_norm()
            .layer_norm()
            .dense(3)
            .build(1)
            .expect("the template builds");
        mlp_to_safetensors(&net)
    });
    let text = String::from_utf8_lossy(data);
    let (input, layers) = text.split_once('\n').unwrap_or(("4", &text));
    let mut st = template.clone();
    st.metadata
        .insert("backprop.input_dim".into(), input.to_string());
    st.metadata
        .insert("backprop.layers".into(), layers.to_string());
    let sum = checksum(&st);
    st.metadata.insert(KEY_CHECKSUM.into(), sum);
    if let Ok(net) = mlp_from_safetensors(&st) {
        check_net(net, &st);
    }
}

/// `a == b` with f32 compared by bits (NaNs included).
fn assert_same(a: &SafeTensors, b: &SafeTensors) {
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        assert_eq!(t.shape, u.shape, "tensor {name:?}");
        assert!(
            bits(&t.data) == bits(&u.data),
            "tensor {name:?}: data differs after a round trip"
        );
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn check_net(mut net: Mlp, st: &SafeTensors) {
    assert!(net.input_dim() >= 1);
    assert!(net.output_dim() >= 1);
    assert_eq!(net.params().len(), net.num_params());
    assert_eq!(net.grads().len(), net.num_params());

    // Saving gives back exactly the file's tensors, and loads again.
    let saved = mlp_to_safetensors(&net);
    for (name, t) in &saved.tensors {
        let orig = st
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("saved tensor {name:?} was not in the file"));
        assert_eq!(t.shape, orig.shape, "tensor {name:?}");
        assert!(bits(&t.data) == bits(&orig.data), "tensor {name:?} changed");
    }
    let again = mlp_from_safetensors(&saved).expect("a saved network loads");
    assert_eq!(again.input_dim(), net.input_dim());
    assert_eq!(again.loss_kind(), net.loss_kind());
    assert_eq!(again.layers(), net.layers());
    assert!(bits(again.params()) == bits(net.params()));
    assert!(bits(again.buffers()) == bits(net.buffers()));

    // A forward pass in eval mode on one zero sample.
    if net.num_params() <= MAX_RUN && net.input_dim() <= MAX_RUN {
        let zeros = vec![0.0f32; net.input_dim()];
        let out_dim = net.output_dim();
        net.set_training(false);
        let h = net
            .forward(MatRef::from_slice(&zeros, 1, zeros.len()))
            .expect("forward in eval mode on a batch of one");
        assert_eq!((h.rows(), h.cols()), (1, out_dim));
    }
}

fn check_checkpoint(ckpt: Checkpoint, st: &SafeTensors) {
    let n = ckpt.net.num_params();
    let net = mlp_from_safetensors(st).expect("a checkpoint's network loads alone");
    assert!(bits(net.params()) == bits(ckpt.net.params()));
    for (name, buf) in &ckpt.optimizer.buffers {
        assert_eq!(buf.len(), n, "optimizer buffer {name:?}");
    }
    // Evaluating the saved schedule at the saved step (what resuming does).
    let _ = ckpt.schedule.lr_at(ckpt.steps);
    let _ = ckpt.schedule.lr_at(ckpt.optimizer.steps);

    if n > MAX_RUN {
        return;
    }
    // Resume into either optimizer kind; a mismatch is an error, not a panic.
    let sgd = Sgd::new(
        n,
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    );
    let adam = Adam::new(n, AdamConfig::default());
    let opts: [Box<dyn Optimizer + Send>; 2] = [Box::new(sgd), Box::new(adam)];
    for opt in opts {
        if let Ok(t) = ckpt.clone().into_trainer(opt) {
            assert_eq!(t.steps(), ckpt.steps);
            assert_eq!(t.epochs(), ckpt.epochs);
            assert_eq!(t.seed(), ckpt.seed);
            assert_eq!(t.optimizer().steps(), ckpt.optimizer.steps);
            assert!(bits(t.net().params()) == bits(ckpt.net.params()));
        }
    }
}
