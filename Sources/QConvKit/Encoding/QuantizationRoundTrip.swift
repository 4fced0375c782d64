/// How bitsandbytes stores the weights of a QLoRA base: what a QLoRA adapter
/// was trained against, and what `merge-lora` can merge "through".
public enum WeightQuantization: Equatable, Sendable {
    /// NF4 or FP4 blocks, with double-quantized absmax values when asked.
    case fourBit(FourBitFormat, blockSize: Int, doubleQuant: Bool)
    /// LLM.int8 weights (`Linear8bitLt`): row-wise int8 of the values rounded
    /// to float16, without outlier columns (bitsandbytes keeps outliers on the
    /// activations' side, and dequantizes weights as `CB * SCB / 127`).
    case int8

    /// "nf4", "fp4" or "int8".
    public var name: String {
        switch self {
        case .fourBit(let format, _, _): return format.rawValue
        case .int8: return "int8"
        }
    }

    /// The conversion that stores weights this way (`to-nf4`, ...).
    public var method: QuantizationMethod {
        switch self {
        case let .fourBit(format, blockSize, doubleQuant): return .fourBit(format, blockSize: blockSize, doubleQuant: doubleQuant)
        case .int8: return .int8(outliers: .none)
        }
    }
}

/// Another source's values quantized and decoded again, range by range:
/// `dequant(quant(W))` exactly as `FourBitEncoder` / `Int8Encoder` and
/// `TensorDecoder` compute it (so bit for bit what `to-nf4` then `dequant`
/// gives, and what bitsandbytes' `quantize_4bit` then `dequantize_4bit` gives).
///
/// 4-bit: making the source reads the whole tensor once for the block absmax
/// values (one float per block), which double quantization needs before any
/// block can be decoded; then each read quantizes and decodes its blocks.
/// int8: rows are independent, nothing is read up front.
public final class QuantizationRoundTrip: FloatTensorSource {
    public let base: FloatTensorSource
    public let quantization: WeightQuantization
    /// 4-bit: the absmax value each block decodes with (double-quantized and back when asked).
    private let decodingAbsmax: [Float]
    private let fp4NegativeZero: Bool

    /// - Parameter mean: how double quantization averages the block absmax
    ///   values into its offset: `.torchFloat32` as bitsandbytes (and qconv
    ///   in its layout), `.float64` as qconv in a container.
    public init(_ base: FloatTensorSource, quantization: WeightQuantization, mean: DoubleQuantization.Mean, threads: Int) throws {
        self.base = base
        self.quantization = quantization
        guard case let .fourBit(format, blockSize, doubleQuant) = quantization else {
            decodingAbsmax = []
            fp4NegativeZero = false
            return
        }
        fp4NegativeZero = format == .fp4 && Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: base.info.shape)
        let absmax = try Self.blockAbsmax(of: base, blockSize: blockSize, threads: threads)
        guard doubleQuant else {
            decodingAbsmax = absmax
            return
        }
        let nested = absmax.withUnsafeBufferPointer { DoubleQuantization.quantize(absmax: $0, mean: mean) }
        var decoded = [Float](repeating: 0, count: absmax.count)
        nested.codes.withUnsafeBufferPointer { codes in
            nested.nestedAbsmax.withUnsafeBufferPointer { scales in
                decoded.withUnsafeMutableBufferPointer { DoubleQuantization.dequantize(codes: codes, nestedAbsmax: scales, offset: nested.offset, into: $0.baseAddress!) }
            }
        }
        decodingAbsmax = decoded
    }

    public var info: TensorInfo { base.info }

    public var alignment: Int {
        switch quantization {
        case let .fourBit(_, blockSize, _): return leastCommonMultiple(blockSize, max(1, base.alignment))
        case .int8: return leastCommonMultiple(max(1, info.matrixShape.columns), max(1, base.alignment))
        }
    }

    /// The base's scratch, then the codes and the scales of the range.
    public func scratchBytes(for count: Int) -> Int {
        let codes: Int, scales: Int
        switch quantization {
        case let .fourBit(_, blockSize, _): (codes, scales) = (count / 2 + 1, count / blockSize + 2)
        case .int8: (codes, scales) = (count, count / max(1, info.matrixShape.columns) + 2)
        }
        return Self.rounded(base.scratchBytes(for: count)) + Self.rounded(codes) + scales * 4
    }

    private static func rounded(_ bytes: Int) -> Int { (bytes + 63) / 64 * 64 }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound % alignment == 0, "unaligned round-trip range")
        let baseBytes = Self.rounded(base.scratchBytes(for: range.count))
        try base.readFloats(range, into: destination, scratch: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<baseBytes]))
        roundTrip(destination, range: range, scratch: scratch)
    }

    /// `readFloats`' work on the base's values of `range`, read elsewhere:
    /// quantized and decoded in place. `scratch` as for `readFloats`.
    func roundTrip(_ destination: UnsafeMutablePointer<Float>, range: Range<Int>, scratch: UnsafeMutableRawBufferPointer) {
        guard !range.isEmpty else { return }
        let codes = scratch.baseAddress! + Self.rounded(base.scratchBytes(for: range.count))
        switch quantization {
        case let .fourBit(format, blockSize, _):
            let scales = (codes + Self.rounded(range.count / 2 + 1)).bindMemory(to: Float.self, capacity: range.count / blockSize + 2)
            let packed = codes.bindMemory(to: UInt8.self, capacity: range.count / 2 + 1)
            Blockwise4Bit.quantize(destination, count: range.count, blockSize: blockSize, format: format, packed: packed, absmax: scales)
            decodingAbsmax.withUnsafeBufferPointer { absmax in
                Blockwise4Bit.dequantize(packed: packed, count: range.count, blockSize: blockSize, format: format,
                                         absmax: absmax.baseAddress! + range.lowerBound / blockSize, into: destination, fp4NegativeZero: fp4NegativeZero)
            }
        case .int8:
            let columns = info.matrixShape.columns, rows = range.count / columns
            let scales = (codes + Self.rounded(range.count)).bindMemory(to: Float.self, capacity: rows + 2)
            let values = UnsafeMutableBufferPointer(start: destination, count: range.count)
            if info.dtype != .f16 { FloatConversion.roundTrip(destination, count: range.count, through: .f16) }
            let int8 = UnsafeMutableBufferPointer(start: codes.bindMemory(to: Int8.self, capacity: range.count), count: range.count)
            Int8Vectorwise.quantize(rows: UnsafeBufferPointer(values), rowCount: rows, columns: columns, selection: .none, codes: int8,
                                    rowScales: UnsafeMutableBufferPointer(start: scales, count: rows), outlierValues: UnsafeMutableBufferPointer(start: nil, count: 0))
            Int8Vectorwise.dequantize(codes: UnsafeBufferPointer(int8), rowScales: UnsafeBufferPointer(start: scales, count: rows), rowCount: rows,
                                      columns: columns, outlierColumns: [], outlierValues: UnsafeBufferPointer(start: nil, count: 0), into: values)
        }
    }

    /// Every block's absmax as `Blockwise4Bit.quantize` finds it
    /// (`Blockwise4Bit.absmax`), computed on `threads` threads a tile at a time.
    private static func blockAbsmax(of base: FloatTensorSource, blockSize: Int, threads: Int) throws -> [Float] {
        let n = base.info.elementCount
        var absmax = [Float](repeating: 0, count: max(1, Blockwise4Bit.blockCount(elementCount: n, blockSize: blockSize)))
        let plan = ChunkPlan(elementCount: n, unit: leastCommonMultiple(blockSize, max(1, base.alignment)))
        let slots = max(1, min(plan.chunkCount, 2 * threads))
        let buffers = ChunkBuffers(slots: slots, size: ChunkBuffers.Size(floats: plan.tile, bytes: 0, scratch: max(1, base.scratchBytes(for: plan.tile))))
        try absmax.withUnsafeMutableBufferPointer { absmax in
            try computeChunksInOrder(count: plan.chunkCount, slots: slots, threads: threads, compute: { c, slot in
                let floats = buffers.floats(slot).baseAddress!
                for tile in plan.tiles(of: plan.chunkRange(c)) {
                    try base.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
                    Blockwise4Bit.absmax(floats, count: tile.count, blockSize: blockSize, into: absmax.baseAddress! + tile.lowerBound / blockSize)
                }
            }, inOrder: { _, _ in })
        }
        return absmax
    }
}
