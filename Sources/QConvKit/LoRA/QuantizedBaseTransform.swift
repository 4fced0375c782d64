/// A 16-bit base as its QLoRA model saw it, with an adapter merged: every
/// tensor the quantization would have quantized (`TensorSelection`'s default
/// rule, what transformers quantizes) becomes `dequant(quant(W))` rounded to
/// its dtype, as bitsandbytes' `dequantize_4bit` returns it; a tensor the
/// adapter changes gets its delta added to that, in float32, and is rounded
/// once, exactly as PEFT computes a QLoRA merge before it quantizes again.
/// Other tensors are left as they are.
///
/// The output is the model the adapter was trained with, kept in 16 bits:
/// what quantizing the base (`Quantizer`) and merging into it dequantized gives.
public struct QuantizedBaseTransform: TensorTransform {
    public let merge: LoRATransform
    public let quantization: WeightQuantization
    public let selection: TensorSelection

    public init(merge: LoRATransform, quantization: WeightQuantization, selection: TensorSelection) {
        self.merge = merge
        self.quantization = quantization
        self.selection = selection
    }

    public var inputFiles: [String] { merge.inputFiles }
    public var allowsNonFinite: Bool { merge.allowsNonFinite }

    /// Whether the tensor goes through the quantization.
    public func isQuantized(_ tensor: TensorInfo) -> Bool {
        Self.isQuantized(tensor, selection: selection)
    }

    /// Whether `selection` puts the tensor through the quantization.
    public static func isQuantized(_ tensor: TensorInfo, selection: TensorSelection) -> Bool {
        selection.shouldQuantize(tensor) && LoRAMergePlan.mergeableDTypes.contains(tensor.dtype)
    }

    public func output(for tensor: TensorInfo) -> TensorInfo? {
        merge.output(for: tensor) ?? (isQuantized(tensor) ? tensor : nil)
    }

    public func values(for tensor: TensorInfo, base: FloatTensorSource, threads: Int) throws -> FloatTensorSource {
        var start = base
        if isQuantized(tensor) {
            start = DTypeRoundedSource(try QuantizationRoundTrip(base, quantization: quantization, mean: .torchFloat32, threads: threads), through: tensor.dtype)
        }
        return merge.output(for: tensor) == nil ? start : try merge.values(for: tensor, base: start, threads: threads)
    }
}
