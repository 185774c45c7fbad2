//! The dense layers' inner loops: a block of rows by a block of columns,
//! and a block of rows by one column. Each comes twice: in plain Rust, which
//! runs natively (the tests) and is the reference, and with wasm's 128-bit
//! SIMD intrinsics, which the engine runs.

use super::{Activation, COLS, ROWS};

/// The products of [`ROWS`] rows with one block of weights, plus the bias,
/// and `Relu` if the layer has it, in plain Rust: what runs natively (the
/// tests), and the reference for the wasm version below.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(super) fn block_product(
    rows: [&[f32]; ROWS],
    weights: &[[f32; COLS]],
    bias: &[f32; COLS],
    activation: Activation,
) -> [[f32; COLS]; ROWS] {
    let mut sums = [*bias; ROWS];
    for (row_sums, row) in sums.iter_mut().zip(rows) {
        for (value, w) in row.iter().zip(weights) {
            for (sum, w) in row_sums.iter_mut().zip(w) {
                *sum += value * w;
            }
        }
    }
    sums.iter_mut()
        .flatten()
        .for_each(|x| *x = activation.in_register(*x));
    sums
}

/// The same products with the sums in eight 128-bit registers. Written
/// with the intrinsics because the compiler does not vectorise the plain
/// loop across rows and columns at once; it is the same arithmetic, term by
/// term, as the plain version (a multiply, then an add, in the order of
/// `k`). Each row's value is splatted from memory, so the rows need no
/// rearranging first; `Relu` is `f32x4.pmax` with zero, which keeps NaN
/// and -0 as the comparison does.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
#[allow(unsafe_code)] // See the SAFETY comments: whole `v128`s inside arrays of `f32`.
pub(super) fn block_product(
    rows: [&[f32]; ROWS],
    weights: &[[f32; COLS]],
    bias: &[f32; COLS],
    activation: Activation,
) -> [[f32; COLS]; ROWS] {
    use core::arch::wasm32::{
        f32x4_add, f32x4_mul, f32x4_pmax, f32x4_splat, v128, v128_load, v128_store,
    };
    // SAFETY: `bias` is eight `f32`s, two whole `v128`s, and wasm's
    // `v128.load` takes any alignment.
    let (low, high) = unsafe {
        (
            v128_load(bias.as_ptr().cast::<v128>()),
            v128_load(bias.as_ptr().add(4).cast::<v128>()),
        )
    };
    let mut sums = [low, high, low, high, low, high, low, high];
    let [r0, r1, r2, r3] = rows;
    let values = r0.iter().zip(r1).zip(r2).zip(r3);
    for ((((&a, &b), &c), &d), w) in values.zip(weights) {
        // SAFETY: `w` is eight `f32`s, two whole `v128`s; wasm's
        // `v128.load` takes any alignment.
        let (low, high) = unsafe {
            (
                v128_load(w.as_ptr().cast::<v128>()),
                v128_load(w.as_ptr().add(4).cast::<v128>()),
            )
        };
        for (r, value) in [a, b, c, d].into_iter().enumerate() {
            let value = f32x4_splat(value);
            sums[2 * r] = f32x4_add(sums[2 * r], f32x4_mul(value, low));
            sums[2 * r + 1] = f32x4_add(sums[2 * r + 1], f32x4_mul(value, high));
        }
    }
    if activation == Activation::Relu {
        let zero = f32x4_splat(0.0);
        sums = sums.map(|sum| f32x4_pmax(sum, zero));
    }
    let mut out = [[0.0f32; COLS]; ROWS];
    for (r, row_out) in out.iter_mut().enumerate() {
        // SAFETY: `row_out` is eight `f32`s, two whole `v128`s, and wasm's
        // `v128.store` takes any alignment.
        unsafe {
            v128_store(row_out.as_mut_ptr().cast::<v128>(), sums[2 * r]);
            v128_store(row_out.as_mut_ptr().add(4).cast::<v128>(), sums[2 * r + 1]);
        }
    }
    out
}

/// The dot products of [`ROWS`] rows with `column`, plus `bias`, and
/// `Relu` if the layer has it, in plain Rust: the reference for the wasm
/// version below.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(super) fn dot_products(
    rows: [&[f32]; ROWS],
    column: &[f32],
    bias: f32,
    activation: Activation,
) -> [f32; ROWS] {
    rows.map(|row| {
        let sum = bias + row.iter().zip(column).map(|(x, w)| x * w).sum::<f32>();
        activation.in_register(sum)
    })
}

/// The same dot products four inputs at a time: a 128-bit sum per row,
/// added across its lanes at the end, then the inputs past the last four
/// one by one. The order of the terms differs from the plain version's,
/// so the last bits may too.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
#[allow(unsafe_code)] // See the SAFETY comments: whole `v128`s inside slices of `f32`.
pub(super) fn dot_products(
    rows: [&[f32]; ROWS],
    column: &[f32],
    bias: f32,
    activation: Activation,
) -> [f32; ROWS] {
    use core::arch::wasm32::{
        f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, v128, v128_load,
    };
    let whole = column.len() / 4 * 4;
    let mut sums = [f32x4_splat(0.0); ROWS];
    for k in (0..whole).step_by(4) {
        // SAFETY: `k + 4 <= whole <= column.len()`, and every row is
        // `column.len()` long (the layer's inputs); wasm's `v128.load`
        // takes any alignment.
        unsafe {
            let w = v128_load(column.as_ptr().add(k).cast::<v128>());
            for (sum, row) in sums.iter_mut().zip(rows) {
                let x = v128_load(row.as_ptr().add(k).cast::<v128>());
                *sum = f32x4_add(*sum, f32x4_mul(x, w));
            }
        }
    }
    let mut out = [0.0; ROWS];
    for ((out, sum), row) in out.iter_mut().zip(sums).zip(rows) {
        let lanes = (f32x4_extract_lane::<0>(sum) + f32x4_extract_lane::<1>(sum))
            + (f32x4_extract_lane::<2>(sum) + f32x4_extract_lane::<3>(sum));
        let tail: f32 = row[whole..]
            .iter()
            .zip(&column[whole..])
            .map(|(x, w)| x * w)
            .sum();
        *out = activation.in_register(bias + lanes + tail);
    }
    out
}
