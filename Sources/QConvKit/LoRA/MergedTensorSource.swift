/// A base tensor with a LoRA change applied, read range by range as float32
/// like any other tensor: the merge plugs into the same pipelines as
/// `dequant` (write safetensors) and `to-nf4` (quantize into a container).
///
/// Ranges are whole rows (and whole 4-bit blocks or int8 rows of the base).
/// A DoRA change whose norms run across rows is merged once, whole, when the
/// source is made, and then served from memory.
public final class MergedTensorSource: FloatTensorSource {
    public let prepared: LoRAPreparedChange
    /// The base values; nil when the change replaces the tensor.
    private let base: FloatTensorSource?
    private var whole: UnsafeMutableBufferPointer<Float>?

    /// - Parameters:
    ///   - base: the tensor's stored values (a safetensors tensor or a
    ///     container decoder), of the change's base shape.
    public init(base: FloatTensorSource, prepared: LoRAPreparedChange, threads: Int) throws {
        self.prepared = prepared
        self.base = prepared.change.replacement == nil ? base : nil
        if prepared.requiresWholeTensor {
            let count = prepared.rowCount * prepared.columnCount
            let values = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            values.initialize(repeating: 0)
            whole = values
            if let source = self.base, count > 0 {
                let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.scratchBytes(for: count)), alignment: 64)
                defer { scratch.deallocate() }
                try source.readFloats(0..<count, into: values.baseAddress!, scratch: scratch)
            }
            if count > 0 { try prepared.applyToWholeTensor(values.baseAddress!, threads: threads) }
        }
    }

    deinit { whole?.deallocate() }

    public var info: TensorInfo { prepared.change.output }

    public var alignment: Int {
        let columns = max(1, prepared.columnCount)
        return leastCommonMultiple(columns, base?.alignment ?? 1)
    }

    public func scratchBytes(for count: Int) -> Int { base?.scratchBytes(for: count) ?? 0 }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        if let whole {
            destination.update(from: whole.baseAddress! + range.lowerBound, count: range.count)
            return
        }
        let columns = prepared.columnCount
        precondition(columns > 0 && range.lowerBound % columns == 0, "merge ranges must be whole rows")
        if let base { try base.readFloats(range, into: destination, scratch: scratch) }
        prepared.apply(to: destination, rows: range.lowerBound / columns..<(range.upperBound + columns - 1) / columns)
    }
}
