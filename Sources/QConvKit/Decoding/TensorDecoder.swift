/// A stored tensor's values as float32, range by range, whatever its scheme
/// and whatever format holds it: the read half of every scheme.
///
/// Making a decoder checks the checksum of every part that has one (the
/// large bulk part is streamed through xxHash64 in bounded pieces; with
/// `checkingInOrder` it is left to the pipeline reading the values, see
/// `SequentiallyCheckedSource`) and loads and validates the small side data
/// (`SideData`).
public final class TensorDecoder: SequentiallyCheckedSource, @unchecked Sendable {
    public let tensor: ModelTensor
    private let side: SideData
    /// bitsandbytes' CPU kernel decodes FP4's zero code as -0.0 for these shapes; qconv does the same.
    private let fp4NegativeZero: Bool
    /// The bulk part's checksum as it is being checked in order; nil when it
    /// was checked whole when the decoder was made, or has none.
    private var pendingCheck: (hasher: XXHash64, checkedBytes: UInt64)?
    private let checkBuffer: UnsafeMutableRawBufferPointer

    /// - Parameter checkingInOrder: leave the bulk part's checksum to the
    ///   pipeline, which calls `checkBytes(before:)` as it consumes the values
    ///   in order and `finishChecks()` at the end (`dequant`, `verify`): its
    ///   bytes are then hashed while the workers decode them, instead of in
    ///   a pass before (the second read comes from the page cache).
    public init(_ tensor: ModelTensor, checkingInOrder: Bool = false) throws {
        self.tensor = tensor
        checkBuffer = .allocate(byteCount: SequentialWriter.bufferSize, alignment: 64)
        if case .fourBit(let p) = tensor.scheme, p.format == .fp4 {
            fp4NegativeZero = Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: tensor.info.shape)
        } else {
            fp4NegativeZero = false
        }
        do {
            if checkingInOrder && tensor.parts[0].bytes.checksum != nil {
                pendingCheck = (XXHash64(), 0)
            } else {
                try tensor.parts[0].verifyChecksum(buffer: checkBuffer)
            }
            side = try SideData(tensor)
        } catch {
            checkBuffer.deallocate()
            throw error
        }
    }

    deinit { checkBuffer.deallocate() }

    public var info: TensorInfo { tensor.info }

    public var alignment: Int {
        switch tensor.scheme {
        case .raw, .strided, .scaledFP8: return 1
        case .fourBit(let p): return p.blockSize
        case .int8: return max(1, tensor.info.matrixShape.columns)
        }
    }

    public func scratchBytes(for count: Int) -> Int {
        switch tensor.scheme {
        case .raw: return count * (tensor.info.dtype.byteWidth ?? 8)
        // The gathered elements, then a window for the stored bytes they lie in.
        case .strided: return count * (tensor.info.dtype.byteWidth ?? 8) * 4 + 4096
        case .fourBit: return count / 2 + 1
        case .int8, .scaledFP8: return count
        }
    }

    /// Bytes of the bulk part that hold the elements before `element`.
    private func bulkBytes(before element: Int) -> UInt64 {
        switch tensor.scheme {
        case .raw: return UInt64(element * (tensor.info.dtype.byteWidth ?? 8))
        // Never checked in order: no format records a checksum of a view.
        case .strided: return 0
        case .fourBit: return UInt64((element + 1) / 2)
        case .int8, .scaledFP8: return UInt64(element)
        }
    }

    public func checkBytes(before element: Int) throws {
        guard var check = pendingCheck else { return }
        let bulk = tensor.parts[0].bytes
        let end = min(bulk.length, bulkBytes(before: element))
        guard end > check.checkedBytes else { return }
        try bulk.file.stream(from: bulk.offset + check.checkedBytes, length: end - check.checkedBytes, buffer: checkBuffer) { check.hasher.update($0) }
        check.checkedBytes = end
        pendingCheck = check
    }

    public func finishChecks() throws {
        try checkBytes(before: tensor.info.elementCount)
        guard let check = pendingCheck else { return }
        try tensor.parts[0].bytes.check(check.hasher.digest())
        pendingCheck = nil
    }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        precondition(range.lowerBound % alignment == 0, "unaligned decode range")
        guard !range.isEmpty else { return }
        let bulk = tensor.parts[0].stored(named: tensor.name)
        switch tensor.scheme {
        case .raw:
            try bulk.readFloats(range, into: destination, scratch: scratch)
        case .strided(let layout):
            let width = tensor.info.dtype.byteWidth!
            let gathered = scratch.baseAddress!
            try layout.gather(range, shape: tensor.info.shape, width: width, from: bulk.file, first: bulk.offset, into: gathered,
                              window: UnsafeMutableRawBufferPointer(rebasing: scratch[(range.count * width)...]))
            FloatConversion.decode(UnsafeRawPointer(gathered), dtype: tensor.info.dtype, count: range.count, into: destination)
        case .fourBit(let p):
            let byteRange = range.lowerBound / 2..<(range.upperBound + 1) / 2
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<byteRange.count])
            try bulk.readBytes(at: byteRange.lowerBound, into: raw)
            side.absmax.withUnsafeBufferPointer { absmax in
                Blockwise4Bit.dequantize(packed: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: range.count,
                                         blockSize: p.blockSize, format: p.format, absmax: absmax.baseAddress! + range.lowerBound / p.blockSize,
                                         into: destination, fp4NegativeZero: fp4NegativeZero)
            }
        case .scaledFP8(let p):
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<range.count])
            try bulk.readBytes(at: range.lowerBound, into: raw)
            FloatConversion.decode(UnsafeRawPointer(raw.baseAddress!), dtype: p.valuesDType, count: range.count, into: destination)
            side.scales.withUnsafeBufferPointer { scales in
                ScaledFP8.applyScales(destination, range: range, columns: tensor.info.matrixShape.columns, granularity: p.granularity, scales: scales)
            }
        case .int8:
            let columns = tensor.info.matrixShape.columns
            let rows = range.lowerBound / columns..<(range.upperBound + columns - 1) / columns
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<range.count])
            try bulk.readBytes(at: range.lowerBound, into: raw)
            let k = side.outlierColumns.count
            side.rowScales.withUnsafeBufferPointer { scales in
                side.outlierValues.withUnsafeBufferPointer { values in
                    Int8Vectorwise.dequantize(codes: UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: Int8.self), count: range.count),
                                              rowScales: UnsafeBufferPointer(rebasing: scales[rows]), rowCount: rows.count, columns: columns,
                                              outlierColumns: side.outlierColumns,
                                              outlierValues: UnsafeBufferPointer(start: values.baseAddress! + rows.lowerBound * k, count: rows.count * k),
                                              into: UnsafeMutableBufferPointer(start: destination, count: range.count))
                }
            }
        }
    }
}

extension ModelTensor {
    /// The tensor's values as float32: the stored tensor itself when it is
    /// raw and unchecked (a safetensors tensor), else a `TensorDecoder`.
    ///
    /// - Parameter checkingInOrder: see `TensorDecoder.init`; for pipelines
    ///   that read the values once, in order.
    public func values(checkingInOrder: Bool = false) throws -> FloatTensorSource {
        if case .raw = scheme, parts[0].bytes.checksum == nil { return parts[0].stored(named: name) }
        return try TensorDecoder(self, checkingInOrder: checkingInOrder)
    }
}
