//! The [safetensors] container: read by the `safetensors` crate, the
//! format's own implementation; written here in a fixed order; replaced
//! atomically.
//!
//! The format, what reading checks and how writing orders things are
//! documented on the [`io`](super) module.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ::safetensors::{Dtype, SafeTensors as Parsed};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize};

use super::IoError;

/// The largest header [`from_bytes`] accepts and [`to_bytes`] writes:
/// 100 000 000 bytes, the `safetensors` crate's limit.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

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

/// The header of `st` as [`to_bytes`] writes it: metadata, then each
/// tensor's entry with consecutive offsets, in name order.
struct Header<'a>(&'a SafeTensors);

/// One tensor's header entry.
#[derive(Serialize)]
struct Entry<'a> {
    dtype: &'static str,
    shape: &'a [usize],
    data_offsets: [u64; 2],
}

impl Serialize for Header<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0;
        let mut map = s.serialize_map(None)?;
        if !st.metadata.is_empty() {
            map.serialize_entry(METADATA_KEY, &st.metadata)?;
        }
        let mut offset = 0u64;
        for (name, t) in &st.tensors {
            let end = offset + 4 * t.data.len() as u64;
            let entry = Entry {
                dtype: "F32",
                shape: &t.shape,
                data_offsets: [offset, end],
            };
            map.serialize_entry(name, &entry)?;
            offset = end;
        }
        map.end()
    }
}

/// Serialises `st` into the safetensors format (F32 tensors; see the
/// [`io` module docs](super#the-container) for the layout).
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
    let mut data_len = 0usize;
    for (name, t) in &st.tensors {
        if name == METADATA_KEY {
            return Err(IoError::ReservedName);
        }
        let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if count != Some(t.data.len()) {
            return Err(IoError::DataLength {
                tensor: name.clone(),
                shape: t.shape.clone(),
                len: t.data.len(),
            });
        }
        data_len += 4 * t.data.len();
    }
    let mut header = Vec::new();
    // Serialising string maps and integers into a Vec cannot fail.
    let mut ser = serde_json::Serializer::new(&mut header);
    Header(st)
        .serialize(&mut ser)
        .expect("a header of strings and integers serialises");
    header.resize(header.len().next_multiple_of(8), b' ');
    let n = header.len() as u64;
    if n > MAX_HEADER_LEN {
        return Err(IoError::HeaderTooLarge { len: n });
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + data_len);
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes.extend_from_slice(&header);
    for t in st.tensors.values() {
        for &x in &t.data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(bytes)
}

/// Parses a safetensors file held in memory (see the [`io` module
/// docs](super#the-container) for what is checked and how dtypes are converted).
///
/// # Errors
/// [`IoError::Format`] for anything the `safetensors` crate refuses (a
/// truncated input, a header that is too long, not UTF-8 or not JSON, a
/// malformed entry, offsets that overlap, leave a gap or disagree with the
/// shape), [`IoError::UnsupportedDtype`] for a dtype other than F32, F64,
/// F16, BF16 and I64.
///
/// ```
/// use backprop::io::{from_bytes, IoError};
/// let err = from_bytes(b"\x02\0\0\0\0\0\0\0{]").unwrap_err();
/// assert!(matches!(err, IoError::Format { .. }), "{err}");
/// ```
pub fn from_bytes(bytes: &[u8]) -> Result<SafeTensors, IoError> {
    let (n, header) = Parsed::read_metadata(bytes).map_err(|e| IoError::Format {
        message: e.to_string(),
    })?;
    // `read_metadata` checked that the header and the data section it
    // describes make up the input exactly.
    let data = bytes.get(8 + n..).unwrap_or_default();
    let mut st = SafeTensors::default();
    if let Some(m) = header.metadata() {
        st.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    // In data order, so the first bad tensor reported is always the same.
    for name in header.offset_keys() {
        let Some(info) = header.info(&name) else {
            continue;
        };
        let (begin, end) = info.data_offsets;
        let raw = data.get(begin..end).ok_or_else(|| IoError::Format {
            message: format!("tensor {name:?} lies outside the data section"),
        })?;
        let values = decode(info.dtype, raw).ok_or_else(|| IoError::UnsupportedDtype {
            tensor: name.clone(),
            dtype: info.dtype.to_string(),
        })?;
        st.tensors
            .insert(name, Tensor::new(info.shape.clone(), values));
    }
    Ok(st)
}

/// Little-endian elements of `dtype` as `f32`, or `None` for a dtype this
/// crate does not read.
fn decode(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    fn each<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        raw.chunks_exact(N)
            .map(|c| f(std::array::from_fn(|i| c[i])))
            .collect()
    }
    Some(match dtype {
        Dtype::F32 => each(raw, f32::from_le_bytes),
        Dtype::F64 => each(raw, |b| f64::from_le_bytes(b) as f32),
        Dtype::I64 => each(raw, |b| i64::from_le_bytes(b) as f32),
        Dtype::F16 => each(raw, |b| f16_to_f32(u16::from_le_bytes(b))),
        Dtype::BF16 => each(raw, |b| {
            f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)
        }),
        _ => return None,
    })
}

/// The IEEE 754 binary16 value with bits `h`, exactly, as `f32` (NaN
/// payloads kept in the high mantissa bits).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero and subnormals: man · 2⁻²⁴, exact in f32.
        0 => return f32::from_bits(sign | (man as f32 * (1.0 / 16_777_216.0)).to_bits()),
        // Infinities and NaNs.
        0x1f => 0x7f80_0000 | (man << 13),
        // Normal: rebias the exponent from 15 to 127.
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
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
    let Some(declared) = declared_data_len(&bytes[8..]) else {
        // Not a header: `from_bytes` says why.
        return from_bytes(&bytes);
    };
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
    // `from_bytes` rather than ignored.
    let want = declared.min(room).saturating_add(1);
    file.take(want).read_to_end(&mut bytes).map_err(err)?;
    from_bytes(&bytes)
}

/// The largest tensor end offset a header declares (0 without tensors), or
/// `None` if it is not a JSON object (of anything). Only for sizing a read:
/// the header is checked properly by [`from_bytes`].
fn declared_data_len(header: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Offsets {
        data_offsets: (u64, u64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Tensor(Offsets),
        Other(serde::de::IgnoredAny),
    }
    let entries: BTreeMap<String, Entry> = serde_json::from_slice(header).ok()?;
    let ends = entries.values().filter_map(|e| match e {
        Entry::Tensor(o) => Some(o.data_offsets.1),
        Entry::Other(_) => None,
    });
    Some(ends.max().unwrap_or(0))
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
