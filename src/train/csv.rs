//! CSV datasets: one sample per line, the features then the label, comma
//! separated. Blank lines and lines starting with `#` are skipped, and a
//! UTF-8 byte-order mark at the start is ignored. The first line is a header
//! only if it looks like one: every field is a name, i.e. non-empty, not a
//! number and not starting like one (a digit, a sign or a `.`). So a first
//! data row with a typo (`1,2x,0`) or a hex float (`0x1p3`) is an error
//! naming it, never silently dropped as a header. Errors name the line
//! (1-based) and the column.
//!
//! Sizes are bounded: [`read_csv`] reads at most [`MAX_CSV_BYTES`] and stops
//! at the first NUL byte (so `/dev/zero` fails at once), and a class label
//! must be below [`MAX_CLASSES`], since it sizes a network's output layer.

use std::fmt;
use std::io::Read;
use std::path::Path;

use crate::matrix::MatRef;
use crate::nn::Targets;
use crate::train::Dataset;

/// The largest CSV file [`read_csv`] reads: 1 GiB.
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// Class labels must be below this (2²⁰ = 1 048 576): the largest label sizes
/// a classifier's output layer, so a stray huge value must not.
pub const MAX_CLASSES: usize = 1 << 20;

/// How the last column is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelKind {
    /// A class index `0, 1, …` (softmax cross-entropy).
    Class,
    /// `-1` or `1` (logistic loss).
    Sign,
    /// A real value (regression).
    Value,
}

/// Why a CSV file could not be read.
#[derive(Debug)]
pub enum CsvError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is larger than [`MAX_CSV_BYTES`].
    TooLarge,
    /// The file is not text: a NUL byte, or invalid UTF-8.
    NotText {
        /// 1-based line of the first offending byte.
        line: usize,
    },
    /// No data line.
    Empty,
    /// A line has a different number of fields than the first data line.
    FieldCount {
        /// 1-based line number.
        line: usize,
        /// Fields of the first data line.
        expected: usize,
        /// Fields on this line.
        got: usize,
    },
    /// A field is not a number.
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field.
        token: String,
    },
    /// A feature is NaN or infinite.
    NonFinite {
        /// 1-based line number.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The label does not fit the label kind.
    BadLabel {
        /// 1-based line number.
        line: usize,
        /// The label field.
        token: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsvError::Io(e) => write!(f, "{e}"),
            CsvError::TooLarge => write!(f, "larger than {MAX_CSV_BYTES} bytes"),
            CsvError::NotText { line } => {
                write!(f, "line {line}: not text (a NUL byte or invalid UTF-8)")
            }
            CsvError::Empty => write!(f, "no data line"),
            CsvError::FieldCount {
                line,
                expected,
                got,
            } => {
                write!(
                    f,
                    "line {line}: {got} fields, the first data line has {expected}"
                )
            }
            CsvError::BadNumber {
                line,
                column,
                token,
            } => {
                write!(f, "line {line}, column {column}: {token:?} is not a number")
            }
            CsvError::NonFinite { line, column } => {
                write!(f, "line {line}, column {column}: NaN or infinite value")
            }
            CsvError::BadLabel {
                line,
                token,
                expected,
            } => write!(f, "line {line}: label {token:?} is not {expected}"),
        }
    }
}

impl std::error::Error for CsvError {}

/// Reads a CSV file (see the module docs), at most [`MAX_CSV_BYTES`] of it.
///
/// # Errors
/// [`CsvError::Io`] if it cannot be read, [`CsvError::TooLarge`],
/// [`CsvError::NotText`] at the first NUL byte or invalid UTF-8; otherwise as
/// [`parse_csv`].
pub fn read_csv(path: impl AsRef<Path>, kind: LabelKind) -> Result<Dataset, CsvError> {
    let mut file = std::fs::File::open(path).map_err(CsvError::Io)?;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let got = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CsvError::Io(e)),
        };
        if let Some(at) = chunk[..got].iter().position(|&b| b == 0) {
            let before = bytes.iter().chain(&chunk[..at]);
            let line = 1 + before.filter(|&&b| b == b'\n').count();
            return Err(CsvError::NotText { line });
        }
        if (bytes.len() + got) as u64 > MAX_CSV_BYTES {
            return Err(CsvError::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..got]);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        CsvError::NotText {
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    parse_csv(&text, kind)
}

/// Whether a first line's fields make a header: each a non-empty name that
/// neither parses as a number nor starts like one.
fn is_header(fields: &[&str]) -> bool {
    fields.iter().all(|f| {
        let starts_numeric = f
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
        !starts_numeric && f.parse::<f64>().is_err()
    })
}

/// Parses CSV text (see the module docs).
///
/// # Errors
/// [`CsvError`], naming the line and column.
///
/// ```
/// use backprop::train::csv::{parse_csv, LabelKind};
/// // A header row of names is skipped; a first row with a typo is an error.
/// assert_eq!(parse_csv("a,b\n1,2\n", LabelKind::Value).unwrap().len(), 1);
/// let e = parse_csv("1,2x,0\n3,4,1\n", LabelKind::Class).unwrap_err();
/// assert_eq!(e.to_string(), "line 1, column 2: \"2x\" is not a number");
/// let d = parse_csv("x,y,label\n0.5,1,0\n-1,2,2\n", LabelKind::Class).unwrap();
/// assert_eq!((d.len(), d.features()), (2, 2));
/// let e = parse_csv("1,2,0\n1,oops,1\n", LabelKind::Class).unwrap_err();
/// assert_eq!(e.to_string(), "line 2, column 2: \"oops\" is not a number");
/// ```
pub fn parse_csv(text: &str, kind: LabelKind) -> Result<Dataset, CsvError> {
    let mut x = Vec::new();
    let mut classes = Vec::new();
    let mut values = Vec::new();
    let mut width = None;
    let mut rows = 0;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut first = true;
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && fields.len() >= 2 && is_header(&fields) {
            width = Some(fields.len());
            continue;
        }
        let w = *width.get_or_insert(fields.len());
        if fields.len() != w || w < 2 {
            return Err(CsvError::FieldCount {
                line,
                expected: w.max(2),
                got: fields.len(),
            });
        }
        for (c, f) in fields[..w - 1].iter().enumerate() {
            let v: f32 = f.parse().map_err(|_| CsvError::BadNumber {
                line,
                column: c + 1,
                token: f.to_string(),
            })?;
            if !v.is_finite() {
                return Err(CsvError::NonFinite {
                    line,
                    column: c + 1,
                });
            }
            x.push(v);
        }
        let label = fields[w - 1];
        let bad = |expected| CsvError::BadLabel {
            line,
            token: label.to_string(),
            expected,
        };
        match kind {
            LabelKind::Class => match label.parse::<usize>() {
                Ok(c) if c < MAX_CLASSES => classes.push(c),
                Ok(_) => return Err(bad("a class index below 1048576 (MAX_CLASSES)")),
                Err(_) => return Err(bad("a class index")),
            },
            LabelKind::Sign => match label.parse::<f32>() {
                Ok(v) if v == 1.0 || v == -1.0 => values.push(v),
                _ => return Err(bad("-1 or 1")),
            },
            LabelKind::Value => match label.parse::<f32>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ => return Err(bad("a finite number")),
            },
        }
        rows += 1;
    }
    let Some(w) = width.filter(|_| rows > 0) else {
        return Err(CsvError::Empty);
    };
    let labels = match kind {
        LabelKind::Class => Targets::Classes(&classes),
        LabelKind::Sign => Targets::Signs(&values),
        LabelKind::Value => Targets::Values(MatRef::from_slice(&values, rows, 1)),
    };
    // Every value was checked above, so the dataset's own checks pass.
    Ok(Dataset::new(x, rows, w - 1, labels).expect("checked while parsing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_column() {
        let e = parse_csv("# comment\n1,2,1\n\n3,4\n", LabelKind::Sign).unwrap_err();
        assert_eq!(e.to_string(), "line 4: 2 fields, the first data line has 3");
        let e = parse_csv("1,nan,1\n", LabelKind::Sign).unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 2: NaN or infinite value");
        let e = parse_csv("1,2,0.5\n", LabelKind::Sign).unwrap_err();
        assert_eq!(e.to_string(), "line 1: label \"0.5\" is not -1 or 1");
        let e = parse_csv("a,b\n", LabelKind::Value).unwrap_err();
        assert!(matches!(e, CsvError::Empty));
        let e = parse_csv("1,2,-3\n", LabelKind::Class).unwrap_err();
        assert_eq!(e.to_string(), "line 1: label \"-3\" is not a class index");
    }

    #[test]
    fn regression_and_header() {
        let d = parse_csv("a,b,t\n1,2,0.5\n3,4,-1.5\n", LabelKind::Value).unwrap();
        assert_eq!(&d.x_values()[..], &[1.0, 2.0, 3.0, 4.0]);
        let Targets::Values(y) = d.labels() else {
            panic!("{:?}", d.labels());
        };
        assert_eq!((y.cols(), y.to_vec()), (1, vec![0.5, -1.5]));
    }

    /// The first line is a header only if every field is a name: a typo, a
    /// hex float or a byte-order mark never turns a data row into a silently
    /// dropped header (issue 11, item 10).
    #[test]
    fn only_a_line_of_names_is_a_header() {
        let e = parse_csv("1,2x,0\n3,4,1\n", LabelKind::Class).unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 2: \"2x\" is not a number");
        let e = parse_csv("0x1p3,2,0\n3,4,1\n", LabelKind::Class).unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 1: \"0x1p3\" is not a number");
        let e = parse_csv("-x,y,label\n3,4,1\n", LabelKind::Class).unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 1: \"-x\" is not a number");
        // A byte-order mark is not part of the first field.
        let d = parse_csv("\u{feff}1,2,0\n3,4,1\n", LabelKind::Class).unwrap();
        assert_eq!((d.len(), d.x_values()[0]), (2, 1.0));
        let d = parse_csv("\u{feff}x,y,label\n3,4,1\n", LabelKind::Class).unwrap();
        assert_eq!(d.len(), 1);
        // Only the first line can be a header.
        let e = parse_csv("1,2,0\nx,y,label\n", LabelKind::Class).unwrap_err();
        assert_eq!(e.to_string(), "line 2, column 1: \"x\" is not a number");
    }

    /// A class label sizes the output layer: one huge value must not
    /// (issue 11, item 3).
    #[test]
    fn class_labels_are_capped() {
        let top = format!("1,2,{}\n", MAX_CLASSES - 1);
        assert!(parse_csv(&top, LabelKind::Class).is_ok());
        for label in ["1048576", "1000000000", "18446744073709551615"] {
            let e = parse_csv(&format!("1,2,0\n1,2,{label}\n"), LabelKind::Class).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "line 2: label \"{label}\" is not a class index below 1048576 (MAX_CLASSES)"
                )
            );
        }
    }

    /// Binary input fails at its first NUL byte, without reading on
    /// (`/dev/zero` would never end).
    #[test]
    fn binary_files_fail_at_once() {
        let dir = std::env::temp_dir().join(format!("backprop-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bin.csv");
        std::fs::write(&path, b"1,2,0\n3,\x004,1\n").unwrap();
        let e = read_csv(&path, LabelKind::Class).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: not text (a NUL byte or invalid UTF-8)"
        );
        std::fs::write(&path, b"1,2,0\n\xff\n").unwrap();
        assert!(matches!(
            read_csv(&path, LabelKind::Class),
            Err(CsvError::NotText { line: 2 })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        if std::path::Path::new("/dev/zero").exists() {
            assert!(matches!(
                read_csv("/dev/zero", LabelKind::Class),
                Err(CsvError::NotText { line: 1 })
            ));
        }
    }
}
