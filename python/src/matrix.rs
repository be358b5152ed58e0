//! `QuantizedMatrix`: a quantized tensor made by `quantize` (owned) or taken from a checkpoint
//! (memory-mapped, no copy), dequantized or multiplied through the kernels.

use crate::array::{to_numpy, to_numpy_as, Elem, Input};
use crate::err;
use numpy::ndarray::ArrayView2;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rayon::ThreadPool;
use std::sync::{Arc, Mutex};
use tquant_convert::{
    quantize_tensor, Checkpoint, ConvertError, ConvertOptions, Dtype, Layout, Overrides,
    QuantizedTensor, QuantizedView, Recipe,
};
use tquant_kernels::{Mode, QMatrix};

/// Where a matrix's bytes live.
#[derive(Debug)]
pub(crate) enum Storage {
    /// Quantized by `quantize`; owns its bytes.
    Owned(Box<QuantizedTensor>),
    /// A quantized tensor of a memory-mapped checkpoint, which it keeps open.
    Mapped {
        checkpoint: Arc<Checkpoint>,
        name: String,
    },
}

impl Storage {
    fn view(&self) -> Result<QuantizedView<'_>, ConvertError> {
        match self {
            Self::Owned(t) => Ok(t.view()),
            Self::Mapped { checkpoint, name } => checkpoint.quantized_parts(name),
        }
    }
}

/// A quantized matrix (or a 3-D tensor of expert matrices): packed 4-bit (or 3-, 2-bit) codes,
/// one scale per block of `block` elements along each row, and the codebook (`table`).
///
/// Made by `tquant.quantize` or taken from a checkpoint opened with `tquant.open` (then it reads
/// the checkpoint's memory map, copying nothing). `q @ x` and `tquant.matmul` multiply through
/// tquant's kernels on the packed codes; `dequantize()` gives the float32 values.
#[derive(Debug)]
#[pyclass(frozen, module = "tquant")]
pub struct QuantizedMatrix {
    storage: Arc<Storage>,
}

impl QuantizedMatrix {
    pub(crate) fn new(storage: Storage) -> PyResult<Self> {
        storage.view().map_err(err)?;
        Ok(Self {
            storage: Arc::new(storage),
        })
    }

    fn view(&self) -> QuantizedView<'_> {
        self.storage
            .view()
            .expect("checked when the matrix was made; the checkpoint is immutable")
    }

    /// `y = x W^T` for activation rows `x` (`[n, cols]` row-major), GIL released.
    fn product(
        &self,
        py: Python<'_>,
        x: &[f32],
        n: usize,
        fast: bool,
        threads: Option<usize>,
    ) -> PyResult<Vec<f32>> {
        let storage = self.storage.clone();
        py.detach(move || -> Result<Vec<f32>, String> {
            let view = storage.view().map_err(|e| e.to_string())?;
            if view.experts() > 1 {
                return Err(format!(
                    "tensor '{}' holds {} expert matrices of shape {:?}; multiply one expert's \
                     matrix (quantize it alone)",
                    view.name,
                    view.experts(),
                    &view.shape()[1..]
                ));
            }
            let mode = if fast { Mode::Fast } else { Mode::Exact };
            if view.info.is_q8_0() {
                let q = view.q8_matrix(0).map_err(|e| e.to_string())?;
                let mut y = vec![0.0f32; n * q.rows()];
                let run = |y: &mut [f32]| {
                    tquant_kernels::matmul_q8_0(&q, x, n, y, mode).map_err(|e| e.to_string())
                };
                in_pool(threads, || run(&mut y))?;
                return Ok(y);
            }
            let q = view.qmatrix(0).map_err(|e| e.to_string())?;
            let mut y = vec![0.0f32; n * q.rows()];
            multiply(&q, x, n, &mut y, mode, threads)?;
            Ok(y)
        })
        .map_err(err)
    }

    fn rows_cols(&self) -> (usize, usize) {
        let i = self.view().info;
        (i.rows(), i.cols())
    }
}

/// Most threads one product may start.
const MAX_THREADS: usize = 1024;
/// Pools kept for reuse, so a caller that varies the count does not accumulate threads.
const KEPT_POOLS: usize = 4;

fn pool(threads: usize) -> Result<Arc<ThreadPool>, String> {
    static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(t, _)| *t == threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("starting {threads} threads: {e}"))?;
    let p = Arc::new(p);
    if pools.len() == KEPT_POOLS {
        pools.remove(0);
    }
    pools.push((threads, p.clone()));
    Ok(p)
}

fn multiply(
    q: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
    threads: Option<usize>,
) -> Result<(), String> {
    in_pool(threads, || {
        tquant_kernels::matmul(q, x, n, y, mode).map_err(|e| e.to_string())
    })
}

/// Runs `f` on all cores, or on a pool of `threads`.
fn in_pool(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<(), String> + Send,
) -> Result<(), String> {
    match threads {
        None | Some(0) => f(),
        Some(t) if t > MAX_THREADS => Err(format!("{t} threads asked for; at most {MAX_THREADS}")),
        Some(t) => pool(t)?.install(f),
    }
}

#[pymethods]
impl QuantizedMatrix {
    /// The logical shape: `(rows, cols)`, or `(experts, rows, cols)`.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.view().shape())
    }

    /// The block scale rule the matrix was quantized with (`"absmax"` or `"search"`), if
    /// recorded.
    #[getter]
    fn scale_rule(&self) -> Option<&'static str> {
        self.view().info.scale_rule.map(|r| r.name())
    }

    /// The exact codebook name (`"sf4:nu=4.237"`, `"nf4"`); for an expert tensor, expert 0's
    /// (each expert's is in `formats`).
    #[getter]
    fn format(&self) -> String {
        self.view().format(0).to_string()
    }

    /// Every matrix's exact codebook name (one entry per expert).
    #[getter]
    fn formats(&self) -> Vec<String> {
        let v = self.view();
        (0..v.experts()).map(|e| v.format(e).to_string()).collect()
    }

    /// Elements per block along a row.
    #[getter]
    fn block(&self) -> usize {
        self.view().info.block
    }

    /// The stored scales' dtype: `"f32"`, `"f16"`, `"bf16"` or `"e8m0"`.
    #[getter]
    fn scale_dtype(&self) -> &'static str {
        self.view().info.scale_dtype.name()
    }

    /// The code layout: `"tquant"`, `"bnb"` (bitsandbytes) or `"mxfp4"`.
    #[getter]
    fn layout(&self) -> &'static str {
        self.view().info.layout.name()
    }

    /// Student Float's degrees of freedom per matrix (`None` for other formats).
    #[getter]
    fn nu(&self) -> Vec<Option<f64>> {
        self.view().info.matrices.iter().map(|m| m.nu).collect()
    }

    /// The packed codes as stored (uint8, a copy): `[rows, ceil(cols / 2)]` per matrix, element
    /// `2j` of a row in the low nibble of byte `j` (bitsandbytes' layout: flat, high nibble
    /// first; q8_0: one int8 code a byte, `[rows, cols]`, read them with `.view(np.int8)`).
    #[getter]
    fn codes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.view();
        let i = v.info;
        let mut shape = v.shape().to_vec();
        if i.layout == Layout::Bnb {
            shape = vec![v.codes.len()];
        } else if !i.is_q8_0() {
            let last = shape.len() - 1;
            shape[last] = i.cols().div_ceil(2);
        }
        to_numpy(py, v.codes.to_vec(), &shape)
    }

    /// The block scales as float32 (exact for every scale dtype; a copy): `[rows,
    /// ceil(cols / block)]` per matrix (bitsandbytes: one per block of the flat tensor).
    #[getter]
    fn scales(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.view();
        let i = v.info;
        let dtype = i.scale_dtype;
        let count = v.scales.len() / dtype.size();
        let values: Vec<f32> = (0..count).map(|k| dtype.read(v.scales, k)).collect();
        let shape = if i.layout == Layout::Bnb {
            vec![count]
        } else {
            let mut s = v.shape().to_vec();
            let last = s.len() - 1;
            s[last] = i.blocks_per_row();
            s
        };
        to_numpy(py, values, &shape)
    }

    /// The codebook in code order (float32): `[2^bits]`, or `[experts, 2^bits]` (q8_0, whose
    /// codes are the values: empty).
    #[getter]
    fn table(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.view();
        let ms = &v.info.matrices;
        let width = ms[0].codebook.len();
        let values: Vec<f32> = ms.iter().flat_map(|m| m.codebook.iter().copied()).collect();
        if v.shape().len() == 3 {
            to_numpy(py, values, &[ms.len(), width])
        } else {
            to_numpy(py, values, &[width])
        }
    }

    /// Bytes of the codes and scales (what the kernels read).
    #[getter]
    fn nbytes(&self) -> usize {
        let v = self.view();
        v.codes.len() + v.scales.len()
    }

    /// Storage cost per weight: (code bits x weights + scale bits) / weights.
    #[getter]
    fn bits_per_weight(&self) -> f64 {
        self.view().info.bits_per_weight()
    }

    /// The float32 values, `table[code] * scale` per element, in the logical shape.
    fn dequantize(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let storage = self.storage.clone();
        let values = py
            .detach(move || {
                let v = storage.view().map_err(|e| e.to_string())?;
                v.dequantize().map_err(|e| e.to_string())
            })
            .map_err(err)?;
        to_numpy(py, values, self.view().shape())
    }

    /// `q @ x` with NumPy's meaning (`W x`): a vector `x` `[cols]` gives `[rows]` (a GEMV), a
    /// matrix `x` `[cols, n]` gives `[rows, n]` (a GEMM; the kernels read x's columns as
    /// contiguous rows, so a C-ordered `x` is copied transposed and a Fortran-ordered one, such
    /// as `a.T`, is not). Exact arithmetic, all cores. Takes what `tquant.matmul` takes.
    fn __matmul__(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        // PyTorch, DLPack and buffer objects become arrays as for every other entry point.
        let (x, bf16, _back): (Bound<'_, PyAny>, bool, Bound<'_, PyAny>) = py
            .import("tquant")?
            .getattr("_as_array")?
            .call1((x, py.None(), "x"))?
            .extract()?;
        let x = Input::extract(&x, bf16, "x")?;
        let (rows, cols) = self.rows_cols();
        let shape = x.shape();
        match shape.as_slice() {
            [k] if *k == cols => {
                let v = x.view();
                let y = self.product(py, &v.to_f32(), 1, false, None)?;
                to_numpy(py, y, &[rows])
            }
            [k, n] if *k == cols => {
                let v = x.view();
                let xt: Vec<f32> = {
                    let a = v.to_f32();
                    let a = ArrayView2::from_shape((cols, *n), &a).map_err(err)?;
                    // Rows of x^T, i.e. x's columns, row-major.
                    a.t().iter().copied().collect()
                };
                let y = self.product(py, &xt, *n, false, None)?;
                // y^T without a copy: [n, rows] C order is [rows, n] Fortran order.
                let y = numpy::ndarray::Array::from_shape_vec((*n, rows), y)
                    .map_err(err)?
                    .reversed_axes();
                Ok(y.into_pyarray(py).into_any().unbind())
            }
            _ => Err(err(format!(
                "q @ x: q is [{rows}, {cols}], x has shape {shape:?}; x must be [{cols}] or \
                 [{cols}, n]"
            ))),
        }
    }

    fn __repr__(&self) -> String {
        let v = self.view();
        format!(
            "QuantizedMatrix(shape={:?}, format='{}', block={}, scale_dtype='{}', bits_per_weight={:.3})",
            v.shape(),
            v.format(0),
            v.info.block,
            v.info.scale_dtype.name(),
            v.info.bits_per_weight()
        )
    }
}

/// Options from a recipe as `tquant convert --format` takes it (`sf4_fit`, `sf4:nu=3.5`,
/// `nf4+search`, `auto[:LIST]`) and the settings that replace the recipe's.
fn options(
    format: &str,
    block: &str,
    scale_dtype: &str,
    scale_rule: Option<&str>,
    nu: Option<&str>,
) -> PyResult<ConvertOptions> {
    let overrides = Overrides {
        nu: nu.map(str::parse).transpose().map_err(err)?,
        block: Some(block.parse().map_err(err)?),
        scale_dtype: Some(scale_dtype.parse().map_err(err)?),
        scale_rule: scale_rule.map(str::parse).transpose().map_err(err)?,
    };
    let (recipe, builder) =
        Recipe::builder_with(Some(format), Layout::Tquant, &overrides).map_err(err)?;
    if recipe.gptq {
        return Err(err(format!(
            "recipe '{format}' needs calibration statistics; use tquant.convert with calibrate=..."
        )));
    }
    builder.build().map_err(err)
}

/// Quantizes `w` (GIL released) and returns the owned tensor.
fn quantize_input(
    py: Python<'_>,
    w: &Input<'_>,
    format: &str,
    block: &str,
    scale_dtype: &str,
    scale_rule: Option<&str>,
    nu: Option<&str>,
) -> PyResult<QuantizedTensor> {
    let opts = options(format, block, scale_dtype, scale_rule, nu)?;
    let shape = w.shape();
    let dtype = match w.elem() {
        Elem::F32 => Dtype::F32,
        Elem::F16 => Dtype::F16,
        Elem::Bf16 => Dtype::BF16,
    };
    let view = w.view();
    py.detach(|| {
        let values = view.to_f32();
        quantize_tensor("w", &values, &shape, dtype, &opts)
    })
    .map_err(err)
}

/// Quantizes the matrix `w` (2-D, or 3-D experts) to `format`; see `tquant.quantize`.
// One argument per keyword of the Python function.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (w, format, block, scale_dtype, scale_rule, nu, bf16))]
pub(crate) fn quantize(
    py: Python<'_>,
    w: &Bound<'_, PyAny>,
    format: &str,
    block: &str,
    scale_dtype: &str,
    scale_rule: Option<&str>,
    nu: Option<&str>,
    bf16: bool,
) -> PyResult<QuantizedMatrix> {
    let w = Input::extract(w, bf16, "w")?;
    let t = quantize_input(py, &w, format, block, scale_dtype, scale_rule, nu)?;
    QuantizedMatrix::new(Storage::Owned(Box::new(t)))
}

/// Quantizes and dequantizes `w`, returned in w's element type (bf16 as uint16 bits); see
/// `tquant.fake_quantize`.
// One argument per keyword of the Python function.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (w, format, block, scale_dtype, scale_rule, nu, bf16))]
pub(crate) fn fake_quantize(
    py: Python<'_>,
    w: &Bound<'_, PyAny>,
    format: &str,
    block: &str,
    scale_dtype: &str,
    scale_rule: Option<&str>,
    nu: Option<&str>,
    bf16: bool,
) -> PyResult<Py<PyAny>> {
    let w = Input::extract(w, bf16, "w")?;
    let t = quantize_input(py, &w, format, block, scale_dtype, scale_rule, nu)?;
    let values = py.detach(|| t.dequantize());
    to_numpy_as(py, values, &w.shape(), w.elem())
}

/// `y = x W^T` in the kernels' layout: `x` `[cols]` gives `[rows]`, `x` `[n, cols]` gives
/// `[n, rows]`; see `tquant.matmul`.
#[pyfunction]
#[pyo3(signature = (q, x, fast, threads, bf16))]
pub(crate) fn matmul(
    py: Python<'_>,
    q: &QuantizedMatrix,
    x: &Bound<'_, PyAny>,
    fast: bool,
    threads: Option<usize>,
    bf16: bool,
) -> PyResult<Py<PyAny>> {
    let x = Input::extract(x, bf16, "x")?;
    let (rows, cols) = q.rows_cols();
    let shape = x.shape();
    let n = match shape.as_slice() {
        [k] if *k == cols => None,
        [n, k] if *k == cols => Some(*n),
        _ => {
            return Err(err(format!(
                "matmul: q is [{rows}, {cols}], x has shape {shape:?}; x must be [{cols}] or \
                 [n, {cols}] (y = x q^T)"
            )))
        }
    };
    let v = x.view();
    let xs = v.to_f32();
    let y = q.product(py, &xs, n.unwrap_or(1), fast, threads)?;
    match n {
        None => to_numpy(py, y, &[rows]),
        Some(n) => to_numpy(py, y, &[n, rows]),
    }
}
