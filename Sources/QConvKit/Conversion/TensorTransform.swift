/// A change applied to some tensors while a model is rewritten
/// (`ModelRewriter`) or dequantized (`Dequantizer`): how `merge-lora` merges
/// an adapter into any base without either pipeline knowing about LoRA.
public protocol TensorTransform {
    /// Files the transform reads, which the output must not overwrite.
    var inputFiles: [String] { get }
    /// The tensor as it will be written (name, dtype, shape), or nil when
    /// this transform leaves it alone.
    func output(for tensor: TensorInfo) -> TensorInfo?
    /// The values to write instead of `base` (the tensor's stored values).
    func values(for tensor: TensorInfo, base: FloatTensorSource, threads: Int) throws -> FloatTensorSource
    /// Whether transformed tensors may hold NaN or infinity.
    var allowsNonFinite: Bool { get }
}

extension TensorTransform {
    /// The values of `tensor` after the transform, starting from its stored
    /// values as `dequant` writes them (rounded to its dtype once when it is
    /// quantized; see `DTypeRoundedSource`).
    func transformedValues(of tensor: ModelTensor, threads: Int) throws -> FloatTensorSource {
        var base = try tensor.values()
        if tensor.scheme.isQuantized { base = DTypeRoundedSource(base, through: tensor.info.dtype) }
        return try values(for: tensor.info, base: base, threads: threads)
    }
}
