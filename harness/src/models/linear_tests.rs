//! Tests of the linear layer: kernels, formats, quantization and the names of its kernels.

use super::*;
use candle_core::Device;

/// A deterministic pseudo-random matrix with entries in [-1, 1).
pub(crate) fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
    let v = crate::kernels::sgemm::test_values(rows * cols, seed);
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = b.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt()
}

#[test]
fn packed_and_candle_layouts_give_the_same_linear_layer() {
    // Lin::new packs the weight on AVX2/FMA CPUs; Lin::tied keeps candle's layout. Same
    // layer, (batch, seq, k) input, with and without bias: same outputs up to summation
    // order, same parameter count and bytes, and quantizing either gives the same blocks.
    let (w, b) = (matrix(37, 70, 11), matrix(1, 37, 12).squeeze(0).unwrap());
    let x = matrix(3 * 5, 70, 13).reshape((3, 5, 70)).unwrap();
    for bias in [None, Some(b)] {
        let packed = Lin::new(w.clone(), bias.clone());
        let candle = Lin::tied(w.clone(), bias.clone());
        assert_eq!(
            matches!(packed.weight, Weight::Packed(..)),
            PackedWeight::supported()
        );
        let (got, want) = (packed.forward(&x).unwrap(), candle.forward(&x).unwrap());
        assert_eq!(got.dims(), &[3, 5, 37]);
        assert!(relative_error(&got, &want) < 1e-6);
        assert_eq!(packed.parameters(), candle.parameters());
        assert_eq!(packed.bytes(), candle.bytes());
        let (mut qp, mut qc) = (packed, candle);
        qp.quantize(GgmlDType::Q8_0).unwrap();
        qc.quantize(GgmlDType::Q8_0).unwrap();
        let (got, want) = (qp.forward(&x).unwrap(), qc.forward(&x).unwrap());
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn gelu_fused_into_the_packed_gemm_equals_the_separate_pass() {
    let (w, b) = (matrix(40, 24, 16), matrix(1, 40, 17).squeeze(0).unwrap());
    let x = (matrix(2 * 9, 24, 18).reshape((2, 9, 24)).unwrap() * 3.0).unwrap();
    let l = Lin::new(w, Some(b));
    let fused = dense_act(&l, Activation::GeluErf, &x).unwrap();
    let separate = Activation::GeluErf
        .forward(&l.forward(&x).unwrap())
        .unwrap();
    assert_eq!(
        fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        separate.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn q8_0_and_q4_0_layers_run_on_the_integer_gemm_and_agree_with_candles_kernel() {
    // 37 outputs: two full panels and a partial one; 96 = three blocks per row.
    let (w, b, x) = (matrix(37, 96, 19), matrix(1, 37, 20), matrix(5, 96, 21));
    let b = b.flatten_all().unwrap();
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
        let mut layer = Lin::new(w.clone(), Some(b.clone()));
        layer.quantize(dtype).unwrap();
        assert_eq!(
            matches!(layer.weight, Weight::Int8(..)),
            PackedWeight::supported(),
            "{dtype:?}"
        );
        let got = layer.forward(&x).unwrap();
        // k = 96 keeps candle on ggml's dot product (Q8_0 activations) on every host; at
        // k % 256 == 0 a VNNI host would take its Q8K tiles (kernels::dispatch).
        assert!(matches!(
            candle_quantized_kernel(dtype, 5, 37, 96),
            Kernel::CandleGgmlDot { .. }
        ));
        let q = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let want = q.forward(&x).unwrap().broadcast_add(&b).unwrap();
        let diff = (&got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{dtype:?}: {diff}");
    }
    // Other formats stay on candle's kernels.
    let mut q4k = Lin::new(matrix(4, 256, 22), None);
    q4k.quantize(GgmlDType::Q4K).unwrap();
    assert!(matches!(q4k.weight, Weight::Candle(QMatMul::QTensor(_))));
}

#[test]
fn each_weight_format_names_the_kernel_that_runs_it() {
    let mut f32_layer = Lin::new(matrix(32, 256, 30), None);
    let mut q8 = Lin::new(matrix(32, 256, 31), None);
    q8.quantize(GgmlDType::Q8_0).unwrap();
    let mut q4k = Lin::new(matrix(32, 256, 32), None);
    q4k.quantize(GgmlDType::Q4K).unwrap();
    let kernels = kernels_of(vec![&mut f32_layer, &mut q8, &mut q4k]);
    assert_eq!(
        kernels.keys().collect::<Vec<_>>(),
        ["f32", "q4k", "q8_0"],
        "{kernels:?}"
    );
    if PackedWeight::supported() {
        // The level is the host's (AVX2, AVX-512, VNNI); the name says which.
        use crate::kernels::isa;
        let (f, i) = (isa::f32_level().unwrap(), isa::int_level().unwrap());
        assert_eq!(kernels["f32"], format!("harness-sgemm-{}", f.name()));
        assert_eq!(
            kernels["q8_0"],
            format!("harness-qgemm-{}, activations q8_0", i.name())
        );
    } else {
        eprintln!("no AVX2/FMA: f32 and Q8_0 are candle's here");
        assert_eq!(kernels["f32"], "candle-gemm");
    }
    // Q4K is candle's on every CPU; its activations are Q8K blocks whatever the tier.
    assert!(kernels["q4k"].starts_with("candle-"), "{}", kernels["q4k"]);
    assert!(
        kernels["q4k"].ends_with("activations q8k"),
        "{}",
        kernels["q4k"]
    );
    // Two shapes of one format that take different kernels are both listed.
    let mut narrow = Lin::new(matrix(17, 256, 33), None);
    narrow.quantize(GgmlDType::Q6K).unwrap();
    let mut wide = Lin::new(matrix(32, 256, 34), None);
    wide.quantize(GgmlDType::Q6K).unwrap();
    let q6k = &kernels_of(vec![&mut narrow, &mut wide])["q6k"];
    if dispatch::candle_x86_level().is_some() {
        assert!(q6k.contains(" | "), "{q6k}");
        assert!(q6k.contains("candle-repack-"), "{q6k}");
    }
}

#[test]
fn a_packed_layer_refuses_inputs_of_the_wrong_width() {
    let l = Lin::new(matrix(8, 16, 14), None);
    let err = l.forward(&matrix(2, 15, 15)).unwrap_err().to_string();
    assert!(err.contains("16") && err.contains("15"), "{err}");
}

#[test]
fn quantized_linear_stays_close_to_f32_even_when_the_width_is_not_a_block_multiple() {
    // 384 (MiniLM's width) is a multiple of Q8_0's 32-wide blocks but not of the k-quants'
    // 256: the weight and input are zero-padded, which must not change the product.
    let (w, b) = (matrix(48, 384, 1), matrix(1, 48, 2).squeeze(0).unwrap());
    let x = matrix(2 * 5, 384, 3).reshape((2, 5, 384)).unwrap();
    let dense = Lin::new(w.clone(), Some(b.clone()));
    let want = dense.forward(&x).unwrap();
    for (dtype, tolerance) in [
        (GgmlDType::Q8_0, 0.01),
        (GgmlDType::Q6K, 0.02),
        (GgmlDType::Q4K, 0.1),
    ] {
        let mut q = Lin::new(w.clone(), Some(b.clone()));
        q.quantize(dtype).unwrap();
        let got = q.forward(&x).unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = relative_error(&got, &want);
        assert!(err < tolerance, "{dtype:?}: relative error {err}");
        assert!(err > 0.0, "{dtype:?} changed nothing");
        assert_eq!(q.parameters(), 48 * 384 + 48);
        assert!(
            q.bytes() < dense.bytes() / 3,
            "{dtype:?}: {} bytes",
            q.bytes()
        );
    }
}

#[test]
fn many_rows_agree_with_one_row_at_a_time() {
    // Q4_1: 40 rows at once go through dequantized blocks and the f32 GEMM, one row at a
    // time through candle's Q4_1 kernel; both round the activations to Q8_1 blocks, so
    // they agree to float summation order. Q8_0 (the integer GEMM on AVX2 CPUs, candle's
    // kernel and the dequantized path elsewhere) likewise.
    let w = matrix(64, 96, 4);
    let x = matrix(40, 96, 5);
    let f32_result = Lin::new(w.clone(), None).forward(&x).unwrap();
    for (dtype, tolerance) in [(GgmlDType::Q8_0, 0.01), (GgmlDType::Q4_1, 0.1)] {
        let mut q = Lin::new(w.clone(), None);
        q.quantize(dtype).unwrap();
        let together = q.forward(&x).unwrap();
        let one_by_one = Tensor::cat(
            &(0..40)
                .map(|i| q.forward(&x.narrow(0, i, 1).unwrap()).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        // Q8_1 keeps each block's sum in f16, which the kernel uses for Q4_1's offsets: a
        // few 1e-4 of rounding, still two orders below the quantization error.
        let err = relative_error(&one_by_one, &together);
        assert!(err < 1e-3, "{dtype:?}: {err}");
        let err = relative_error(&together, &f32_result);
        assert!(err > 0.0 && err < tolerance, "{dtype:?}: {err}");
    }
}

#[test]
fn quantizing_quantized_weights_again_is_refused() {
    let mut l = Lin::new(matrix(8, 64, 1), None);
    l.quantize(GgmlDType::Q8_0).unwrap();
    let mut info = reports::CheckpointInfo {
        id: "m.gguf".into(),
        resolved: "m.gguf".into(),
        architecture: "llama".into(),
        parameters: 512,
        bytes_on_disk: 600,
        head_labels: None,
        weight_bytes: Some(600),
        quantization: Some("q8_0 (gguf)".into()),
        tokenizer: None,
        kernels: Default::default(),
    };
    let err = quantize_linears(vec![&mut l], GgmlDType::Q4K, &mut info)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.gguf is already quantized (q8_0 (gguf))"),
        "{err}"
    );
    // An f32 layer is quantized and the bytes as run are recorded.
    let mut f = Lin::new(matrix(8, 64, 2), None);
    info.quantization = None;
    info.weight_bytes = None;
    quantize_linears(vec![&mut f], GgmlDType::Q8_0, &mut info).unwrap();
    assert_eq!(
        info.quantization.as_deref(),
        Some("q8_0 (quantized at load)")
    );
    // 512 f32 parameters (2048 bytes) become 16 Q8_0 blocks: 34 bytes each as candle holds
    // them (f16 scale), 36 as the integer GEMM does (f32 scale).
    let block = if PackedWeight::supported() { 36 } else { 34 };
    assert_eq!(info.weight_bytes, Some(16 * block));
}
