//! Fast paths for burn's host backend, [`Flex`]: models stay generic over the backend, and these
//! functions check at run time (`TypeId`) whether the tensors live on Flex; if they do, the work runs
//! on the tensor's own buffer, otherwise the backend's op runs.
//!
//! - [`gelu`]: exact (erf) GELU, vectorized and parallel. Flex 0.21 computes it one element at a time
//!   with libm's `erff` on one thread, which took about a tenth of a ViT's f32 inference time.
//! - [`conv2d`]: f32 convolution as one im2col (in the `[cin·kh·kw, pixels]` layout, so that the
//!   PyTorch-layout weight is the GEMM's left operand as it is) and one parallel GEMM per group of
//!   images. Flex 0.21 re-lays out the weight and the input on one thread on every call and runs
//!   512-pixel tiles in parallel, which leaves a core idle on the small feature maps of a ResNet's
//!   later stages.
//! - [`max_pool2d`]: f32 max pooling over each plane in parallel. Flex 0.21 runs it as a 3-D pooling
//!   that also computes the argmax indices, a fifth of ResNet-18's batch-16 time.
//! - [`attention_packed`]: float multi-head self-attention read straight from the packed `qkv`
//!   projection (two GEMMs per head and block of query rows, a vectorized softmax) and written
//!   straight in the `[batch, tokens, heads·dim]` layout the output projection reads: none of the
//!   per-head copies that Flex makes to reshape strided views.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//!
//! let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.0, 2.0], &Default::default());
//! let y = vitq_core::host::gelu(x.clone());
//! let reference = burn::tensor::activation::gelu(x);
//! y.into_data().assert_approx_eq::<f32>(&reference.into_data(), Default::default());
//! ```

use std::any::{Any, TypeId};

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Whether `B` is the host backend ([`Flex`]), where host kernels read tensors without copies.
pub fn is_host<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// The Flex tensor behind `x`, or `x` back when `B` is not Flex.
fn into_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if !is_host::<B>() {
        return Err(x);
    }
    let prim: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    // `B` is Flex, so its float primitive is a FlexTensor: the downcast cannot fail.
    match prim.downcast::<FlexTensor>() {
        Ok(t) => Ok(*t),
        Err(_) => unreachable!("Flex's float primitive is FlexTensor"),
    }
}

fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let prim: Box<dyn Any> = Box::new(t);
    match prim.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("only called when B is Flex"),
    }
}

/// Applies `f` to every element of an f32 Flex tensor: in place when the tensor owns its contiguous
/// buffer, into a new buffer otherwise. Other dtypes are `Err` (left to the backend).
fn map_f32(mut t: FlexTensor, f: fn(&mut [f32])) -> Result<FlexTensor, FlexTensor> {
    const CHUNK: usize = 1 << 14;
    if t.dtype() != DType::F32 {
        return Err(t);
    }
    let n = t.layout().num_elements();
    let whole = t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == 4 * n;
    if whole && let Some(buf) = t.try_storage_mut::<f32>() {
        buf.par_chunks_mut(CHUNK).for_each(f);
        return Ok(t);
    }
    let shape = t.layout().shape().clone();
    let contiguous = t.to_contiguous();
    let mut v = match contiguous.as_slice::<f32>() {
        Some(s) => s.to_vec(),
        None => return Err(t),
    };
    v.par_chunks_mut(CHUNK).for_each(f);
    Ok(FlexTensor::from_data(TensorData::new(v, shape)))
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (PyTorch's `nn.GELU()`): on Flex with [`erf`] on the tensor's
/// buffer (AVX-512 / AVX2 when the CPU has them, detected at run time), elsewhere burn's `gelu`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match into_flex(x).map(|t| map_f32(t, gelu_slice)) {
        Ok(Ok(t)) => from_flex(t),
        Ok(Err(t)) => burn::tensor::activation::gelu(from_flex(t)),
        Err(x) => burn::tensor::activation::gelu(x),
    }
}

/// 2-D convolution, `conv2d(x, w, b)` with PyTorch's semantics: input `[n, cin, h, w]`, weight
/// `[cout, cin, kh, kw]`, output `[n, cout, oh, ow]`. On Flex (f32, one group) it runs [`conv2d_f32`];
/// elsewhere, and for grouped convolutions, burn's `conv2d`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    let fallback = |x, weight, bias| burn::tensor::module::conv2d(x, weight, bias, options.clone());
    if !is_host::<B>() || options.groups != 1 {
        return fallback(x, weight, bias);
    }
    let bias_host = match &bias {
        None => Some(None),
        Some(b) => contiguous_f32(b).map(Some),
    };
    let (Some(xt), Some(wt), Some(bt)) = (contiguous_f32(&x), contiguous_f32(&weight), bias_host)
    else {
        return fallback(x, weight, bias);
    };
    let dims = |t: &FlexTensor| -> [usize; 4] {
        let s = t.layout().shape();
        [s[0], s[1], s[2], s[3]]
    };
    let shape = ConvShape {
        input: dims(&xt),
        weight: dims(&wt),
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    };
    let slices = (xt.as_slice::<f32>(), wt.as_slice::<f32>());
    let (Some(xs), Some(ws)) = slices else {
        return fallback(x, weight, bias);
    };
    let bs = bt.as_ref().and_then(|b| b.as_slice::<f32>());
    match conv2d_f32(xs, ws, bs, &shape) {
        Some((y, [oh, ow])) => from_flex(FlexTensor::from_data(TensorData::new(
            y,
            [shape.input[0], shape.weight[0], oh, ow],
        ))),
        None => fallback(x, weight, bias),
    }
}

/// The f32 Flex tensor behind `t`, made contiguous (a cheap clone when it already is), or `None` when
/// `B` is not Flex or the dtype is not f32.
fn contiguous_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
    let flex = into_flex(t.clone()).ok()?;
    (flex.dtype() == DType::F32).then(|| flex.to_contiguous())
}

/// `f` on the values of `x` (row-major f32) and its shape, after the checks of
/// [`tensor_to_vec`](crate::uniform::tensor_to_vec) (not empty, no NaN / Inf): borrowed from the
/// tensor's own buffer on Flex, copied out of the backend elsewhere (and for other dtypes).
pub fn with_values<B: Backend, const D: usize, R>(
    x: &Tensor<B, D>,
    f: impl FnOnce(&[f32], &[usize]) -> crate::Result<R>,
) -> crate::Result<R> {
    if let Some(t) = contiguous_f32(x)
        && let Some(values) = t.as_slice::<f32>()
    {
        let shape = x.dims().to_vec();
        crate::uniform::check_values(values, &shape)?;
        return f(values, &shape);
    }
    let (values, shape) = crate::uniform::tensor_to_vec(x)?;
    f(&values, &shape)
}

/// The shapes of a one-group 2-D convolution (see [`conv2d_f32`]).
#[derive(Clone, Debug)]
pub struct ConvShape {
    /// `[n, cin, h, w]`.
    pub input: [usize; 4],
    /// `[cout, cin, kh, kw]`.
    pub weight: [usize; 4],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`.
    pub padding: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// `[oh, ow]`, or `None` when the shapes do not fit (input channels differ, empty output,
    /// zero stride).
    pub fn output(&self) -> Option<[usize; 2]> {
        let [_, cin, h, w] = self.input;
        let [_, wcin, kh, kw] = self.weight;
        let side = |len: usize, k: usize, s: usize, p: usize, d: usize| {
            let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            let padded = len.checked_add(2 * p)?;
            (s > 0 && padded >= span).then(|| (padded - span) / s + 1)
        };
        if cin != wcin {
            return None;
        }
        let oh = side(h, kh, self.stride[0], self.padding[0], self.dilation[0])?;
        let ow = side(w, kw, self.stride[1], self.padding[1], self.dilation[1])?;
        Some([oh, ow])
    }
}

/// f32 convolution on host slices (row-major NCHW input, PyTorch-layout weight, optional bias):
/// for each group of images, im2col into `[cin·kh·kw, images·oh·ow]` (rows filled in parallel) and
/// one GEMM with the weight `[cout, cin·kh·kw]` on all threads; 1×1 stride-1 unpadded convolutions of
/// one image skip the im2col. Returns the NCHW output and `[oh, ow]`, or `None` when the slices do
/// not match `shape`.
pub fn conv2d_f32(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
) -> Option<(Vec<f32>, [usize; 2])> {
    /// At most this many f32 in one im2col buffer (32 MiB), unless a single image needs more.
    const COLS_BUDGET: usize = 8 << 20;
    let [oh, ow] = shape.output()?;
    let [n, cin, h, w] = shape.input;
    let [cout, _, kh, kw] = shape.weight;
    let k = cin * kh * kw;
    let pixels = oh * ow;
    if x.len() != n * cin * h * w
        || weight.len() != cout * k
        || bias.is_some_and(|b| b.len() != cout)
    {
        return None;
    }
    let mut y = vec![0f32; n * cout * pixels];
    if y.is_empty() || k == 0 {
        fill_bias(&mut y, bias, pixels);
        return Some((y, [oh, ow]));
    }
    let direct = kh == 1 && kw == 1 && shape.stride == [1, 1] && shape.padding == [0, 0];
    let per_group = (COLS_BUDGET / (k * pixels)).clamp(1, n);
    let mut cols = Vec::new();
    let mut tmp = Vec::new();
    for first in (0..n).step_by(per_group) {
        let images = per_group.min(n - first);
        let span = images * pixels;
        let input = &x[first * cin * h * w..(first + images) * cin * h * w];
        let rhs: &[f32] = if direct && images == 1 {
            input
        } else {
            let phased;
            let rows = if shape.stride[1] > 1 {
                phased = split_phases(input, w, shape.stride[1]);
                &phased
            } else {
                input
            };
            cols.resize(k * span, 0.0);
            cols.par_chunks_mut(span)
                .enumerate()
                .for_each(|(row, dst)| im2col_row(dst, rows, row, shape, [oh, ow]));
            &cols
        };
        let out = &mut y[first * cout * pixels..(first + images) * cout * pixels];
        // One image: the GEMM's [cout, pixels] result is already NCHW. More: it is [cout, images,
        // pixels] and is permuted afterwards.
        let dst: &mut [f32] = if images == 1 {
            out
        } else {
            tmp.resize(cout * span, 0.0);
            &mut tmp
        };
        // SAFETY: dst holds cout × span f32, weight cout × k, rhs k × span (all checked or sized
        // above), each row-major with the strides given; dst aliases neither operand.
        unsafe {
            gemm::gemm(
                cout,
                span,
                k,
                dst.as_mut_ptr(),
                1,
                span as isize,
                false,
                weight.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                span as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        if images > 1 {
            out.par_chunks_mut(pixels)
                .enumerate()
                .for_each(|(row, dst)| {
                    let (image, c) = (row / cout, row % cout);
                    dst.copy_from_slice(&tmp[c * span + image * pixels..][..pixels]);
                });
        }
    }
    fill_bias(&mut y, bias, pixels);
    Some((y, [oh, ow]))
}

/// Adds `bias[c]` to every pixel of channel `c` of an NCHW buffer.
fn fill_bias(y: &mut [f32], bias: Option<&[f32]>, pixels: usize) {
    if let Some(b) = bias {
        y.par_chunks_mut(pixels.max(1))
            .enumerate()
            .for_each(|(row, plane)| {
                let v = b[row % b.len()];
                plane.iter_mut().for_each(|p| *p += v);
            });
    }
}

/// The input rows of a group of images split by column phase for a horizontal stride `s > 1`:
/// input row `r` (over images, channels and rows) becomes `s` rows of `⌈w / s⌉` values, phase `p`
/// holding columns `p, p + s, …`, so that each im2col row is contiguous copies (see [`im2col_row`]).
fn split_phases(input: &[f32], w: usize, s: usize) -> Vec<f32> {
    let len = w.div_ceil(s);
    let mut out = vec![0f32; input.len() / w.max(1) * s * len];
    out.par_chunks_mut(s * len)
        .zip(input.par_chunks(w.max(1)))
        .for_each(|(dst, row)| {
            for (phase, part) in dst.chunks_mut(len).enumerate() {
                for (d, v) in part.iter_mut().zip(row.iter().skip(phase).step_by(s)) {
                    *d = *v;
                }
            }
        });
    out
}

/// Row `row` = (channel, ki, kj) of the im2col matrix for a group of images: for each image and
/// output pixel, the input value the kernel tap `(ki, kj)` reads, or 0 in the padding. `rows` is the
/// input with each row split into its `stride[1]` column phases ([`split_phases`]; the input itself
/// for stride 1), so that every output row is one contiguous copy between zeros.
fn im2col_row(dst: &mut [f32], rows: &[f32], row: usize, s: &ConvShape, [oh, ow]: [usize; 2]) {
    let [_, cin, h, w] = s.input;
    let [_, _, kh, kw] = s.weight;
    let stride = s.stride[1] as isize;
    let len = w.div_ceil(s.stride[1]);
    let (c, ki, kj) = (row / (kh * kw), row / kw % kh, row % kw);
    // Input column ox·stride + x0 = (ox + shift)·stride + phase: entry ox + shift of phase `phase`.
    let x0 = (kj * s.dilation[1]) as isize - s.padding[1] as isize;
    let phase = x0.rem_euclid(stride);
    let shift = (x0 - phase) / stride;
    let valid = (w as isize - phase + stride - 1) / stride;
    let lo = (-shift).clamp(0, ow as isize) as usize;
    let hi = (valid - shift).clamp(lo as isize, ow as isize) as usize;
    let plane = h * s.stride[1] * len;
    for (image, out) in dst.chunks_mut(oh * ow).enumerate() {
        let src = &rows[(image * cin + c) * plane..][..plane];
        for (oy, out_row) in out.chunks_mut(ow).enumerate() {
            let iy = (oy * s.stride[0] + ki * s.dilation[0]).wrapping_sub(s.padding[0]);
            if iy >= h {
                out_row.fill(0.0);
                continue;
            }
            let line = &src[(iy * s.stride[1] + phase as usize) * len..][..len];
            out_row[..lo].fill(0.0);
            out_row[hi..].fill(0.0);
            out_row[lo..hi].copy_from_slice(&line[(lo as isize + shift) as usize..][..hi - lo]);
        }
    }
}

/// 2-D max pooling with PyTorch's semantics (padding never wins, `ceil_mode = false`): input
/// `[n, c, h, w]`, window `kernel`, `stride`, `padding`, `dilation`. On Flex (f32) it runs
/// [`max_pool2d_f32`]; elsewhere, and where the window does not fit, burn's `max_pool2d`.
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let shape = ConvShape {
        input: [n, c, h, w],
        weight: [c, c, kernel[0], kernel[1]],
        stride,
        padding,
        dilation,
    };
    let pooled = contiguous_f32(&x).and_then(|t| {
        let [oh, ow] = shape.output()?;
        let y = max_pool2d_f32(t.as_slice::<f32>()?, &shape)?;
        Some(from_flex(FlexTensor::from_data(TensorData::new(
            y,
            [n, c, oh, ow],
        ))))
    });
    pooled.unwrap_or_else(|| {
        burn::tensor::module::max_pool2d(x, kernel, stride, padding, dilation, false)
    })
}

/// [`max_pool2d`] on a row-major NCHW host slice; `shape.weight` gives the window as `[_, _, kh, kw]`
/// (its channel entries are not read). `None` when the slice does not match or the window does not
/// fit, or when a padding is at least the window (PyTorch refuses those: a window could be all
/// padding).
pub fn max_pool2d_f32(x: &[f32], shape: &ConvShape) -> Option<Vec<f32>> {
    let [n, c, h, w] = shape.input;
    let [_, _, kh, kw] = shape.weight;
    let [oh, ow] = ConvShape {
        weight: [c, c, kh, kw],
        ..shape.clone()
    }
    .output()?;
    if x.len() != n * c * h * w || 2 * shape.padding[0] > kh || 2 * shape.padding[1] > kw {
        return None;
    }
    let [sy, sx] = shape.stride;
    let [dy, dx] = shape.dilation;
    let [py, px] = shape.padding.map(|p| p as isize);
    let mut y = vec![f32::NEG_INFINITY; n * c * oh * ow];
    y.par_chunks_mut((oh * ow).max(1))
        .zip(x.par_chunks(h * w))
        .for_each(|(out, plane)| {
            for (oy, out_row) in out.chunks_mut(ow).enumerate() {
                for ky in 0..kh {
                    let iy = (oy * sy + ky * dy) as isize - py;
                    if !(0..h as isize).contains(&iy) {
                        continue;
                    }
                    let line = &plane[iy as usize * w..][..w];
                    for kx in 0..kw {
                        let x0 = (kx * dx) as isize - px;
                        for (ox, v) in out_row.iter_mut().enumerate() {
                            let ix = (ox * sx) as isize + x0;
                            if (0..w as isize).contains(&ix) {
                                *v = v.max(line[ix as usize]);
                            }
                        }
                    }
                }
            }
        });
    Some(y)
}

/// Multi-head self-attention, `softmax(q·kᵀ·scale)·v` per head, from timm's packed projection
/// `qkv = [batch, tokens, 3·c]` (q, k and v are consecutive blocks of `c` channels, each `heads`
/// heads of `c / heads`), returned as `[batch, tokens, c]` with the heads concatenated (what
/// `reshape(b, n, 3, h, d)`, the attention and `transpose(1, 2).reshape(b, n, c)` give in timm).
///
/// On Flex with f32 it runs [`attention_packed_f32`] on the tensor's buffer; `None` otherwise (other
/// backends or dtypes, or a channel count that `3·heads` does not divide), and the caller runs its
/// own path.
pub fn attention_packed<B: Backend>(
    qkv: &Tensor<B, 3>,
    heads: usize,
    scale: f32,
) -> Option<Tensor<B, 3>> {
    let t = contiguous_f32(qkv)?;
    let [b, n, c3] = qkv.dims();
    let y = attention_packed_f32(t.as_slice::<f32>()?, [b, n, c3], heads, scale)?;
    Some(from_flex(FlexTensor::from_data(TensorData::new(
        y,
        [b, n, c3 / 3],
    ))))
}

/// [`attention_packed`] on a row-major host slice of shape `[b, n, 3·c]`: for each image, head and
/// block of 64 query rows (in parallel), `S = scale·q·kᵀ` by GEMM on q and k in place, a softmax of
/// each row of `S` (max subtracted, [`exp`] vectorized), and `S·v` by GEMM written into the output's
/// columns of that head. `None` when `qkv` does not have `b·n·3·c` elements or `3·heads` does not
/// divide the channels.
pub fn attention_packed_f32(
    qkv: &[f32],
    [b, n, c3]: [usize; 3],
    heads: usize,
    scale: f32,
) -> Option<Vec<f32>> {
    const ROWS: usize = 64;
    if heads == 0 || c3 % (3 * heads) != 0 || qkv.len() != b * n * c3 {
        return None;
    }
    let c = c3 / 3;
    let d = c / heads;
    let mut out = vec![0f32; b * n * c];
    let blocks = n.div_ceil(ROWS);
    let dst = SharedOut(out.as_mut_ptr());
    (0..b * heads * blocks).into_par_iter().for_each(|task| {
        let (image, head, block) = (
            task / (heads * blocks),
            task / blocks % heads,
            task % blocks,
        );
        let first = block * ROWS;
        let rows = ROWS.min(n - first);
        let base = image * n * c3 + head * d;
        let (q, k, v) = (
            &qkv[base + first * c3..],
            &qkv[base + c..],
            &qkv[base + 2 * c..],
        );
        let mut scores = vec![0f32; rows * n];
        // SAFETY: q holds `rows` rows of `d` at stride c3, k and v `n` such rows (base + 2c + d ≤
        // c3 within each row of the image), scores rows × n; the strides below say exactly that.
        unsafe {
            gemm::gemm(
                rows,
                n,
                d,
                scores.as_mut_ptr(),
                1,
                n as isize,
                false,
                q.as_ptr(),
                1,
                c3 as isize,
                k.as_ptr(),
                c3 as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        scores.chunks_mut(n.max(1)).for_each(softmax_row);
        // SAFETY: this task writes rows first..first+rows, columns head·d..head·d+d of image
        // `image` of the [b, n, c] output, which no other task writes; scores is rows × n and v is
        // n rows of d at stride c3.
        unsafe {
            gemm::gemm(
                rows,
                d,
                n,
                dst.at(image * n * c + first * c + head * d),
                1,
                c as isize,
                false,
                scores.as_ptr(),
                1,
                n as isize,
                v.as_ptr(),
                1,
                c3 as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    Some(out)
}

/// The output buffer of [`attention_packed_f32`], written by parallel tasks at disjoint positions.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the tasks that share it write disjoint elements (see attention_packed_f32).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `row ← softmax(row)`, numerically safe (the row's max subtracted first).
pub fn softmax_row(row: &mut [f32]) {
    with_simd(
        #[inline(always)]
        || {
            let max = lanes(row, f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = exp(*v - max));
            let inv = 1.0 / lanes(row, 0.0, |a, b| a + b);
            row.iter_mut().for_each(|v| *v *= inv);
        },
    )
}

/// `xs` reduced with `f` over 16 independent lanes, then across them: a reduction loop the compiler
/// vectorizes (a single running f32 accumulator is a serial dependency it must keep in order).
#[inline(always)]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = f(*a, v);
        }
    }
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// `eˣ` for f32: `x = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, Cephes' degree-7 polynomial for `eʳ`, and
/// `2ᵏ` built in the exponent bits. Relative error about 2e-7 against libm's `expf` (see the tests);
/// `x` is clamped to `[-87, 88]` (results below `e⁻⁸⁷ ≈ 1.6e-38` come out as that value, not as
/// subnormals or 0). Branch-free, so loops of it vectorize.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
    let x = x.clamp(-87.0, 88.0);
    let k = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = P.iter().skip(1).fold(P[0], |p, &c| p * r + c);
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((k as i32 + 127) << 23) as u32)
}

/// `erf(x)` for f32: a rational approximation (odd degree-13 numerator, even degree-8 denominator in
/// `x`, the form used by Eigen and XLA) on `x` clamped to `[-4, 4]`, where `erf` already rounds to ±1
/// in f32. Absolute error about 1e-7 against libm's `erff` (see the tests). Branch-free, so loops of
/// it vectorize.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = A.iter().skip(1).fold(A[0], |p, &a| p * x2 + a) * x;
    let q = B.iter().skip(1).fold(B[0], |q, &b| q * x2 + b);
    p / q
}

#[inline(always)]
fn gelu_portable(xs: &mut [f32]) {
    for v in xs {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// GELU over a slice, with the widest vector unit the CPU has ([`with_simd`]).
pub fn gelu_slice(xs: &mut [f32]) {
    with_simd(
        #[inline(always)]
        || gelu_portable(xs),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for the widest x86 vector extension the CPU has (AVX-512, else AVX2 + FMA,
/// detected at run time), or as portable code. `f` and what it calls should be `#[inline(always)]`
/// loops written to vectorize; they are then compiled once per extension.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and BW (checked just above).
            return unsafe { run_avx512(f) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { run_avx2(f) };
        }
    }
    f()
}
