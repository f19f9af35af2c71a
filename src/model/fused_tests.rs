//! The fused ops against candle's composed ops (forward and every gradient, f32, on odd shapes,
//! on each instruction set this CPU has) and against central finite differences.

use super::*;
use candle_core::{IndexOp, Var};
use candle_nn::{Linear, Module};

/// Deterministic values in [-1, 1) (an LCG; no test depends on the RNG crate's stream).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn var(shape: &[usize], seed: u64) -> Var {
    let n = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// `sum(y * r)` for a fixed random `r`, so every output element has its own gradient.
fn weighted_sum(y: &Tensor, seed: u64) -> Tensor {
    let r = Tensor::from_vec(values(y.elem_count(), seed), y.shape(), &Device::Cpu).unwrap();
    (y * r).unwrap().sum_all().unwrap()
}

/// candle's composition of I-JEPA's attention (what `vit::Attention` runs off the fused path).
fn attention_composed(qkv: &Tensor, heads: usize, scale: f64, bias: Option<&Tensor>) -> Tensor {
    let (b, n, c3) = qkv.dims3().unwrap();
    let c = c3 / 3;
    let qkv = qkv
        .reshape((b, n, 3, heads, c / heads))
        .unwrap()
        .permute((2, 0, 3, 1, 4))
        .unwrap();
    let q = (qkv.i(0).unwrap().contiguous().unwrap() * scale).unwrap();
    let k = qkv.i(1).unwrap().contiguous().unwrap();
    let v = qkv.i(2).unwrap().contiguous().unwrap();
    let mut att = q.matmul(&k.t().unwrap()).unwrap();
    if let Some(bias) = bias {
        att = att.broadcast_add(bias).unwrap();
    }
    let att = crate::model::ops::softmax_last_dim(&att).unwrap();
    att.matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, n, c))
        .unwrap()
}

#[test]
fn linear_matches_candle_on_every_isa() {
    // 3 x 7 rows (not a multiple of the 6-row tile), 37 outputs (not of the 16-wide panel).
    let (x, w, b) = (var(&[3, 7, 13], 1), var(&[37, 13], 2), var(&[37], 3));
    let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    let y_ref = lin.forward(x.as_tensor()).unwrap();
    let g_ref = weighted_sum(&y_ref, 4).backward().unwrap();
    for isa in Isa::all_supported() {
        let y = linear_with(x.as_tensor(), &lin, Products::F32(isa)).unwrap();
        assert_eq!(y.dims(), &[3, 7, 37]);
        assert!(max_rel(&y, &y_ref) < 1e-6, "{isa:?} forward");
        let g = weighted_sum(&y, 4).backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let (a, r) = (g.get(v).unwrap(), g_ref.get(v).unwrap());
            assert_eq!(a.dims(), r.dims(), "{isa:?} d{name} shape");
            let e = max_rel(a, r);
            assert!(e < 1e-5, "{isa:?} d{name}: {e}");
        }
    }
}

/// bf16 products (the AVX-512 BF16 kernel where this CPU has it, the portable one elsewhere)
/// against candle's f32 ops: forward and every gradient within the operands' rounding (2^-9
/// relative each, so a few 2^-8 on sums of mixed signs), on shapes with odd `k` and partial
/// tiles, and large enough that several row chunks run in parallel.
#[test]
fn linear_with_bf16_products_matches_candle_within_rounding() {
    for (shape, n, seed) in [(&[3usize, 7, 13][..], 37, 21), (&[250, 41][..], 24, 25)] {
        let k = *shape.last().unwrap();
        let (x, w, b) = (
            var(shape, seed),
            var(&[n, k], seed + 1),
            var(&[n], seed + 2),
        );
        let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let y_ref = lin.forward(x.as_tensor()).unwrap();
        let g_ref = weighted_sum(&y_ref, seed + 3).backward().unwrap();
        let y32 = linear_with(x.as_tensor(), &lin, Products::F32(Isa::detect())).unwrap();
        let g32 = weighted_sum(&y32, seed + 3).backward().unwrap();
        let y = linear_with(x.as_tensor(), &lin, Products::Bf16).unwrap();
        let e = max_rel(&y, &y_ref);
        assert!(
            e < 2e-2 && e > 0.0,
            "forward {e}: rounded, but only by bf16's precision"
        );
        let g = weighted_sum(&y, seed + 3).backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let (a, r) = (g.get(v).unwrap(), g_ref.get(v).unwrap());
            assert_eq!(a.dims(), r.dims(), "d{name} shape");
            let e = max_rel(a, r);
            // db is a plain f32 sum of the gradient rows: no rounding at all.
            let tol = if name == "b" { 1e-5 } else { 2e-2 };
            assert!(e < tol, "d{name}: {e}");
            if name == "b" {
                // Summed in the same order as the f32 products' path: the same bits.
                assert_eq!(
                    max_rel(a, g32.get(v).unwrap()),
                    0.0,
                    "db differs from f32's"
                );
            }
        }
    }
}

#[test]
fn bf16_products_are_scoped_to_the_call_and_thread() {
    let (x, w, b) = (var(&[5, 40], 31), var(&[20, 40], 32), var(&[20], 33));
    let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    let f32_y = linear(x.as_tensor(), &lin).unwrap();
    let (on, y) = with_bf16_products(true, || {
        let other = std::thread::spawn(bf16_products).join().unwrap();
        assert!(!other, "another thread keeps f32 products");
        (bf16_products(), linear(x.as_tensor(), &lin).unwrap())
    });
    assert_eq!(on, bf16_available());
    assert!(!bf16_products(), "off again after the call");
    let e = max_rel(&y, &f32_y);
    if on {
        assert!(e > 0.0 && e < 2e-2, "bf16 products: {e}");
    } else {
        assert_eq!(e, 0.0, "no AVX-512 BF16: f32 products");
    }
    let again = linear(x.as_tensor(), &lin).unwrap();
    assert_eq!(max_rel(&again, &f32_y), 0.0);
}

#[test]
fn linear_large_rows_split_over_threads() {
    // More rows than one chunk (16 tiles of 6), so several chunks run in parallel.
    let (x, w, b) = (var(&[250, 40], 5), var(&[24, 40], 6), var(&[24], 7));
    let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    let y_ref = lin.forward(x.as_tensor()).unwrap();
    let g_ref = weighted_sum(&y_ref, 8).backward().unwrap();
    let y = linear(x.as_tensor(), &lin).unwrap();
    assert!(max_rel(&y, &y_ref) < 1e-6);
    let g = weighted_sum(&y, 8).backward().unwrap();
    for v in [&x, &w, &b] {
        assert!(max_rel(g.get(v).unwrap(), g_ref.get(v).unwrap()) < 1e-5);
    }
}

#[test]
fn gelu_matches_candle_erf_gelu() {
    let x = Var::from_tensor(
        &(Tensor::from_vec(values(5 * 4001, 9), (5, 4001), &Device::Cpu).unwrap() * 4.0).unwrap(),
    )
    .unwrap();
    let y_ref = x.as_tensor().gelu_erf().unwrap();
    let g_ref = weighted_sum(&y_ref, 10).backward().unwrap();
    for isa in Isa::all_supported() {
        let y = gelu_with(x.as_tensor(), isa).unwrap();
        // erf to 1.5e-7 absolute (engine::math::erf) against libm's.
        assert!(max_rel(&y, &y_ref) < 1e-6, "{isa:?} forward");
        let g = weighted_sum(&y, 10).backward().unwrap();
        let e = max_rel(g.get(&x).unwrap(), g_ref.get(&x).unwrap());
        assert!(e < 1e-5, "{isa:?} backward: {e}");
    }
}

#[test]
fn attention_matches_candle_composition() {
    // 2 clips, 11 tokens, 3 heads of 5: nothing a multiple of a kernel's tile.
    let qkv = var(&[2, 11, 45], 11);
    let scale = 5f64.powf(-0.5);
    let y_ref = attention_composed(qkv.as_tensor(), 3, scale, None);
    let g_ref = weighted_sum(&y_ref, 12).backward().unwrap();
    let y = attention(qkv.as_tensor(), 3, scale, None).unwrap().unwrap();
    assert_eq!(y.dims(), &[2, 11, 15]);
    let e = max_rel(&y, &y_ref);
    assert!(e < 1e-5, "forward {e}");
    let g = weighted_sum(&y, 12).backward().unwrap();
    let e = max_rel(g.get(&qkv).unwrap(), g_ref.get(&qkv).unwrap());
    assert!(e < 1e-4, "backward {e}");
}

/// Central differences of `f` at every element of `x` (f64 accumulation of an f32 function,
/// so the step is large and the tolerance loose: this catches wrong formulas, not rounding).
fn check_fd(x: &Var, f: impl Fn(&Tensor) -> Tensor, what: &str) {
    let grad = f(x.as_tensor()).backward().unwrap();
    let grad = grad
        .get(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let base = x
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let h = 1e-2f32;
    let mut worst = 0f32;
    let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    for i in 0..base.len() {
        let at = |d: f32| {
            let mut v = base.clone();
            v[i] += d;
            let t = Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap();
            f(&t).to_scalar::<f32>().unwrap()
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        worst = worst.max((fd - grad[i]).abs() / scale);
    }
    assert!(worst < 2e-2, "{what}: worst relative error {worst}");
}

#[test]
fn fused_gradients_match_finite_differences() {
    let x = var(&[2, 3, 5], 13);
    let (w, b) = (var(&[7, 5], 14), var(&[7], 15));
    let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    check_fd(
        &x,
        |t| weighted_sum(&gelu(&linear(t, &lin).unwrap()).unwrap(), 16),
        "gelu(linear(x))",
    );
    let qkv = var(&[2, 4, 12], 17);
    check_fd(
        &qkv,
        |t| weighted_sum(&attention(t, 2, 0.5, None).unwrap().unwrap(), 18),
        "attention",
    );
}

#[test]
fn fused_ops_reject_bad_shapes() {
    let qkv = Tensor::zeros((1, 4, 10), DType::F32, &Device::Cpu).unwrap();
    assert!(
        attention(&qkv, 3, 1.0, None).is_err(),
        "10 is not 3 x 3 heads"
    );
    let x = Tensor::zeros((4, 6), DType::F32, &Device::Cpu).unwrap();
    let lin = Linear::new(
        Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
        Some(Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()),
    );
    assert!(linear(&x, &lin).is_err(), "6 inputs into a 5-input layer");
}

#[test]
fn attention_with_key_dropout_bias_matches_candle() {
    // Fine-tuning's key dropout (vit::key_dropout_bias): [B, 1, N, N], one bias per clip.
    let qkv = var(&[2, 7, 18], 19);
    let dropped: Vec<bool> = (0..14).map(|i| i % 3 == 1).collect();
    let bias = crate::model::vit::key_dropout_bias(&dropped, 2, 7, &Device::Cpu).unwrap();
    let y_ref = attention_composed(qkv.as_tensor(), 2, 0.3, Some(&bias));
    let g_ref = weighted_sum(&y_ref, 20).backward().unwrap();
    let y = attention(qkv.as_tensor(), 2, 0.3, Some(&bias))
        .unwrap()
        .unwrap();
    assert!(max_rel(&y, &y_ref) < 1e-5, "forward");
    let g = weighted_sum(&y, 20).backward().unwrap();
    let e = max_rel(g.get(&qkv).unwrap(), g_ref.get(&qkv).unwrap());
    assert!(e < 1e-4, "backward {e}");
    // A bias of the wrong size is an error, not a read out of bounds.
    let small = Tensor::zeros((3, 1, 7, 7), DType::F32, &Device::Cpu).unwrap();
    assert!(attention(qkv.as_tensor(), 2, 0.3, Some(&small)).is_err());
}

/// A block of width 24 (3 heads of 8, MLP 96) with every parameter random (norm scales and
/// shifts included, so no term of the backward is trivially zero).
fn random_block(seed: u64) -> (crate::model::vit::Block, Vec<Var>) {
    let cfg = crate::model::EncoderConfig {
        n_mels: 16,
        patch_size: 16,
        embed_dim: 24,
        depth: 1,
        num_heads: 3,
        mlp_ratio: 4,
        layer_norm_eps: 1e-6,
    };
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let block = crate::model::vit::Block::load(&cfg, vb).unwrap();
    let mut vars = vm.all_vars();
    vars.sort_by_key(|v| v.elem_count());
    for (i, v) in vars.iter().enumerate() {
        let t = Tensor::from_vec(
            values(v.elem_count(), seed + i as u64),
            v.shape(),
            &Device::Cpu,
        )
        .unwrap();
        // Scales near 1 and weights near PyTorch's init range keep activations O(1).
        let t = if v.dims().len() == 1 {
            (t * 0.5).unwrap()
        } else {
            (t * 0.2).unwrap()
        };
        v.set(&t).unwrap();
    }
    (block, vars)
}

/// The whole-block op computes what the per-layer fused ops compute, kernel for kernel, so the
/// output and every gradient (input, all twelve parameters) are the same bits: with f32
/// products on every instruction set's default, with bf16 products, with and without
/// fine-tuning's key-dropout bias, on 2 clips of 7 tokens (odd: partial tiles everywhere).
#[test]
fn block_op_is_the_per_layer_path_to_the_bit() {
    use crate::model::vit::Mode;
    let (block, vars) = random_block(40);
    let x = var(&[2, 7, 24], 41);
    let dropped: Vec<bool> = (0..14).map(|i| i % 4 == 2).collect();
    let bias = crate::model::vit::key_dropout_bias(&dropped, 2, 7, &Device::Cpu).unwrap();
    let mut precisions = vec![false];
    if bf16_available() {
        precisions.push(true);
    }
    for bf16 in precisions {
        for bias in [None, Some(&bias)] {
            let what = format!("bf16 {bf16}, bias {}", bias.is_some());
            let layers = with_bf16_products(bf16, || {
                block.forward_layers(x.as_tensor(), Mode::Train, bias)
            })
            .unwrap();
            let products = if bf16 {
                Products::Bf16
            } else {
                Products::F32(Isa::detect())
            };
            let params = block.fused_params().unwrap();
            let fused = block::block_with(x.as_tensor(), &params, bias, products)
                .unwrap()
                .expect("the block op applies to f32 CPU tensors");
            assert_eq!(fused.dims(), &[2, 7, 24]);
            assert_eq!(max_rel(&fused, &layers), 0.0, "{what}: forward");
            let gl = weighted_sum(&layers, 42).backward().unwrap();
            let gf = weighted_sum(&fused, 42).backward().unwrap();
            let dx = gf.get(&x).unwrap();
            assert!(
                dx.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
            assert_eq!(max_rel(dx, gl.get(&x).unwrap()), 0.0, "{what}: dx");
            for (i, v) in vars.iter().enumerate() {
                let (a, r) = (gf.get(v).unwrap(), gl.get(v).unwrap());
                assert_eq!(a.dims(), r.dims());
                assert_eq!(max_rel(a, r), 0.0, "{what}: parameter {i} {:?}", v.dims());
            }
        }
    }
}

/// The block op's input gradient against central differences, and its forward against
/// candle's composed inference ops (candle's own layer norm, softmax, matmul and GELU), with the
/// f32 products of every instruction set this CPU has.
#[test]
fn block_op_matches_finite_differences_and_candle() {
    use crate::model::vit::Mode;
    let (block, _) = random_block(50);
    let x = var(&[1, 5, 24], 51);
    let params = block.fused_params().unwrap();
    let composed = block
        .forward_layers(x.as_tensor(), Mode::Inference, None)
        .unwrap();
    for isa in Isa::all_supported() {
        let run = |t: &Tensor| {
            block::block_with(t, &params, None, Products::F32(isa))
                .unwrap()
                .unwrap()
        };
        let e = max_rel(&run(x.as_tensor()), &composed);
        assert!(e < 1e-5, "{isa:?}: forward against candle's ops: {e}");
        check_fd(
            &x,
            |t| weighted_sum(&run(t), 52),
            &format!("block, {isa:?}"),
        );
    }
}

#[test]
fn block_op_declines_what_it_does_not_take() {
    let (block, _) = random_block(60);
    let params = block.fused_params().unwrap();
    let p = Products::F32(Isa::detect());
    // A width the parameters do not have is an error, not a read out of bounds.
    let wide = Tensor::zeros((1, 3, 25), DType::F32, &Device::Cpu).unwrap();
    assert!(block::block_with(&wide, &params, None, p).is_err());
    // Another dtype goes back to the layer-by-layer path.
    let half = Tensor::zeros((1, 3, 24), DType::BF16, &Device::Cpu).unwrap();
    assert!(block::block_with(&half, &params, None, p)
        .unwrap()
        .is_none());
}
