//! The IDX format (MNIST's): a big-endian header — two zero bytes, a type byte,
//! the number of dimensions, each dimension as a `u32` — then the data. Only
//! unsigned bytes (type 0x08) are read, which is what MNIST uses.
//!
//! Files may be raw or gzipped (recognised by the gzip magic `1f 8b`, whatever
//! the file's name); reading gzip needs the crate feature `gzip`, or a
//! decompressing reader handed to [`read_idx_from`]. Nothing is allocated from
//! an unchecked header field: the header is read first, the data size it
//! declares (a checked product) must be at most [`MAX_IDX_BYTES`], and then
//! exactly that much data must follow.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::nn::Targets;
use crate::train::Dataset;

/// The most bytes a (decompressed) IDX file may hold: 1 GiB.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// A decoded IDX array of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (MNIST images: `[n, 28, 28]`).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Why an IDX file or an MNIST directory could not be read.
#[derive(Debug)]
pub enum IdxError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The first bytes are not an IDX header (nor gzip).
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The element type is not unsigned byte (0x08).
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type byte found.
        code: u8,
    },
    /// The header promises more (or fewer) bytes than the file holds.
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header's dimensions need.
        expected: u64,
        /// Bytes present after the header.
        got: u64,
    },
    /// The file is larger than [`MAX_IDX_BYTES`].
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A gzipped file, but the crate was built without the `gzip` feature.
    GzipUnsupported {
        /// The file.
        path: PathBuf,
    },
    /// Images and labels disagree, or the shapes are not what MNIST needs.
    Mismatch {
        /// What disagrees, in words.
        what: String,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            IdxError::BadMagic { path, found } => write!(
                f,
                "{}: not an IDX file (first bytes {found:02x?}; expected 00 00 08 <ndim>)",
                path.display()
            ),
            IdxError::UnsupportedType { path, code } => write!(
                f,
                "{}: IDX element type 0x{code:02x} is not supported (only 0x08, unsigned byte)",
                path.display()
            ),
            IdxError::Truncated {
                path,
                expected,
                got,
            } => write!(
                f,
                "{}: the header's dimensions need {expected} data bytes but the file has {got}",
                path.display()
            ),
            IdxError::TooLarge { path } => {
                write!(f, "{}: larger than {MAX_IDX_BYTES} bytes", path.display())
            }
            IdxError::GzipUnsupported { path } => write!(
                f,
                "{}: gzipped; build backprop with the `gzip` feature or decompress it",
                path.display()
            ),
            IdxError::Mismatch { what } => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for IdxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdxError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decodes an IDX file's bytes (already decompressed). `path` only names the
/// source in errors.
///
/// # Errors
/// [`IdxError::BadMagic`], [`IdxError::UnsupportedType`], [`IdxError::Truncated`].
///
/// ```
/// use backprop::train::idx::parse_idx;
/// let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
/// let a = parse_idx(&bytes, "inline").unwrap();
/// assert_eq!(a.dims, vec![2, 3]);
/// assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
/// assert!(parse_idx(&bytes[..15], "inline").is_err()); // truncated
/// ```
pub fn parse_idx(bytes: &[u8], path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
    let path = path.as_ref().to_path_buf();
    let mut found = [0u8; 4];
    let n = bytes.len().min(4);
    found[..n].copy_from_slice(&bytes[..n]);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::BadMagic { path, found });
    }
    if bytes[2] != 0x08 {
        return Err(IdxError::UnsupportedType {
            path,
            code: bytes[2],
        });
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            path,
            expected: header as u64,
            got: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // The product in u64 cannot overflow for ≤ 255 dims of ≤ 2³² unless it is
    // absurd; saturate and compare against what is present.
    let expected = dims
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
    let got = (bytes.len() - header) as u64;
    if expected != got {
        return Err(IdxError::Truncated {
            path,
            expected,
            got,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads and decodes an IDX stream (already decompressed): the header
/// first, then exactly the data it declares, which must be at most
/// [`MAX_IDX_BYTES`] (so a header claiming terabytes, or `/dev/zero`, fails
/// before anything large is allocated). `path` only names the source in
/// errors.
///
/// # Errors
/// [`IdxError::Io`] if reading fails, [`IdxError::TooLarge`] if the header
/// declares more than [`MAX_IDX_BYTES`], and those of [`parse_idx`].
///
/// ```
/// use backprop::train::idx::{read_idx_from, IdxError};
/// let bytes: &[u8] = &[0, 0, 8, 1, 0, 0, 0, 2, 7, 9];
/// assert_eq!(read_idx_from(bytes, "inline").unwrap().data, vec![7, 9]);
/// // 2³² − 1 images of 2³² − 1 bytes: refused from the header alone.
/// let huge: &[u8] = &[0, 0, 8, 2, 255, 255, 255, 255, 255, 255, 255, 255];
/// assert!(matches!(read_idx_from(huge, "inline"), Err(IdxError::TooLarge { .. })));
/// ```
pub fn read_idx_from(mut reader: impl Read, path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
    let path = path.as_ref();
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    (&mut reader).take(4).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() < 4 {
        return parse_idx(&bytes, path);
    }
    let ndim = u64::from(bytes[3]);
    (&mut reader)
        .take(4 * ndim)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let declared = bytes[4..].chunks_exact(4).fold(1u64, |acc, c| {
        acc.saturating_mul(u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    });
    if bytes.len() as u64 == 4 + 4 * ndim && declared > MAX_IDX_BYTES {
        return Err(IdxError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // One byte more than declared, so extra data is reported, not ignored.
    reader
        .take(declared.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    parse_idx(&bytes, path)
}

/// Reads and decodes an IDX file, raw or gzipped (by its first bytes,
/// whatever its name), as [`read_idx_from`].
///
/// # Errors
/// [`IdxError::Io`], [`IdxError::GzipUnsupported`] and those of
/// [`read_idx_from`].
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
    let path = path.as_ref();
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = Vec::new();
    (&mut file).take(2).read_to_end(&mut magic).map_err(io)?;
    let stream = std::io::Cursor::new(magic.clone()).chain(file);
    if magic == [0x1f, 0x8b] {
        return gunzip(stream, path);
    }
    read_idx_from(stream, path)
}

#[cfg(feature = "gzip")]
fn gunzip(raw: impl Read, path: &Path) -> Result<IdxArray, IdxError> {
    read_idx_from(flate2::read::GzDecoder::new(raw), path)
}

#[cfg(not(feature = "gzip"))]
fn gunzip(_: impl Read, path: &Path) -> Result<IdxArray, IdxError> {
    Err(IdxError::GzipUnsupported {
        path: path.to_path_buf(),
    })
}

/// Images `[n, rows, cols]` and labels `[n]` as a dataset: pixels scaled to
/// [0, 1] (`p / 255`), one feature per pixel, labels as class indices
/// (checked < 10). The pixels are kept as bytes ([`Dataset::from_bytes`]):
/// the images are moved in, not copied.
///
/// # Errors
/// [`IdxError::Mismatch`] if the shapes are not an image stack and a label
/// vector of the same length, or a label is not a digit.
pub fn mnist_dataset(images: IdxArray, labels: &IdxArray) -> Result<Dataset, IdxError> {
    let mismatch = |what: String| IdxError::Mismatch { what };
    if images.dims.len() != 3 {
        return Err(mismatch(format!(
            "images must have 3 dimensions (n, rows, cols), found {:?}",
            images.dims
        )));
    }
    if labels.dims.len() != 1 {
        return Err(mismatch(format!(
            "labels must have 1 dimension, found {:?}",
            labels.dims
        )));
    }
    let n = images.dims[0];
    let features = images.dims[1].checked_mul(images.dims[2]).ok_or_else(|| {
        mismatch(format!(
            "images of {} × {} pixels: the size overflows",
            images.dims[1], images.dims[2]
        ))
    })?;
    if labels.dims[0] != n {
        return Err(mismatch(format!(
            "{n} images but {} labels",
            labels.dims[0]
        )));
    }
    if let Some((row, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(mismatch(format!(
            "label {l} of sample {row} is not a digit"
        )));
    }
    let y: Vec<usize> = labels.data.iter().map(|&l| l as usize).collect();
    // Pixels stay bytes (a quarter of the memory), each read as p / 255.
    Dataset::from_bytes(images.data, 255.0, n, features, Targets::Classes(&y))
        .map_err(|e| mismatch(e.to_string()))
}

/// Loads MNIST from `dir`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or with `.gz`.
/// Returns (training set, test set).
///
/// # Errors
/// Any [`IdxError`], naming the file.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<(Dataset, Dataset), IdxError> {
    let dir = dir.as_ref();
    let find = |stem: &str| -> PathBuf {
        let raw = dir.join(stem);
        if raw.exists() {
            raw
        } else {
            dir.join(format!("{stem}.gz"))
        }
    };
    let set = |images: &str, labels: &str| -> Result<Dataset, IdxError> {
        let x = read_idx(find(images))?;
        let y = read_idx(find(labels))?;
        mnist_dataset(x, &y)
    };
    Ok((
        set("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        set("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    ))
}
