//! Host side of the flash kernel: run-time dispatch to the CubeCL backends compiled in, the
//! fusion custom op, and the launch.
//!
//! burn 0.21's backends are types; a model generic over `B: Backend` cannot name a bound like
//! "`B` is a cube backend" without forcing it on every caller. So dispatch is by the type of the
//! float tensor primitive, checked with `TypeId` at run time: `CubeTensor<R>` (a `CubeBackend`
//! without fusion) or `FusionTensor<FusionCubeRuntime<R>>` (burn's default `Cuda` / `Wgpu`,
//! with fusion), for each runtime `R` compiled in. Neither depends on the backend's default
//! float or int type, so every `Cuda<F, I>` / `Wgpu<F, I, B>` is covered.

use core::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use cubecl::prelude::*;

use crate::kernel::{FlashTiling, MmaTiling, flash_attention_kernel, flash_attention_mma_kernel};
use crate::{Error, FlashKernel, Result, Strategy};

#[cfg(feature = "cuda")]
type CudaR = cubecl::cuda::CudaRuntime;
#[cfg(feature = "wgpu")]
type WgpuR = cubecl::wgpu::WgpuRuntime;

/// Whether `B`'s float primitive is one the kernel can run on.
pub(crate) fn is_cube_backend<B: Backend>() -> bool {
    let id = TypeId::of::<B::FloatTensorPrimitive>();
    #[allow(unused_mut)]
    let mut yes = false;
    #[cfg(feature = "cuda")]
    {
        yes |= is_runtime::<CudaR>(id);
    }
    #[cfg(feature = "wgpu")]
    {
        yes |= is_runtime::<WgpuR>(id);
    }
    yes
}

/// The kernel `Flash` picks on `device` of backend `B` (see [`crate::flash_kernel`]).
pub(crate) fn kernel_for<B: Backend>(
    device: &B::Device,
    dtype: DType,
    head_dim: usize,
) -> Option<FlashKernel> {
    let id = TypeId::of::<B::FloatTensorPrimitive>();
    #[cfg(feature = "cuda")]
    if is_runtime::<CudaR>(id) {
        return kernel_on::<CudaR, B::Device>(device, dtype, head_dim);
    }
    #[cfg(feature = "wgpu")]
    if is_runtime::<WgpuR>(id) {
        return kernel_on::<WgpuR, B::Device>(device, dtype, head_dim);
    }
    let _ = (id, device, dtype, head_dim);
    None
}

#[allow(dead_code)] // unused in a `cube` build without a runtime
fn kernel_on<R: CubeRuntime, D: Clone + 'static>(
    device: &D,
    dtype: DType,
    head_dim: usize,
) -> Option<FlashKernel> {
    let device = cast::<D, R::Device>(device.clone())?;
    let client = R::client(&device);
    if mma_tiling(&client, dtype, head_dim).is_some() {
        return Some(FlashKernel::TensorCore);
    }
    let hw = &client.properties().hardware;
    FlashTiling::choose(
        head_dim,
        hw.max_shared_memory_size,
        hw.max_units_per_cube as usize,
    )
    .map(|_| FlashKernel::Scalar)
}

fn is_runtime<R: CubeRuntime>(id: TypeId) -> bool {
    id == TypeId::of::<CubeTensor<R>>() || id == TypeId::of::<FusionTensor<FusionCubeRuntime<R>>>()
}

/// Moves `a` into a `T` when they are the same type.
fn cast<A: 'static, T: 'static>(a: A) -> Option<T> {
    (Box::new(a) as Box<dyn Any>)
        .downcast::<T>()
        .ok()
        .map(|b| *b)
}

/// Runs the kernel if `B` is a cube backend; `UnsupportedBackend` otherwise. Shapes, head dim
/// and dtype were checked by the caller.
pub(crate) fn flash_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>> {
    let device = q.device();
    let prims = (
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    #[cfg(feature = "cuda")]
    let prims = match try_runtime::<B::FloatTensorPrimitive, CudaR>(prims, scale)? {
        Ok(out) => return Ok(Tensor::from_primitive(TensorPrimitive::Float(out))),
        Err(prims) => prims,
    };
    #[cfg(feature = "wgpu")]
    let prims = match try_runtime::<B::FloatTensorPrimitive, WgpuR>(prims, scale)? {
        Ok(out) => return Ok(Tensor::from_primitive(TensorPrimitive::Float(out))),
        Err(prims) => prims,
    };
    drop(prims);
    Err(Error::UnsupportedBackend {
        strategy: Strategy::Flash,
        backend: B::name(&device),
        reason: "the flash kernel runs on burn's CubeCL backends (Cuda, Wgpu) only",
    })
}

type Triple<P> = (P, P, P);

/// `Ok(Ok(out))` if `P` belongs to runtime `R` and the kernel ran, `Ok(Err(inputs))` if `P` is
/// not `R`'s.
fn try_runtime<P: 'static, R: CubeRuntime>(
    (q, k, v): Triple<P>,
    scale: f32,
) -> Result<core::result::Result<P, Triple<P>>> {
    let id = TypeId::of::<P>();
    let mismatch = || Error::Launch("internal: tensor primitive type check failed".into());
    if id == TypeId::of::<CubeTensor<R>>() {
        let (q, k, v) = (
            cast::<P, CubeTensor<R>>(q).ok_or_else(mismatch)?,
            cast::<P, CubeTensor<R>>(k).ok_or_else(mismatch)?,
            cast::<P, CubeTensor<R>>(v).ok_or_else(mismatch)?,
        );
        let out = launch::<R>(q, k, v, scale)?;
        return Ok(Ok(cast::<CubeTensor<R>, P>(out).ok_or_else(mismatch)?));
    }
    if id == TypeId::of::<FusionTensor<FusionCubeRuntime<R>>>() {
        type T<R> = FusionTensor<FusionCubeRuntime<R>>;
        let (q, k, v) = (
            cast::<P, T<R>>(q).ok_or_else(mismatch)?,
            cast::<P, T<R>>(k).ok_or_else(mismatch)?,
            cast::<P, T<R>>(v).ok_or_else(mismatch)?,
        );
        let out = fusion_op::<R>(q, k, v, scale)?;
        return Ok(Ok(cast::<T<R>, P>(out).ok_or_else(mismatch)?));
    }
    Ok(Err((q, k, v)))
}

/// Which kernel runs on this device and dtype.
enum Plan {
    /// The scalar kernel (any float dtype, any runtime).
    Scalar(FlashTiling),
    /// The tensor-core kernel (CUDA, f16 / bf16, `mma.m16n8k16` available).
    Mma(MmaTiling),
}

/// The tensor-core tiling, where this runtime, device and dtype can run it.
///
/// The kernel relies on the register layout of PTX's `mma.m16n8k16` (see
/// `kernel::flash_attention_mma_kernel`), so it is only chosen on the CUDA runtime, with
/// planes of 32 and the manual MMA for `dtype` × `dtype` → f32 listed among the device's
/// features; everything else (f32, wgpu, older GPUs) gets the scalar kernel.
fn mma_tiling<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: DType,
    head_dim: usize,
) -> Option<MmaTiling> {
    #[cfg(feature = "cuda")]
    {
        use cubecl::ir::features::MmaConfig;
        use cubecl::ir::{ElemType, FloatKind};
        if TypeId::of::<R>() != TypeId::of::<CudaR>() {
            return None;
        }
        let kind = match dtype {
            DType::F16 => FloatKind::F16,
            DType::BF16 => FloatKind::BF16,
            _ => return None,
        };
        let props = client.properties();
        let hw = &props.hardware;
        if hw.plane_size_min != 32 || hw.plane_size_max != 32 || hw.max_units_per_cube < 128 {
            return None;
        }
        let io = ElemType::Float(kind).into();
        let config = MmaConfig {
            a_type: io,
            b_type: io,
            cd_type: ElemType::Float(FloatKind::F32).into(),
            m: 16,
            n: 8,
            k: 16,
        };
        if !props.features.matmul.mma.contains(&config) {
            return None;
        }
        MmaTiling::choose(head_dim, hw.max_shared_memory_size)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (client, dtype, head_dim);
        None
    }
}

/// The kernel and grid for these shapes and this dtype on this device. `aligned`: the
/// tensors start on 16-byte boundaries (the tensor-core kernel reads 16 bytes at a time).
fn plan<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dims: [usize; 4],
    dtype: DType,
    aligned: bool,
) -> Result<(Plan, (u32, u32))> {
    let [b, h, n_q, head_dim] = dims;
    let hw = &client.properties().hardware;
    let max_shared = hw.max_shared_memory_size;
    let max_threads = hw.max_units_per_cube as usize;
    let mma = mma_tiling(client, dtype, head_dim).filter(|_| aligned);
    let (plan, rows) = match mma {
        Some(t) => (Plan::Mma(t), t.rows()),
        None => {
            let t = FlashTiling::choose(head_dim, max_shared, max_threads).ok_or_else(|| {
                Error::Launch(format!(
                    "no tiling for head_dim {head_dim} fits in {max_shared} bytes of shared memory and {max_threads} units per cube"
                ))
            })?;
            (Plan::Scalar(t), t.rows)
        }
    };
    let (max_x, max_y, _) = hw.max_cube_count;
    let x = n_q.div_ceil(rows);
    let y = b * h;
    match (u32::try_from(x), u32::try_from(y)) {
        (Ok(gx), Ok(gy)) if gx <= max_x && gy <= max_y => Ok((plan, (gx, gy))),
        _ => Err(Error::Launch(format!(
            "grid ({x}, {y}) is over the device's cube count ({max_x}, {max_y})"
        ))),
    }
}

/// Launches the kernel on cube tensors `[b, h, n, d]` (made contiguous here).
pub(crate) fn launch<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
) -> Result<CubeTensor<R>> {
    let q = into_contiguous(q);
    let k = into_contiguous(k);
    let v = into_contiguous(v);
    let dims: [usize; 4] = q.meta.shape().dims::<4>();
    let n_k = k.meta.shape()[2];
    let d = dims[3];
    let aligned = [&q, &k, &v]
        .iter()
        .all(|t| t.handle.offset_start.unwrap_or(0).is_multiple_of(16));
    let (plan, (gx, gy)) = plan(&q.client, dims, q.dtype, aligned)?;
    let (n_q, n_k) = match (u32::try_from(dims[2]), u32::try_from(n_k)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(Error::Launch("token count over u32::MAX".into())),
    };
    let out = empty_device_dtype(
        q.client.clone(),
        q.device.clone(),
        Shape::new(dims),
        q.dtype,
    );
    let client = q.client.clone();
    let dtype = q.dtype;
    let count = CubeCount::Static(gx, gy, 1);
    // SAFETY: every index the kernels form is below `b·h·n·d` of the tensor they read or
    // write (rows and keys past the end are guarded), and the four tensors are contiguous
    // `[b·h, n, d]` with the shapes checked by the caller.
    unsafe {
        match plan {
            Plan::Scalar(t) => flash_attention_kernel::launch_unchecked::<R>(
                &client,
                count,
                CubeDim::new_1d(t.threads() as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                scale,
                n_q,
                n_k,
                d,
                t.rows,
                t.keys,
                t.threads_per_row,
                dtype.into(),
            ),
            Plan::Mma(t) => flash_attention_mma_kernel::launch_unchecked::<R>(
                &client,
                count,
                CubeDim::new_2d(32, t.warps as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                scale,
                n_q,
                n_k,
                d,
                t.warps,
                t.keys,
                t.fast_math,
                dtype.into(),
            ),
        }
    };
    Ok(out)
}

/// The flash kernel as a custom op in burn's fusion stream (burn's default `Cuda` and `Wgpu`
/// backends are `Fusion<CubeBackend<..>>`). The tiling is checked before registering, so the
/// launch inside cannot fail for resources; should it fail anyway, the op computes the
/// reference on the same device instead of panicking.
fn fusion_op<R: CubeRuntime>(
    q: FusionTensor<FusionCubeRuntime<R>>,
    k: FusionTensor<FusionCubeRuntime<R>>,
    v: FusionTensor<FusionCubeRuntime<R>>,
    scale: f32,
) -> Result<FusionTensor<FusionCubeRuntime<R>>> {
    #[derive(Debug, Clone)]
    struct FlashOp<R> {
        desc: CustomOpIr,
        scale: f32,
        _r: core::marker::PhantomData<R>,
    }

    type Inner<R> = CubeBackend<R, f32, i32, u8>;

    impl<R: CubeRuntime> Operation<FusionCubeRuntime<R>> for FlashOp<R> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>,
        ) {
            let ([q, k, v], [out]) = self.desc.as_fixed();
            let q = handles.get_float_tensor::<Inner<R>>(q);
            let k = handles.get_float_tensor::<Inner<R>>(k);
            let v = handles.get_float_tensor::<Inner<R>>(v);
            let result = match launch::<R>(q.clone(), k.clone(), v.clone(), self.scale) {
                Ok(t) => t,
                Err(_) => {
                    let t = |p| Tensor::<Inner<R>, 4>::from_primitive(TensorPrimitive::Float(p));
                    crate::reference_attention(t(q), t(k), t(v), self.scale, None)
                        .into_primitive()
                        .tensor()
                }
            };
            handles.register_float_tensor::<Inner<R>>(&out.id, result);
        }
    }

    let d = q.shape[3];
    let dims = [q.shape[0], q.shape[1], q.shape[2], d];
    // Resource checks up front, where errors can still be returned.
    let client = q.client.clone();
    let dtype = q.dtype;
    {
        let device = client.device().clone();
        let cube_client = R::client(&device);
        plan::<R>(&cube_client, dims, dtype, true)?;
    }
    let streams = OperationStreams::with_inputs([&q, &k, &v]);
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::new(dims), dtype);
    let desc = CustomOpIr::new(
        "vitq_flash_attention",
        &[q.into_ir(), k.into_ir(), v.into_ir()],
        &[out],
    );
    Ok(client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            FlashOp::<R> {
                desc,
                scale,
                _r: core::marker::PhantomData,
            },
        )
        .output())
}
