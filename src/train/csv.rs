//! CSV datasets: one sample per line, the features then the label, comma
//! separated. Blank lines and lines starting with `#` are skipped; a first
//! line with a non-numeric field is taken as a header. Errors name the line
//! (1-based) and the column.

use std::fmt;
use std::path::Path;

use crate::train::{Dataset, Labels};

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

/// Reads a CSV file (see the module docs).
///
/// # Errors
/// [`CsvError`], naming the line and column.
pub fn read_csv(path: impl AsRef<Path>, kind: LabelKind) -> Result<Dataset, CsvError> {
    let text = std::fs::read_to_string(path).map_err(CsvError::Io)?;
    parse_csv(&text, kind)
}

/// Parses CSV text (see the module docs).
///
/// # Errors
/// [`CsvError`], naming the line and column.
///
/// ```
/// use backprop::train::csv::{parse_csv, LabelKind};
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
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split(',').map(str::trim).collect();
        let numeric = fields.iter().all(|f| f.parse::<f64>().is_ok());
        if width.is_none() && !numeric && fields.len() >= 2 {
            // A header line (the first line with a non-numeric field).
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
            LabelKind::Class => {
                classes.push(label.parse::<usize>().map_err(|_| bad("a class index"))?)
            }
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
        LabelKind::Class => Labels::Classes(classes),
        LabelKind::Sign => Labels::Signs(values),
        LabelKind::Value => Labels::Values {
            data: values,
            width: 1,
        },
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
        assert_eq!(d.x_data(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            d.labels(),
            &Labels::Values {
                data: vec![0.5, -1.5],
                width: 1
            }
        );
    }
}
