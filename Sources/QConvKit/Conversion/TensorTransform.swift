/// A change applied to some tensors while a container is rewritten
/// (`ContainerRewriter`) or dequantized (`Dequantizer`): how `merge-lora`
/// merges an adapter into a quantized base without either pipeline knowing
/// about LoRA.
public protocol TensorTransform {
    /// Files the transform reads, which the output must not overwrite.
    var inputFiles: [String] { get }
    /// The tensor as it will be written (name, dtype, shape), or nil when
    /// this transform leaves it alone.
    func output(for tensor: TensorInfo) -> TensorInfo?
    /// The values to write instead of `base` (the tensor's stored values).
    func values(for tensor: TensorInfo, base: FloatTensorSource, threads: Int) throws -> FloatTensorSource
    /// Whether transformed tensors may hold NaN or infinity (`--allow-nonfinite`).
    var allowsNonFinite: Bool { get }
    /// The error for `count` NaN or infinite values in a transformed tensor.
    func nonFiniteError(tensor: String, count: Int) -> Error
}
