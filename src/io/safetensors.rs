//! The [safetensors] container: a strict reader, a writer and atomic file
//! replacement.
//!
//! # Format
//! ```text
//! [8 bytes]  N, little-endian u64: the header's length
//! [N bytes]  UTF-8 JSON header (may end in spaces, used as padding)
//! [rest]     the data section: raw little-endian tensor bytes
//! ```
//! The header is one JSON object. The optional key `__metadata__` maps to an
//! object of string keys to string values; every other key is a tensor name
//! mapping to `{"dtype": "F32", "shape": [d0, d1, …], "data_offsets": [begin,
//! end]}`, offsets in bytes relative to the data section's start. Tensors are
//! row-major (C order), contiguous, do not overlap, and together cover the
//! data section exactly.
//!
//! # Reading
//! [`from_bytes`] checks, before allocating anything from a header field:
//! the header length is ≤ [`MAX_HEADER_LEN`] and fits in the input; the header
//! is UTF-8 JSON of the supported subset (nested at most 64 deep); every
//! tensor has exactly the three fields, with a known dtype; shape products and
//! byte lengths are computed with checked arithmetic and agree; offsets are
//! ordered and in bounds; tensors neither overlap nor leave gaps; names and
//! metadata keys are unique. Tensor data is then read with one allocation per
//! tensor, of at most the data section's size. F32 data is read as is; F64 is
//! rounded to the nearest `f32`, and I64 converted to `f32` (exact up to
//! 2²⁴), so that files PyTorch writes in those dtypes (e.g. BatchNorm's
//! `num_batches_tracked`) load. Other dtypes give
//! [`IoError::UnsupportedDtype`].
//!
//! # Writing
//! [`to_bytes`] writes F32 only: the metadata first (omitted when empty),
//! then the tensors in name order, their data in the same order. The header is
//! padded with spaces so the data section starts at a multiple of 8 bytes, as
//! the reference implementation does.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::json::{self, Value};
use super::IoError;

/// The largest header [`from_bytes`] accepts and [`to_bytes`] writes:
/// 100 MiB, the reference implementation's limit.
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

const METADATA_KEY: &str = "__metadata__";

/// One tensor: a shape and its elements in row-major (C) order.
///
/// `data.len()` should be the product of `shape` (1 for the empty shape of a
/// scalar); [`to_bytes`] checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first (PyTorch's `tensor.shape`).
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of the given shape and data (not checked here; see
    /// [`to_bytes`]).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { shape, data }
    }
}

/// The contents of a safetensors file: string metadata and named tensors,
/// both kept sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafeTensors {
    /// The header's `__metadata__` (string keys to string values).
    pub metadata: BTreeMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

/// The dtypes the reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    I64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "F64" => Some(Dtype::F64),
            "I64" => Some(Dtype::I64),
            _ => None,
        }
    }
    fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }
}

/// A tensor's header entry, validated against itself but not yet against
/// the others.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

/// Serialises `st` into the safetensors format (F32 tensors; see the
/// [module docs](self) for the layout).
///
/// # Errors
/// [`IoError::ReservedName`] for a tensor named `__metadata__`,
/// [`IoError::DataLength`] if a tensor's data length is not the product of its
/// shape (or the product overflows), [`IoError::HeaderTooLarge`] if the header
/// would exceed [`MAX_HEADER_LEN`].
///
/// ```
/// use backprop::io::{from_bytes, to_bytes, SafeTensors, Tensor};
/// let mut st = SafeTensors::default();
/// st.tensors.insert("w".into(), Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
/// st.metadata.insert("note".into(), "hello".into());
/// let bytes = to_bytes(&st).unwrap();
/// assert_eq!(from_bytes(&bytes).unwrap(), st);
/// ```
pub fn to_bytes(st: &SafeTensors) -> Result<Vec<u8>, IoError> {
    let mut header = String::from("{");
    let mut first = true;
    if !st.metadata.is_empty() {
        json::write_string(&mut header, METADATA_KEY);
        header.push_str(":{");
        for (i, (k, v)) in st.metadata.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            json::write_string(&mut header, k);
            header.push(':');
            json::write_string(&mut header, v);
        }
        header.push('}');
        first = false;
    }
    let mut offset: u64 = 0;
    for (name, t) in &st.tensors {
        if name == METADATA_KEY {
            return Err(IoError::ReservedName);
        }
        let count = element_count(&t.shape);
        if count != Some(t.data.len() as u64) {
            return Err(IoError::DataLength {
                tensor: name.clone(),
                shape: t.shape.clone(),
                len: t.data.len(),
            });
        }
        let end = offset + 4 * t.data.len() as u64;
        if !first {
            header.push(',');
        }
        first = false;
        json::write_string(&mut header, name);
        header.push_str(":{\"dtype\":\"F32\",\"shape\":[");
        for (i, d) in t.shape.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&d.to_string());
        }
        header.push_str(&format!("],\"data_offsets\":[{offset},{end}]}}"));
        offset = end;
    }
    header.push('}');
    // Pad so the data section starts 8-byte aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    if header.len() as u64 > MAX_HEADER_LEN {
        return Err(IoError::HeaderTooLarge {
            len: header.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in st.tensors.values() {
        for v in &t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// The product of `shape` (1 for a scalar), or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// Parses a safetensors file held in memory. Never panics and allocates at
/// most a few times the input's size, whatever the input.
///
/// # Errors
/// [`IoError::Truncated`], [`IoError::HeaderTooLarge`],
/// [`IoError::HeaderOutOfBounds`], [`IoError::HeaderUtf8`],
/// [`IoError::HeaderJson`], [`IoError::HeaderField`],
/// [`IoError::DuplicateName`], [`IoError::UnsupportedDtype`],
/// [`IoError::OffsetsOutOfBounds`], [`IoError::Overlap`], [`IoError::Gap`] or
/// [`IoError::ByteCount`], each naming the tensor or field at fault (see the
/// [module docs](self) for the checks).
///
/// ```
/// use backprop::io::from_bytes;
/// let header = br#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
/// let mut file = (header.len() as u64).to_le_bytes().to_vec();
/// file.extend_from_slice(header);
/// file.extend_from_slice(&1.5f32.to_le_bytes());
/// file.extend_from_slice(&(-2.0f32).to_le_bytes());
/// let st = from_bytes(&file).unwrap();
/// assert_eq!(st.tensors["b"].shape, [2]);
/// assert_eq!(st.tensors["b"].data, [1.5, -2.0]);
/// ```
pub fn from_bytes(bytes: &[u8]) -> Result<SafeTensors, IoError> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(IoError::Truncated { len: bytes.len() });
    };
    let n = u64::from_le_bytes(*prefix);
    if n > MAX_HEADER_LEN {
        return Err(IoError::HeaderTooLarge { len: n });
    }
    if n > rest.len() as u64 {
        return Err(IoError::HeaderOutOfBounds {
            len: n,
            available: rest.len() as u64,
        });
    }
    let (header, data) = rest.split_at(n as usize);
    let (metadata, entries) = parse_header(header)?;

    // Each tensor against the data section, then against each other.
    let data_len = data.len() as u64;
    for e in &entries {
        if e.begin > e.end || e.end > data_len {
            return Err(IoError::OffsetsOutOfBounds {
                tensor: e.name.clone(),
                begin: e.begin,
                end: e.end,
                data_len,
            });
        }
        let bytes = e.end - e.begin;
        let need = element_count(&e.shape).and_then(|c| c.checked_mul(e.dtype.size()));
        if need != Some(bytes) {
            return Err(IoError::ByteCount {
                tensor: e.name.clone(),
                shape: e.shape.clone(),
                bytes,
            });
        }
    }
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut pos = 0u64;
    let mut prev: Option<&Entry> = None;
    for e in &order {
        if e.begin < pos {
            return Err(IoError::Overlap {
                tensor: e.name.clone(),
                other: prev.map_or_else(String::new, |p| p.name.clone()),
            });
        }
        if e.begin > pos {
            return Err(IoError::Gap {
                after: prev.map(|p| p.name.clone()),
                start: pos,
                end: e.begin,
            });
        }
        pos = e.end;
        prev = Some(e);
    }
    if pos != data_len {
        return Err(IoError::Gap {
            after: prev.map(|p| p.name.clone()),
            start: pos,
            end: data_len,
        });
    }

    // Everything checked: the data is in bounds and sized by the input.
    let mut tensors = BTreeMap::new();
    for e in entries {
        let raw = &data[e.begin as usize..e.end as usize];
        let values: Vec<f32> = match e.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(eight(c)) as f32)
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(eight(c)) as f32)
                .collect(),
        };
        tensors.insert(
            e.name,
            Tensor {
                shape: e.shape,
                data: values,
            },
        );
    }
    Ok(SafeTensors { metadata, tensors })
}

/// The metadata and tensor entries of a header (the bytes after the length
/// prefix), each entry checked on its own (fields, dtype); their offsets are
/// checked against the data section by the caller.
fn parse_header(header: &[u8]) -> Result<(BTreeMap<String, String>, Vec<Entry>), IoError> {
    let text = std::str::from_utf8(header).map_err(|e| IoError::HeaderUtf8 {
        offset: e.valid_up_to(),
    })?;
    let value = json::parse(text).map_err(|e| IoError::HeaderJson {
        offset: e.offset,
        message: e.message,
    })?;
    let Value::Object(members) = value else {
        return Err(field(
            "(header)",
            format!("is {}, not an object", value.kind()),
        ));
    };

    let mut metadata = BTreeMap::new();
    let mut seen_metadata = false;
    let mut entries: Vec<Entry> = Vec::with_capacity(members.len());
    let mut names = std::collections::BTreeSet::new();
    for (name, v) in members {
        if name == METADATA_KEY {
            if seen_metadata {
                return Err(IoError::DuplicateName { name });
            }
            seen_metadata = true;
            metadata = parse_metadata(v)?;
            continue;
        }
        if !names.insert(name.clone()) {
            return Err(IoError::DuplicateName { name });
        }
        entries.push(parse_entry(name, v)?);
    }
    Ok((metadata, entries))
}

fn eight(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    a
}

fn field(name: &str, message: impl Into<String>) -> IoError {
    IoError::HeaderField {
        name: name.to_string(),
        message: message.into(),
    }
}

fn parse_metadata(v: Value) -> Result<BTreeMap<String, String>, IoError> {
    let Value::Object(members) = v else {
        return Err(field(
            METADATA_KEY,
            format!("is {}, not an object", v.kind()),
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in members {
        let Value::String(s) = v else {
            return Err(field(
                METADATA_KEY,
                format!("value of {k:?} is {}, not a string", v.kind()),
            ));
        };
        if out.contains_key(&k) {
            return Err(IoError::DuplicateName { name: k });
        }
        out.insert(k, s);
    }
    Ok(out)
}

fn parse_entry(name: String, v: Value) -> Result<Entry, IoError> {
    let Value::Object(members) = v else {
        return Err(field(&name, format!("is {}, not an object", v.kind())));
    };
    let (mut dtype, mut shape, mut offsets) = (None, None, None);
    for (k, v) in members {
        let slot = match k.as_str() {
            "dtype" => &mut dtype,
            "shape" => &mut shape,
            "data_offsets" => &mut offsets,
            _ => return Err(field(&name, format!("unknown field {k:?}"))),
        };
        if slot.is_some() {
            return Err(field(&name, format!("field {k:?} given twice")));
        }
        *slot = Some(v);
    }
    let dtype = match dtype {
        Some(Value::String(s)) => match Dtype::parse(&s) {
            Some(d) => d,
            None => {
                return Err(IoError::UnsupportedDtype {
                    tensor: name,
                    dtype: s,
                })
            }
        },
        Some(v) => return Err(field(&name, format!("dtype is {}, not a string", v.kind()))),
        None => return Err(field(&name, "missing field \"dtype\"")),
    };
    let shape = match shape {
        Some(Value::Array(items)) => {
            let mut dims = Vec::with_capacity(items.len());
            for d in items {
                match d {
                    Value::UInt(d) => dims.push(usize::try_from(d).map_err(|_| {
                        field(&name, format!("dimension {d} does not fit in usize"))
                    })?),
                    d => {
                        return Err(field(
                            &name,
                            format!("shape holds {}, not an integer", d.kind()),
                        ))
                    }
                }
            }
            dims
        }
        Some(v) => return Err(field(&name, format!("shape is {}, not an array", v.kind()))),
        None => return Err(field(&name, "missing field \"shape\"")),
    };
    let (begin, end) = match offsets {
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::UInt(b), Value::UInt(e)] => (*b, *e),
            _ => {
                return Err(field(
                    &name,
                    "data_offsets must be an array of two integers",
                ))
            }
        },
        Some(v) => {
            return Err(field(
                &name,
                format!("data_offsets is {}, not an array", v.kind()),
            ))
        }
        None => return Err(field(&name, "missing field \"data_offsets\"")),
    };
    Ok(Entry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

/// The most bytes [`read_file`] reads from a file that is not a regular
/// file (a pipe, a device), whose length is not known in advance: 4 GiB.
pub const MAX_STREAM_LEN: u64 = 1 << 32;

/// Reads and parses a safetensors file ([`from_bytes`] on its contents).
///
/// Nothing is allocated from an unchecked size: the 8-byte prefix and the
/// header (at most [`MAX_HEADER_LEN`]) are read first, and then only as much
/// data as the header's tensors declare, at most the file's length for a
/// regular file and [`MAX_STREAM_LEN`] for anything else. So `/dev/zero` is
/// refused after 8 bytes, and a header claiming terabytes after its own
/// length.
///
/// # Errors
/// [`IoError::Io`] if the file cannot be read or is a stream declaring more
/// than [`MAX_STREAM_LEN`] bytes; otherwise as [`from_bytes`].
pub fn read_file(path: impl AsRef<Path>) -> Result<SafeTensors, IoError> {
    let path = path.as_ref();
    let err = |source| io_err(path, source);
    let mut file = File::open(path).map_err(err)?;
    let info = file.metadata().map_err(err)?;
    if info.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    let limit = if info.is_file() {
        info.len()
    } else {
        MAX_STREAM_LEN
    };
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes).map_err(err)?;
    let Some(prefix) = bytes.first_chunk::<8>() else {
        return from_bytes(&bytes);
    };
    let n = u64::from_le_bytes(*prefix);
    if n > MAX_HEADER_LEN {
        return Err(IoError::HeaderTooLarge { len: n });
    }
    (&mut file).take(n).read_to_end(&mut bytes).map_err(err)?;
    if (bytes.len() as u64) < 8 + n {
        return from_bytes(&bytes);
    }
    let (_, entries) = parse_header(&bytes[8..])?;
    let declared = entries.iter().map(|e| e.end).max().unwrap_or(0);
    let room = limit.saturating_sub(8 + n);
    if declared > room && !info.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the header declares {declared} data bytes; a file that is not a regular \
                 file may hold at most {MAX_STREAM_LEN}"
            ),
        )));
    }
    // One byte more than needed, so that trailing bytes are reported by
    // `from_bytes` (as a gap) rather than ignored.
    let want = declared.min(room).saturating_add(1);
    file.take(want).read_to_end(&mut bytes).map_err(err)?;
    from_bytes(&bytes)
}

/// Writes `st` to `path` with [`write_atomic`].
///
/// # Errors
/// As [`to_bytes`] and [`write_atomic`].
pub fn write_file(st: &SafeTensors, path: impl AsRef<Path>) -> Result<(), IoError> {
    write_atomic(path, &to_bytes(st)?)
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> IoError {
    IoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `e` with what was being done prepended, keeping its kind.
fn doing(what: String, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Replaces the file at `path` by `bytes` atomically: a reader (or a crash)
/// sees either the old content or the new one, never a mixture or a
/// truncated file.
///
/// The bytes go to a new temporary file in the same directory (named
/// `.{file name}.tmp-{pid}-{n}`, created exclusively), which is flushed to
/// disk (`sync_all`) and then renamed over `path`; finally the directory is
/// synced so the rename itself is durable (best effort: not every platform
/// can open a directory). On error the temporary file is removed and `path`
/// is untouched.
///
/// * **Symbolic links** are followed: if `path` is a link, the file it
///   points to is replaced (atomically, through a temporary file in *its*
///   directory) and the link stays a link.
/// * **Stale temporary files** of the same target, left by a process that
///   was killed while writing, are removed first: those named with the pid of
///   a process that no longer runs (where `/proc` tells; elsewhere, those
///   untouched for an hour). Temporary files of live writers are left alone.
///
/// # Errors
/// [`IoError::Io`] naming `path` (never the temporary file), with what
/// failed (creating the temporary file in the directory, writing it,
/// renaming it over `path`).
///
/// ```
/// use backprop::io::write_atomic;
/// let path = std::env::temp_dir().join(format!("backprop-atomic-doc-{}", std::process::id()));
/// write_atomic(&path, b"old").unwrap();
/// write_atomic(&path, b"new").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"new");
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), IoError> {
    let user = path.as_ref();
    let target = Target::of(user)?;
    target.remove_stale_temps();
    let (tmp, mut file) = target.create_temp().map_err(|e| io_err(user, e))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(user, doing(format!("writing {}", tmp.display()), e)));
    drop(file);
    let result = written.and_then(|()| {
        fs::rename(&tmp, &target.path).map_err(|e| {
            let what = if target.path == user {
                "replacing the file".to_string()
            } else {
                format!("replacing {}, the link's target", target.path.display())
            };
            io_err(user, doing(what, e))
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable; directories cannot be opened everywhere.
    if let Ok(d) = File::open(&target.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks that [`write_atomic`] could write `path` now, without touching
/// it: `path` names a file (not a directory) in an existing directory where
/// a temporary file can be created (one is created and removed). Meant for
/// a long job to fail fast, before the work whose result it would lose.
///
/// # Errors
/// [`IoError::Io`] naming `path`, as [`write_atomic`] would fail.
///
/// ```
/// use backprop::io::check_writable;
/// assert!(check_writable(std::env::temp_dir().join("backprop-check-doc.bin")).is_ok());
/// let err = check_writable("/nonexistent-dir/model.safetensors").unwrap_err();
/// assert!(err.to_string().starts_with("/nonexistent-dir/model.safetensors: "), "{err}");
/// ```
pub fn check_writable(path: impl AsRef<Path>) -> Result<(), IoError> {
    let user = path.as_ref();
    let target = Target::of(user)?;
    if target.path.is_dir() {
        return Err(io_err(
            user,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a directory"),
        ));
    }
    let (tmp, file) = target.create_temp().map_err(|e| io_err(user, e))?;
    drop(file);
    fs::remove_file(&tmp).map_err(|e| io_err(user, doing(format!("removing {}", tmp.display()), e)))
}

/// The file a write to a user's path replaces: symbolic links resolved.
struct Target {
    /// The file to replace (the user's path, or the final target of a link).
    path: PathBuf,
    /// Its directory (`.` for a bare file name).
    dir: PathBuf,
    /// Its file name.
    name: std::ffi::OsString,
}

/// How many symbolic links [`Target::of`] follows (Linux's limit).
const MAX_LINKS: usize = 40;

impl Target {
    /// The final target of `user`, following symbolic links (relative ones
    /// from the link's directory).
    fn of(user: &Path) -> Result<Target, IoError> {
        let fail = |message: &str| {
            io_err(
                user,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_string()),
            )
        };
        let mut path = user.to_path_buf();
        let mut hops = 0;
        while fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            hops += 1;
            if hops > MAX_LINKS {
                return Err(fail("too many levels of symbolic links"));
            }
            let link = fs::read_link(&path).map_err(|e| io_err(user, e))?;
            path = match path.parent() {
                Some(parent) if link.is_relative() => parent.join(link),
                _ => link,
            };
        }
        let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
            return Err(fail("not a file path"));
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Target { path, dir, name })
    }

    /// A new, exclusively created temporary file beside the target.
    fn create_temp(&self) -> std::io::Result<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = self.temp_prefix();
            name.push(format!("{}-{n}", std::process::id()));
            let tmp = self.dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => return Ok((tmp, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let what = format!("cannot create a file in {}", self.dir.display());
                    return Err(doing(what, e));
                }
            }
        }
    }

    /// `.{name}.tmp-`: what every temporary file of this target starts with.
    fn temp_prefix(&self) -> std::ffi::OsString {
        let mut p = std::ffi::OsString::from(".");
        p.push(&self.name);
        p.push(".tmp-");
        p
    }

    /// Removes the temporary files of this target that a dead process left
    /// (best effort: errors are ignored, the write goes on).
    fn remove_stale_temps(&self) {
        let prefix = self.temp_prefix();
        let (Some(prefix), Ok(entries)) = (prefix.to_str(), fs::read_dir(&self.dir)) else {
            return;
        };
        let me = std::process::id();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let Some((pid, n)) = rest.split_once('-') else {
                continue;
            };
            let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else {
                continue;
            };
            if pid != me && !writer_may_be_alive(pid, &entry) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether the process `pid` that created the temporary file `entry` may
/// still be writing it: by `/proc` where there is one, else by the file's age.
fn writer_may_be_alive(pid: u32, entry: &fs::DirEntry) -> bool {
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return proc.join(pid.to_string()).exists();
    }
    let age = entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a < std::time::Duration::from_secs(3600))
}
