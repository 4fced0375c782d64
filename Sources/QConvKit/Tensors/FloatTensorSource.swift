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

extension FloatTensorSource {
    /// The largest chunk of at most `limit` elements that keeps ranges aligned.
    public func chunkElements(limit: Int) -> Int {
        max(alignment, limit / alignment * alignment)
    }
}
