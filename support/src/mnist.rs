//! MNIST for the examples and tests: the IDX files from a directory, plain or
//! gzipped (decompressed with flate2, a dev-dependency, so the library keeps
//! its small dependency set).

use std::io::Read;
use std::path::Path;

use backprop::train::idx::{mnist_dataset, read_idx_from, IdxArray};
use backprop::train::Dataset;

/// An IDX file, `path` or else `path.gz`, gzipped or not by its first bytes
/// (whatever its name); read with the library's bounded reader, so a bad
/// header or an endless stream fails before anything large is allocated.
pub fn read_idx_file(path: &Path) -> Result<IdxArray, String> {
    let gz = path.with_extension(match path.extension() {
        Some(e) => format!("{}.gz", e.to_string_lossy()),
        None => "gz".into(),
    });
    let file = if path.exists() {
        path.to_path_buf()
    } else {
        gz
    };
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    let mut f = std::fs::File::open(&file).map_err(io)?;
    let mut magic = Vec::new();
    (&mut f).take(2).read_to_end(&mut magic).map_err(io)?;
    let stream = std::io::Cursor::new(magic.clone()).chain(f);
    let result = if magic == [0x1f, 0x8b] {
        read_idx_from(flate2::read::GzDecoder::new(stream), &file)
    } else {
        read_idx_from(stream, &file)
    };
    result.map_err(|e| e.to_string())
}

/// The MNIST training and test sets in `dir` (pixels scaled to [0, 1]).
pub fn load(dir: &Path) -> Result<(Dataset, Dataset), String> {
    let set = |images: &str, labels: &str| -> Result<Dataset, String> {
        let x = read_idx_file(&dir.join(images))?;
        let y = read_idx_file(&dir.join(labels))?;
        mnist_dataset(x, &y).map_err(|e| e.to_string())
    };
    Ok((
        set("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        set("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    ))
}

/// The MNIST directory: `BACKPROP_MNIST_DIR`, else `../shared/data/mnist`.
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("BACKPROP_MNIST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "../shared/data/mnist".into())
}
