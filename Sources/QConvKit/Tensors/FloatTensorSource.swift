/// Anything that can hand out a tensor's elements as float32, range by range:
/// a stored safetensors tensor, or a quantized tensor of a container.
///
/// Verification and LoRA merging read through this, so they work the same on
/// every kind of input.
public protocol FloatTensorSource {
    var info: TensorInfo { get }
    /// Ranges passed to `readFloats` must start at a multiple of this (a
    /// 4-bit block, an int8 row); they may end anywhere at the tensor's end.
    var alignment: Int { get }
    /// Bytes of scratch `readFloats` needs for `count` elements.
    func scratchBytes(for count: Int) -> Int
    func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws
}

extension StoredTensor: FloatTensorSource {
    public var alignment: Int { 1 }
    public func scratchBytes(for count: Int) -> Int { count * (info.dtype.byteWidth ?? 8) }
}

/// Another source's values as they would be after writing them in `dtype`
/// and reading them back (round to nearest even, once).
///
/// The container pipelines of `merge-lora` read a quantized base through
/// this, so that a merge into a container starts from the values `dequant`
/// would have written, and re-quantizes the values a merge would have written:
/// the same numbers as doing the three steps by hand, and as PEFT, whose
/// QLoRA merge dequantizes to the weight's dtype before adding the delta.
public struct DTypeRoundedSource: FloatTensorSource {
    public let base: FloatTensorSource
    /// F16 or BF16 round; F32 (and every other dtype) leaves values as they are.
    public let dtype: DType

    public init(_ base: FloatTensorSource, through dtype: DType) {
        self.base = base
        self.dtype = dtype
    }

    public var info: TensorInfo { base.info }
    public var alignment: Int { base.alignment }
    public func scratchBytes(for count: Int) -> Int { base.scratchBytes(for: count) }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        try base.readFloats(range, into: destination, scratch: scratch)
        FloatConversion.roundTrip(destination, count: range.count, through: dtype)
    }
}
