//! The layer list in a model file's metadata (`backprop.layers`): a JSON
//! array read and written through serde, one wire type per layer kind.
//!
//! The wire types are separate from [`Layer`] so that the file format stays
//! what [`mlp_to_safetensors`](super::mlp_to_safetensors) documents while the
//! public types evolve: floats are written as strings in Rust's shortest
//! round-trip form (so they load bit for bit, and files stay readable by
//! earlier builds), and read from a string or a JSON number; a dense layer's
//! `init` may be left out (it only matters for re-initialising).

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::nn::{Activation, Init, Layer};

/// One entry of the layer list.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Spec {
    Dense {
        units: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        init: Option<InitName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        std: Option<Float>,
        /// Written only when `false`; absent means a bias.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    Activation {
        name: ActName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slope: Option<Float>,
    },
    // Struct variants rather than unit ones: serde refuses unknown keys only
    // in the former. `affine` is written only when `false`.
    BatchNorm {
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        affine: bool,
    },
    LayerNorm {
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        affine: bool,
    },
    Residual {
        layers: Vec<Spec>,
    },
    Dropout {
        p: Float,
    },
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum InitName {
    He,
    Xavier,
    XavierUniform,
    #[serde(rename = "lecun")]
    LeCun,
    Normal,
}

#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActName {
    Identity,
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
    Gelu,
    GeluErf,
    Softplus,
}

/// The default of the optional flags (`bias`, `affine`).
fn yes() -> bool {
    true
}

/// Whether a flag is at its default (and so left out of the file).
fn is_true(b: &bool) -> bool {
    *b
}

/// PyTorch's default `negative_slope` of `nn.LeakyReLU`, used when a file
/// gives none.
const DEFAULT_SLOPE: f32 = 0.01;

/// An `f32` written as its shortest round-trip decimal string, read from a
/// string or a JSON number.
#[derive(Clone, Copy)]
struct Float(f32);

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Float, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or a string holding one")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Float, E> {
                Ok(Float(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Float, E> {
                Ok(Float(v as f32))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Float, E> {
                v.parse()
                    .map(Float)
                    .map_err(|_| E::custom(format!("{v:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// The layer list as JSON text.
pub(crate) fn encode(layers: &[Layer]) -> String {
    let specs: Vec<Spec> = layers.iter().map(spec).collect();
    serde_json::to_string(&specs).expect("layer descriptions serialise")
}

/// The layers a JSON layer list describes.
///
/// # Errors
/// A message naming what is wrong (serde_json's, with its line and column,
/// for text that does not match the wire types; ours, with the layer's
/// position, for fields that do not go together).
pub(crate) fn decode(text: &str) -> Result<Vec<Layer>, String> {
    let specs: Vec<Spec> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    layers(specs)
}

fn spec(layer: &Layer) -> Spec {
    match layer {
        Layer::Dense { units, init, bias } => {
            let (name, std) = match *init {
                Init::He => (InitName::He, None),
                Init::Xavier => (InitName::Xavier, None),
                Init::XavierUniform => (InitName::XavierUniform, None),
                Init::LeCun => (InitName::LeCun, None),
                Init::Normal(std) => (InitName::Normal, Some(Float(std))),
            };
            Spec::Dense {
                units: *units,
                init: Some(name),
                std,
                bias: *bias,
            }
        }
        Layer::Act(act) => {
            let (name, slope) = match *act {
                Activation::Identity => (ActName::Identity, None),
                Activation::Relu => (ActName::Relu, None),
                Activation::LeakyRelu { slope } => (ActName::LeakyRelu, Some(Float(slope))),
                Activation::Tanh => (ActName::Tanh, None),
                Activation::Sigmoid => (ActName::Sigmoid, None),
                Activation::Gelu => (ActName::Gelu, None),
                Activation::GeluErf => (ActName::GeluErf, None),
                Activation::Softplus => (ActName::Softplus, None),
            };
            Spec::Activation { name, slope }
        }
        Layer::BatchNorm { affine } => Spec::BatchNorm { affine: *affine },
        Layer::LayerNorm { affine } => Spec::LayerNorm { affine: *affine },
        Layer::Residual(inner) => Spec::Residual {
            layers: inner.iter().map(spec).collect(),
        },
        Layer::Dropout { p } => Spec::Dropout { p: Float(*p) },
    }
}

fn layers(specs: Vec<Spec>) -> Result<Vec<Layer>, String> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| layer(s).map_err(|e| format!("layer {i}: {e}")))
        .collect()
}

fn layer(s: Spec) -> Result<Layer, String> {
    Ok(match s {
        Spec::Dense {
            units,
            init,
            std,
            bias,
        } => {
            let init = match (init.unwrap_or(InitName::He), std) {
                (InitName::Normal, Some(Float(std))) => Init::Normal(std),
                (InitName::Normal, None) => return Err("init \"normal\" needs \"std\"".into()),
                (_, Some(_)) => return Err("\"std\" goes only with init \"normal\"".into()),
                (InitName::He, None) => Init::He,
                (InitName::Xavier, None) => Init::Xavier,
                (InitName::XavierUniform, None) => Init::XavierUniform,
                (InitName::LeCun, None) => Init::LeCun,
            };
            Layer::Dense { units, init, bias }
        }
        Spec::Activation { name, slope } => {
            if slope.is_some() && name != ActName::LeakyRelu {
                return Err("\"slope\" goes only with \"leaky_relu\"".into());
            }
            Layer::Act(match name {
                ActName::Identity => Activation::Identity,
                ActName::Relu => Activation::Relu,
                ActName::LeakyRelu => Activation::LeakyRelu {
                    slope: slope.map_or(DEFAULT_SLOPE, |s| s.0),
                },
                ActName::Tanh => Activation::Tanh,
                ActName::Sigmoid => Activation::Sigmoid,
                ActName::Gelu => Activation::Gelu,
                ActName::GeluErf => Activation::GeluErf,
                ActName::Softplus => Activation::Softplus,
            })
        }
        Spec::BatchNorm { affine } => Layer::BatchNorm { affine },
        Spec::LayerNorm { affine } => Layer::LayerNorm { affine },
        Spec::Dropout { p } => Layer::Dropout { p: p.0 },
        Spec::Residual { layers: inner } => {
            Layer::Residual(layers(inner).map_err(|e| format!("residual block: {e}"))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_descriptions_round_trip_bit_for_bit() {
        let layers = vec![
            Layer::Dense {
                units: 3,
                init: Init::Normal(0.0123),
                bias: false,
            },
            Layer::Act(Activation::LeakyRelu { slope: 1e-30 }),
            Layer::Residual(vec![
                Layer::LayerNorm { affine: true },
                Layer::LayerNorm { affine: false },
                Layer::Dense {
                    units: 3,
                    init: Init::XavierUniform,
                    bias: true,
                },
                Layer::Residual(vec![
                    Layer::Act(Activation::Gelu),
                    Layer::Act(Activation::GeluErf),
                    Layer::BatchNorm { affine: true },
                    Layer::BatchNorm { affine: false },
                ]),
            ]),
        ];
        assert_eq!(decode(&encode(&layers)).unwrap(), layers);
        // Every f32 bit pattern of a finite slope survives.
        let mut rng = crate::rng::Rng::seed_from_u64(7);
        for _ in 0..10_000 {
            let slope = f32::from_bits(rng.next_u64() as u32);
            if slope.is_finite() {
                let l = [Layer::Act(Activation::LeakyRelu { slope })];
                assert_eq!(decode(&encode(&l)).unwrap(), l);
            }
        }
    }

    #[test]
    fn the_written_form_is_the_documented_one() {
        let layers = [
            Layer::Dense {
                units: 8,
                init: Init::He,
                bias: true,
            },
            Layer::Act(Activation::LeakyRelu { slope: 0.5 }),
            Layer::Residual(vec![Layer::BatchNorm { affine: true }]),
            Layer::Dense {
                units: 2,
                init: Init::He,
                bias: false,
            },
            Layer::BatchNorm { affine: false },
        ];
        assert_eq!(
            encode(&layers),
            concat!(
                r#"[{"type":"dense","units":8,"init":"he"},"#,
                r#"{"type":"activation","name":"leaky_relu","slope":"0.5"},"#,
                r#"{"type":"residual","layers":[{"type":"batch_norm"}]},"#,
                r#"{"type":"dense","units":2,"init":"he","bias":false},"#,
                r#"{"type":"batch_norm","affine":false}]"#
            )
        );
    }

    #[test]
    fn numbers_and_defaults_are_read() {
        let got = decode(
            r#"[{"type":"dense","units":4},{"type":"activation","name":"leaky_relu","slope":0.25},
               {"type":"activation","name":"leaky_relu"},
               {"type":"dense","units":2,"init":"normal","std":1}]"#,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Layer::Dense {
                    units: 4,
                    init: Init::He,
                    bias: true,
                },
                Layer::Act(Activation::LeakyRelu { slope: 0.25 }),
                Layer::Act(Activation::LeakyRelu { slope: 0.01 }),
                Layer::Dense {
                    units: 2,
                    init: Init::Normal(1.0),
                    bias: true,
                },
            ]
        );
    }

    #[test]
    fn layer_decoding_is_strict() {
        for bad in [
            r#"{}"#,
            r#"[{"type":"dense"}]"#,
            r#"[{"type":"dense","units":"3","init":"he"}]"#,
            r#"[{"type":"dense","units":3,"init":"he","extra":"1"}]"#,
            r#"[{"type":"dense","units":3,"init":"he","init":"he"}]"#,
            r#"[{"type":"dense","units":3,"init":"normal"}]"#,
            r#"[{"type":"dense","units":3,"init":"he","std":"1"}]"#,
            r#"[{"type":"activation","name":"swish"}]"#,
            r#"[{"type":"activation","name":"relu","slope":"1"}]"#,
            r#"[{"type":"activation","name":"leaky_relu","slope":"steep"}]"#,
            r#"[{"type":"batch_norm","eps":1e-5}]"#,
            r#"[{"type":"batch_norm","affine":"no"}]"#,
            r#"[{"type":"dense","units":3,"bias":0}]"#,
            r#"[{"type":"residual"}]"#,
            r#"[{"type":"conv"}]"#,
            r#"[3]"#,
        ] {
            let e = decode(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
