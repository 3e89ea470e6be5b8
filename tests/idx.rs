//! IDX decoding: good files, and a clear error for every kind of bad one.

use backprop::train::idx::{mnist_dataset, parse_idx, read_idx, IdxArray, IdxError};

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn decodes_dims_and_data() {
    let a = parse_idx(&idx(&[2, 2, 3], &[7; 12]), "t").unwrap();
    assert_eq!(
        a,
        IdxArray {
            dims: vec![2, 2, 3],
            data: vec![7; 12]
        }
    );
}

#[test]
fn wrong_magic_type_and_length_are_reported() {
    let e = parse_idx(&[1, 2, 3, 4, 5], "f").unwrap_err();
    assert!(
        matches!(
            e,
            IdxError::BadMagic {
                found: [1, 2, 3, 4],
                ..
            }
        ),
        "{e}"
    );
    let mut v = idx(&[3], &[0; 3]);
    v[2] = 0x0d; // float32
    assert!(matches!(
        parse_idx(&v, "f").unwrap_err(),
        IdxError::UnsupportedType { code: 0x0d, .. }
    ));
    let e = parse_idx(&idx(&[10, 28, 28], &[0; 100]), "f").unwrap_err();
    assert!(
        matches!(
            e,
            IdxError::Truncated {
                expected: 7840,
                got: 100,
                ..
            }
        ),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("need 7840 data bytes but the file has 100"));
    // Too many bytes is as wrong as too few.
    assert!(matches!(
        parse_idx(&idx(&[2], &[0; 3]), "f").unwrap_err(),
        IdxError::Truncated { .. }
    ));
    // A header claiming 2³²·2³² elements allocates nothing and is refused.
    assert!(matches!(
        parse_idx(&idx(&[u32::MAX, u32::MAX], &[]), "f").unwrap_err(),
        IdxError::Truncated { .. }
    ));
    // Header cut short.
    assert!(matches!(
        parse_idx(&[0, 0, 8, 3, 0, 0], "f").unwrap_err(),
        IdxError::Truncated { .. }
    ));
}

#[test]
fn images_and_labels_must_agree() {
    let images = parse_idx(&idx(&[2, 2, 2], &[0, 255, 51, 102, 0, 0, 0, 0]), "i").unwrap();
    let labels = parse_idx(&idx(&[2], &[3, 9]), "l").unwrap();
    let d = mnist_dataset(images.clone(), &labels).unwrap();
    assert_eq!((d.len(), d.features()), (2, 4));
    assert_eq!(&d.x_values()[..4], &[0.0, 1.0, 0.2, 0.4]);
    let three = parse_idx(&idx(&[3], &[1, 2, 3]), "l").unwrap();
    assert!(mnist_dataset(images.clone(), &three)
        .unwrap_err()
        .to_string()
        .contains("2 images but 3 labels"));
    let bad = parse_idx(&idx(&[2], &[1, 10]), "l").unwrap();
    assert!(mnist_dataset(images.clone(), &bad)
        .unwrap_err()
        .to_string()
        .contains("label 10 of sample 1"));
    assert!(
        mnist_dataset(labels.clone(), &labels).is_err(),
        "labels are not an image stack"
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = read_idx("/nonexistent/train-images").unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/train-images"),
        "{e}"
    );
}

/// The reader takes the header first and refuses, before allocating, a data
/// size over the cap (issue 11, items 4 and 10): no header or endless stream
/// makes it allocate more than `MAX_IDX_BYTES`.
#[test]
fn readers_refuse_declared_sizes_over_the_cap_before_reading() {
    use backprop::train::idx::{read_idx_from, MAX_IDX_BYTES};
    // 0 images of 65535 × 65535: declares nothing, reads as an empty stack.
    let empty = read_idx_from(&idx(&[0, 65535, 65535], &[])[..], "f").unwrap();
    assert_eq!(empty.dims, vec![0, 65535, 65535]);
    // 2³² − 1 images of 2³² − 1 bytes, followed by an endless stream of
    // zeros: refused from the header alone.
    let header = idx(&[u32::MAX, u32::MAX], &[]);
    let endless = std::io::Read::chain(&header[..], std::io::repeat(0));
    let e = read_idx_from(endless, "stream").unwrap_err();
    assert!(matches!(e, IdxError::TooLarge { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("stream: larger than {MAX_IDX_BYTES} bytes")
    );
    // A valid header followed by more data than it declares is refused
    // without reading the rest of an endless stream.
    let header = idx(&[3], &[]);
    let endless = std::io::Read::chain(&header[..], std::io::repeat(7));
    assert!(matches!(
        read_idx_from(endless, "stream").unwrap_err(),
        IdxError::Truncated {
            expected: 3,
            got: 4,
            ..
        }
    ));
    // A stream of zeros is not an IDX file (type byte 0): refused after 4 bytes.
    assert!(matches!(
        read_idx_from(std::io::repeat(0), "zeros").unwrap_err(),
        IdxError::UnsupportedType { code: 0, .. }
    ));
}

/// Images whose pixel count overflows are a typed error in the dataset
/// constructor (2⁶³ × 2⁶³ cannot come from a file, but the arrays are public).
#[test]
fn image_size_products_are_checked() {
    let images = IdxArray {
        dims: vec![0, usize::MAX, 2],
        data: vec![],
    };
    let labels = IdxArray {
        dims: vec![0],
        data: vec![],
    };
    let e = mnist_dataset(images.clone(), &labels).unwrap_err();
    assert!(e.to_string().contains("the size overflows"), "{e}");
}

/// A gzipped file is recognised by its first bytes, whatever its name.
#[cfg(feature = "gzip")]
#[test]
fn gzip_is_recognised_under_a_raw_name() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("backprop-idx-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train-labels-idx1-ubyte"); // no .gz
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx(&[3], &[1, 2, 3])).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    assert_eq!(read_idx(&path).unwrap().data, vec![1, 2, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}
