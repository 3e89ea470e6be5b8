//! End to end on the real MNIST (not in the repository): one epoch of the
//! 784-512-512-10 ReLU network with Adam reaches the accuracy PyTorch does.
//! Ignored by plain `cargo test` (a fresh machine has no MNIST); CI runs
//! `cargo test --release --features gzip --test mnist -- --ignored` with
//! `BACKPROP_MNIST_DIR` pointing at the files.

use std::time::Instant;

use backprop::nn::{Activation, Loss, MlpBuilder};
use backprop::optim::{Adam, AdamConfig, Schedule};
use backprop::train::idx::load_mnist;
use backprop::train::Trainer;

#[test]
#[ignore = "needs MNIST: set BACKPROP_MNIST_DIR (CI uses ../shared/data/mnist)"]
fn one_epoch_of_mnist_reaches_96_percent() {
    let dir = std::env::var("BACKPROP_MNIST_DIR").unwrap_or_else(|_| "../shared/data/mnist".into());
    let (train, test) =
        load_mnist(&dir).unwrap_or_else(|e| panic!("loading MNIST from {dir}: {e}"));
    assert_eq!(
        (train.len(), test.len(), train.features()),
        (60_000, 10_000, 784)
    );
    let net = MlpBuilder::new(784)
        .dense(512)
        .act(Activation::Relu)
        .dense(512)
        .act(Activation::Relu)
        .dense(10)
        .loss(Loss::SoftmaxCrossEntropy)
        .build(0)
        .unwrap();
    let opt = Adam::new(net.num_params(), AdamConfig::default());
    let mut t = Trainer::new(net, Box::new(opt), Schedule::constant(1e-3), 0);
    let start = Instant::now();
    let stats = t.train_epoch(&train, 128).unwrap();
    let e = t.evaluate(&test, 1000).unwrap();
    let acc = e.accuracy().unwrap();
    eprintln!(
        "MNIST 1 epoch: {:.2} s training ({:.2} s incl. eval), train loss {:.4}, test loss {:.4}, test accuracy {:.2} %, {} threads, {}",
        stats.seconds,
        start.elapsed().as_secs_f64(),
        stats.mean_loss,
        e.loss,
        100.0 * acc,
        backprop::num_threads(),
        backprop::active_isa()
    );
    assert!(acc >= 0.96, "test accuracy {acc} after one epoch");
}
