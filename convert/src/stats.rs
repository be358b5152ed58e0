//! Error statistics of a quantized tensor against its original.

use serde::Serialize;

/// How far `q` is from `w`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorStats {
    /// `sum((q - w)^2) / sum(w^2)`.
    pub nmse: f64,
    /// `-10 log10(nmse)`.
    pub sqnr_db: f64,
    /// Largest absolute error of an element.
    pub max_abs_err: f64,
    /// `<q, w> / (|q| |w|)`.
    pub cosine: f64,
}

/// Statistics over two equally long slices (f64 sums). Zero originals give nmse 0 when `q` is
/// zero too, infinity otherwise.
pub fn error_stats(w: &[f32], q: &[f32]) -> ErrorStats {
    assert_eq!(w.len(), q.len(), "compared tensors differ in length");
    let (mut err, mut ww, mut qq, mut wq, mut max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in w.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        let d = b - a;
        err += d * d;
        ww += a * a;
        qq += b * b;
        wq += a * b;
        max = max.max(d.abs());
    }
    let nmse = if ww > 0.0 {
        err / ww
    } else if err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let cosine = if ww > 0.0 && qq > 0.0 {
        wq / (ww.sqrt() * qq.sqrt())
    } else {
        0.0
    };
    ErrorStats {
        nmse,
        sqnr_db: -10.0 * nmse.log10(),
        max_abs_err: max,
        cosine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_known_error() {
        let w = [3.0f32, 4.0];
        let q = [3.0f32, 3.0];
        let s = error_stats(&w, &q);
        assert!((s.nmse - 1.0 / 25.0).abs() < 1e-12);
        assert!((s.sqnr_db - 10.0 * 25f64.log10()).abs() < 1e-9);
        assert_eq!(s.max_abs_err, 1.0);
        assert!((s.cosine - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-12);
    }
}
