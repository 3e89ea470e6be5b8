//! Strided matrix views: [`MatRef`] (shared) and [`MatMut`] (exclusive).
//!
//! This is the one place where shapes and strides are checked. A view is a
//! `rows × cols` window onto a slice of `f32`, where element `(i, j)` lives at
//! `origin + i·row_stride + j·col_stride` (strides in elements, not bytes).
//!
//! * Row-major storage is `row_stride = cols, col_stride = 1`; column-major is
//!   `row_stride = 1, col_stride = rows`. A transpose ([`MatRef::t`]) swaps the
//!   strides and copies nothing.
//! * Strides may be negative: the view then walks the slice backwards and its
//!   origin is placed so that the lowest address it touches is the slice start.
//! * Every constructor checks that all `rows × cols` elements lie inside the
//!   slice; a [`MatMut`] also checks that no two elements share a memory slot,
//!   so writing through it can never race with itself.
//!
//! ```
//! use backprop::matrix::{MatMut, MatRef};
//! let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let a = MatRef::from_slice(&data, 2, 3); // [[1, 2, 3], [4, 5, 6]]
//! assert_eq!(a.get(1, 0), 4.0);
//! assert_eq!(a.t().get(0, 1), 4.0); // the transpose is 3 × 2
//!
//! let mut out = [0.0f32; 4];
//! let mut c = MatMut::from_slice_mut(&mut out, 2, 2);
//! c.set(1, 1, 9.0);
//! assert_eq!(out[3], 9.0);
//! ```

use std::fmt;
use std::marker::PhantomData;

/// Why a view could not be built, or why two views do not fit together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// The slice length does not match what the shape needs.
    LenMismatch {
        /// `rows × cols` of the requested view.
        expected: usize,
        /// Length of the slice given.
        got: usize,
    },
    /// Some element of the view would lie outside the slice.
    OutOfBounds {
        /// Requested number of rows.
        rows: usize,
        /// Requested number of columns.
        cols: usize,
        /// Requested row stride (elements).
        row_stride: isize,
        /// Requested column stride (elements).
        col_stride: isize,
        /// Number of slice elements the view would need.
        needed: usize,
        /// Length of the slice given.
        len: usize,
    },
    /// Two different elements of a mutable view would share one memory slot.
    Overlap {
        /// Requested number of rows.
        rows: usize,
        /// Requested number of columns.
        cols: usize,
        /// Requested row stride (elements).
        row_stride: isize,
        /// Requested column stride (elements).
        col_stride: isize,
    },
    /// The view's extent does not fit in `isize` (an address computation would overflow).
    TooLarge,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShapeError::LenMismatch { expected, got } => write!(
                f,
                "slice has {got} elements but the shape needs exactly {expected}"
            ),
            ShapeError::OutOfBounds {
                rows,
                cols,
                row_stride,
                col_stride,
                needed,
                len,
            } => write!(
                f,
                "a {rows}×{cols} view with strides ({row_stride}, {col_stride}) spans {needed} \
                 elements but the slice has only {len}"
            ),
            ShapeError::Overlap {
                rows,
                cols,
                row_stride,
                col_stride,
            } => write!(
                f,
                "a mutable {rows}×{cols} view with strides ({row_stride}, {col_stride}) would \
                 alias: two elements share one memory slot"
            ),
            ShapeError::TooLarge => write!(f, "the view's extent overflows isize"),
        }
    }
}

impl std::error::Error for ShapeError {}

/// Number of elements spanned by a `rows × cols` view with the given strides
/// (distance from its lowest to its highest element, plus one), and the offset of
/// element (0, 0) from the lowest element.
fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> Result<(usize, usize), ShapeError> {
    if rows == 0 || cols == 0 {
        return Ok((0, 0));
    }
    let r = isize::try_from(rows - 1).map_err(|_| ShapeError::TooLarge)?;
    let c = isize::try_from(cols - 1).map_err(|_| ShapeError::TooLarge)?;
    let dr = r.checked_mul(rs).ok_or(ShapeError::TooLarge)?;
    let dc = c.checked_mul(cs).ok_or(ShapeError::TooLarge)?;
    // Offsets of the four corners relative to (0, 0); the extremes give the span.
    let lo = dr
        .min(0)
        .checked_add(dc.min(0))
        .ok_or(ShapeError::TooLarge)?;
    let hi = dr
        .max(0)
        .checked_add(dc.max(0))
        .ok_or(ShapeError::TooLarge)?;
    let extent = hi
        .checked_sub(lo)
        .and_then(|e| e.checked_add(1))
        .ok_or(ShapeError::TooLarge)?;
    Ok((extent as usize, (-lo) as usize))
}

/// Checks that a `rows × cols` view with strides `(rs, cs)` maps distinct
/// elements to distinct slots. Sufficient test: with the dimensions sorted by
/// absolute stride, the larger stride must step past the whole extent of the
/// smaller dimension (dimensions of length 1 impose nothing).
fn check_no_overlap(rows: usize, cols: usize, rs: isize, cs: isize) -> Result<(), ShapeError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let err = ShapeError::Overlap {
        rows,
        cols,
        row_stride: rs,
        col_stride: cs,
    };
    let mut dims = [(rows, rs.unsigned_abs()), (cols, cs.unsigned_abs())];
    dims.sort_by_key(|&(_, s)| s);
    let mut reach = 1usize; // slots covered by the smaller dimensions so far
    for (len, stride) in dims.into_iter().filter(|&(len, _)| len > 1) {
        if stride < reach {
            return Err(err);
        }
        reach = stride
            .checked_mul(len - 1)
            .and_then(|x| x.checked_add(reach))
            .ok_or(ShapeError::TooLarge)?;
    }
    Ok(())
}

/// Shared logic of the two view types: validates and returns (origin, span).
fn validate(
    len: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
) -> Result<usize, ShapeError> {
    let (needed, origin) = span(rows, cols, rs, cs)?;
    if needed > len {
        return Err(ShapeError::OutOfBounds {
            rows,
            cols,
            row_stride: rs,
            col_stride: cs,
            needed,
            len,
        });
    }
    Ok(origin)
}

fn expect_len(len: usize, rows: usize, cols: usize) -> Result<(), ShapeError> {
    let expected = rows.checked_mul(cols).ok_or(ShapeError::TooLarge)?;
    if expected != len {
        return Err(ShapeError::LenMismatch { expected, got: len });
    }
    Ok(())
}

#[cold]
#[inline(never)]
#[track_caller]
fn fail(what: &str, e: ShapeError) -> ! {
    panic!("{what}: {e}")
}

#[cold]
#[inline(never)]
#[track_caller]
fn index_fail(i: usize, j: usize, rows: usize, cols: usize) -> ! {
    panic!("index ({i}, {j}) is out of bounds for a {rows}×{cols} matrix")
}

/// A shared, strided `rows × cols` view of `f32` data. Cheap to copy.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _life: PhantomData<&'a [f32]>,
}

// SAFETY: a MatRef is a shared borrow of f32 data (like &[f32]); f32 is Sync.
unsafe impl Send for MatRef<'_> {}
// SAFETY: as above; only reads go through a MatRef.
unsafe impl Sync for MatRef<'_> {}

impl<'a> MatRef<'a> {
    /// A row-major view of `data`, which must hold exactly `rows × cols` elements.
    ///
    /// # Panics
    /// If `data.len() != rows * cols`; the message gives both numbers.
    #[track_caller]
    pub fn from_slice(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::try_from_slice(data, rows, cols).unwrap_or_else(|e| fail("MatRef::from_slice", e))
    }

    /// Fallible [`MatRef::from_slice`].
    pub fn try_from_slice(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        expect_len(data.len(), rows, cols)?;
        Self::try_from_strided(data, rows, cols, cols as isize, 1)
    }

    /// A view with arbitrary element strides (see the module docs for negative
    /// strides). Zero strides are allowed for shared views (broadcasting).
    ///
    /// # Panics
    /// If any element lies outside `data`.
    #[track_caller]
    pub fn from_strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Self {
        Self::try_from_strided(data, rows, cols, row_stride, col_stride)
            .unwrap_or_else(|e| fail("MatRef::from_strided", e))
    }

    /// Fallible [`MatRef::from_strided`].
    pub fn try_from_strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Result<Self, ShapeError> {
        let origin = validate(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(MatRef {
            // wrapping_add: for an empty view origin is 0 and the pointer is never read.
            ptr: data.as_ptr().wrapping_add(origin),
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
            _life: PhantomData,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> isize {
        self.rs
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> isize {
        self.cs
    }
    /// Pointer to element (0, 0). Only meaningful for a non-empty view.
    pub fn as_ptr(&self) -> *const f32 {
        self.ptr
    }

    /// The transpose: a `cols × rows` view of the same data (strides swapped).
    pub fn t(self) -> MatRef<'a> {
        MatRef {
            ptr: self.ptr,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            _life: PhantomData,
        }
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `i ≥ rows` or `j ≥ cols`.
    #[track_caller]
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        if i >= self.rows || j >= self.cols {
            index_fail(i, j, self.rows, self.cols);
        }
        // SAFETY: (i, j) is in range and the constructor checked that every
        // in-range element lies inside the borrowed slice.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    /// The `rows × cols` sub-view whose (0, 0) is this view's `(row, col)`.
    ///
    /// # Panics
    /// If the block does not fit inside this view.
    #[track_caller]
    pub fn submatrix(self, row: usize, col: usize, rows: usize, cols: usize) -> MatRef<'a> {
        let (ptr, rows, cols) = sub(
            self.ptr as *mut f32,
            (self.rows, self.cols),
            (self.rs, self.cs),
            (row, col, rows, cols),
        );
        MatRef {
            ptr,
            rows,
            cols,
            rs: self.rs,
            cs: self.cs,
            _life: PhantomData,
        }
    }

    /// The elements as one slice, when the view is contiguous row-major
    /// (`col_stride == 1` and `row_stride == cols`, or a single row); `None`
    /// otherwise. An empty view gives an empty slice.
    ///
    /// ```
    /// use backprop::matrix::MatRef;
    /// let d = [1.0, 2.0, 3.0, 4.0];
    /// assert_eq!(MatRef::from_slice(&d, 2, 2).as_row_major_slice(), Some(&d[..]));
    /// assert_eq!(MatRef::from_slice(&d, 2, 2).t().as_row_major_slice(), None);
    /// ```
    pub fn as_row_major_slice(&self) -> Option<&'a [f32]> {
        let (r, c) = (self.rows, self.cols);
        if r == 0 || c == 0 {
            return Some(&[]);
        }
        if self.cs != 1 || (r > 1 && self.rs != c as isize) {
            return None;
        }
        // SAFETY: with these strides the view's r·c elements are exactly the
        // contiguous range starting at its origin, which the constructor
        // checked lies inside the slice borrowed for 'a.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, r * c) })
    }

    /// Copies the view into a new row-major `Vec` (`rows × cols` elements).
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for i in 0..self.rows {
            for j in 0..self.cols {
                v.push(self.get(i, j));
            }
        }
        v
    }
}

/// Bounds-checked sub-block pointer arithmetic shared by both view types.
#[track_caller]
fn sub(
    ptr: *mut f32,
    (r, c): (usize, usize),
    (rs, cs): (isize, isize),
    (row, col, rows, cols): (usize, usize, usize, usize),
) -> (*const f32, usize, usize) {
    let fits = row.checked_add(rows).is_some_and(|e| e <= r)
        && col.checked_add(cols).is_some_and(|e| e <= c);
    if !fits {
        panic!(
            "submatrix: block of {rows}×{cols} at ({row}, {col}) does not fit in a {r}×{c} matrix"
        );
    }
    if rows == 0 || cols == 0 {
        return (ptr, rows, cols);
    }
    // In range: (row, col) is an element of the parent view, so the offset stays
    // inside the parent's slice.
    (
        ptr.wrapping_offset(row as isize * rs + col as isize * cs),
        rows,
        cols,
    )
}

impl fmt::Debug for MatRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatRef({}×{}, strides ({}, {}))",
            self.rows, self.cols, self.rs, self.cs
        )
    }
}

/// An exclusive, strided `rows × cols` view of `f32` data. No two elements share
/// a memory slot (checked at construction), so writes never alias.
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _life: PhantomData<&'a mut [f32]>,
}

// SAFETY: a MatMut is an exclusive borrow of f32 data (like &mut [f32]).
unsafe impl Send for MatMut<'_> {}
// SAFETY: shared access to a MatMut only reads (through `rb`/`get`).
unsafe impl Sync for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// A row-major mutable view of `data`, which must hold exactly `rows × cols` elements.
    ///
    /// # Panics
    /// If `data.len() != rows * cols`.
    #[track_caller]
    pub fn from_slice_mut(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::try_from_slice_mut(data, rows, cols)
            .unwrap_or_else(|e| fail("MatMut::from_slice_mut", e))
    }

    /// Fallible [`MatMut::from_slice_mut`].
    pub fn try_from_slice_mut(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self, ShapeError> {
        expect_len(data.len(), rows, cols)?;
        Self::try_from_strided_mut(data, rows, cols, cols as isize, 1)
    }

    /// A mutable view with arbitrary (possibly negative) strides.
    ///
    /// # Panics
    /// If any element lies outside `data`, or two elements would share a slot.
    #[track_caller]
    pub fn from_strided_mut(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Self {
        Self::try_from_strided_mut(data, rows, cols, row_stride, col_stride)
            .unwrap_or_else(|e| fail("MatMut::from_strided_mut", e))
    }

    /// Fallible [`MatMut::from_strided_mut`].
    pub fn try_from_strided_mut(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Result<Self, ShapeError> {
        let origin = validate(data.len(), rows, cols, row_stride, col_stride)?;
        check_no_overlap(rows, cols, row_stride, col_stride)?;
        Ok(MatMut {
            ptr: data.as_mut_ptr().wrapping_add(origin),
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
            _life: PhantomData,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> isize {
        self.rs
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> isize {
        self.cs
    }
    /// Pointer to element (0, 0). Only meaningful for a non-empty view.
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }

    /// A shared view of the same elements, borrowed from this one.
    pub fn rb(&self) -> MatRef<'_> {
        MatRef {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _life: PhantomData,
        }
    }

    /// A shorter-lived mutable view of the same elements (a reborrow).
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _life: PhantomData,
        }
    }

    /// The transpose: a mutable `cols × rows` view of the same data.
    pub fn t(self) -> MatMut<'a> {
        MatMut {
            ptr: self.ptr,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            _life: PhantomData,
        }
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `i ≥ rows` or `j ≥ cols`.
    #[track_caller]
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.rb().get(i, j)
    }

    /// Writes `value` to element `(i, j)`.
    ///
    /// # Panics
    /// If `i ≥ rows` or `j ≥ cols`.
    #[track_caller]
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, value: f32) {
        if i >= self.rows || j >= self.cols {
            index_fail(i, j, self.rows, self.cols);
        }
        // SAFETY: in range, and the constructor checked that every in-range
        // element lies inside the exclusively borrowed slice.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) = value }
    }

    /// The mutable `rows × cols` sub-view whose (0, 0) is this view's `(row, col)`.
    ///
    /// # Panics
    /// If the block does not fit inside this view.
    #[track_caller]
    pub fn submatrix_mut(self, row: usize, col: usize, rows: usize, cols: usize) -> MatMut<'a> {
        let (ptr, rows, cols) = sub(
            self.ptr,
            (self.rows, self.cols),
            (self.rs, self.cs),
            (row, col, rows, cols),
        );
        MatMut {
            ptr: ptr as *mut f32,
            rows,
            cols,
            rs: self.rs,
            cs: self.cs,
            _life: PhantomData,
        }
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                self.set(i, j, value);
            }
        }
    }
}

impl fmt::Debug for MatMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatMut({}×{}, strides ({}, {}))",
            self.rows, self.cols, self.rs, self.cs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_strides_walk_backwards() {
        let d = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let a = MatRef::from_strided(&d, 2, 3, -3, -1);
        assert_eq!(a.get(0, 0), 5.0);
        assert_eq!(a.get(1, 2), 0.0);
        assert_eq!(a.to_vec(), vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn out_of_bounds_is_reported() {
        let d = [0.0; 5];
        let e = MatRef::try_from_strided(&d, 2, 3, 3, 1).unwrap_err();
        assert_eq!(
            e,
            ShapeError::OutOfBounds {
                rows: 2,
                cols: 3,
                row_stride: 3,
                col_stride: 1,
                needed: 6,
                len: 5
            }
        );
        assert!(e.to_string().contains("spans 6 elements"));
    }

    #[test]
    fn overlapping_mut_views_are_refused() {
        let mut d = [0.0; 16];
        assert!(matches!(
            MatMut::try_from_strided_mut(&mut d, 3, 3, 2, 1),
            Err(ShapeError::Overlap { .. })
        ));
        assert!(MatMut::try_from_strided_mut(&mut d, 3, 3, 3, 1).is_ok());
        assert!(MatMut::try_from_strided_mut(&mut d, 4, 4, 1, 4).is_ok());
        assert!(MatMut::try_from_strided_mut(&mut d, 2, 2, 0, 1).is_err());
        // A single row may have any row stride.
        assert!(MatMut::try_from_strided_mut(&mut d, 1, 4, 0, 1).is_ok());
        // Shared views may broadcast.
        assert!(MatRef::try_from_strided(&d, 4, 4, 0, 1).is_ok());
    }

    #[test]
    fn empty_views_need_no_data() {
        let d: [f32; 0] = [];
        let a = MatRef::from_strided(&d, 0, 7, 100, 1);
        assert_eq!((a.rows(), a.cols()), (0, 7));
    }

    #[test]
    #[should_panic(expected = "slice has 5 elements but the shape needs exactly 6")]
    fn from_slice_checks_len() {
        let d = [0.0; 5];
        let _ = MatRef::from_slice(&d, 2, 3);
    }

    #[test]
    fn submatrix_and_transpose() {
        let d: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let a = MatRef::from_slice(&d, 3, 4);
        let s = a.submatrix(1, 1, 2, 2);
        assert_eq!(s.to_vec(), vec![5.0, 6.0, 9.0, 10.0]);
        assert_eq!(s.t().to_vec(), vec![5.0, 9.0, 6.0, 10.0]);
    }
}
