/// NF4 / FP4 with block absmax values stored as float32 or double-quantized:
/// bitsandbytes' `quantize_4bit`, byte for byte.
///
/// The tensor is cut into chunks of whole blocks; each worker decodes and
/// quantizes a chunk a tile at a time (the tile is still in its core's cache
/// when the kernel reads it), writes the packed codes where they belong, and
/// puts the blocks' absmax values straight into the tensor's absmax array.
/// Once every chunk is done the absmax array is written, double-quantized or not.
public struct FourBitEncoder: TensorEncoder {
    public let format: FourBitFormat
    public let blockSize: Int
    public let doubleQuant: Bool
    /// How the double-quantization offset is computed: float64 for qconv
    /// containers, torch's float32 mean for bitsandbytes' layout.
    public let mean: DoubleQuantization.Mean

    public init(format: FourBitFormat, blockSize: Int, doubleQuant: Bool, mean: DoubleQuantization.Mean = .float64) {
        precondition(Blockwise4Bit.supportedBlockSizes.contains(blockSize), "unsupported block size \(blockSize)")
        self.format = format
        self.blockSize = blockSize
        self.doubleQuant = doubleQuant
        self.mean = mean
    }

    public func plannedScheme(for tensor: TensorInfo) -> TensorScheme {
        .fourBit(FourBitParameters(format: format, blockSize: blockSize, blockScales: doubleQuant ? .doubleQuantized(offset: 0) : .float32))
    }

    public var bufferSize: ChunkBuffers.Size {
        ChunkBuffers.Size(floats: ChunkPlan.defaultTileElements, bytes: ChunkPlan.defaultChunkElements / 2,
                          scratch: ChunkPlan.defaultTileElements * 8)
    }

    public func encode(_ values: FloatTensorSource, as tensor: TensorInfo, from file: String, into sink: PartSink,
                       context: EncodingContext) throws -> TensorScheme {
        let n = tensor.elementCount
        // Chunks hold whole blocks and start where the source can start reading.
        let plan = ChunkPlan(elementCount: n, unit: leastCommonMultiple(blockSize, values.alignment))
        let buffers = context.buffers(bufferSize).fitting(ChunkBuffers.Size(
            floats: plan.tile, bytes: Blockwise4Bit.packedByteCount(elementCount: plan.chunk), scratch: values.scratchBytes(for: plan.tile)))
        let absmax = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, Blockwise4Bit.blockCount(elementCount: n, blockSize: blockSize)))
        defer { absmax.deallocate() }
        absmax.initialize(repeating: 0)
        let firstBad = SlotValues<NonFiniteValue?>(slots: buffers.slots, initial: nil)
        let parts = plannedScheme(for: tensor).parts(for: tensor)
        let codes = try sink.reserve(parts[0])
        func packed(_ c: Int, _ slot: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<Blockwise4Bit.packedByteCount(elementCount: plan.chunkRange(c).count)])
        }
        try computeChunksInOrder(count: plan.chunkCount, slots: buffers.slots, threads: context.threads, compute: { c, slot in
            let range = plan.chunkRange(c)
            firstBad[slot] = try quantizeChunk(range, of: values, plan: plan, buffers: buffers, slot: slot, absmax: absmax,
                                               checkFinite: !context.allowNonfinite)
            if firstBad[slot] == nil { try codes.write(packed(c, slot), at: range.lowerBound / 2) }
        }, inOrder: { c, slot in
            if let bad = firstBad[slot] { throw bad.error(file: file, tensor: tensor.name) }
            if sink.needsBytesInOrder { sink.hashInOrder(packed(c, slot)) }
        })
        try sink.endReserved()
        guard doubleQuant else {
            try sink.write(parts[1], bytes: UnsafeRawBufferPointer(absmax))
            return .fourBit(FourBitParameters(format: format, blockSize: blockSize, blockScales: .float32))
        }
        let nested = DoubleQuantization.quantize(absmax: UnsafeBufferPointer(absmax), mean: mean)
        try sink.write(parts[1], array: nested.codes)
        try sink.write(parts[2], array: nested.nestedAbsmax)
        return .fourBit(FourBitParameters(format: format, blockSize: blockSize, blockScales: .doubleQuantized(offset: nested.offset)))
    }

    /// Quantizes the elements of `range` a tile at a time into the slot's byte
    /// buffer, and their blocks' absmax values into `absmax`. Returns the first
    /// NaN or infinity when `checkFinite` (the chunk is then incomplete).
    private func quantizeChunk(_ range: Range<Int>, of values: FloatTensorSource, plan: ChunkPlan, buffers: ChunkBuffers, slot: Int,
                               absmax: UnsafeMutableBufferPointer<Float>, checkFinite: Bool) throws -> NonFiniteValue? {
        let floats = buffers.floats(slot).baseAddress!
        let packed = buffers.bytes(slot).baseAddress!.assumingMemoryBound(to: UInt8.self)
        for tile in plan.tiles(of: range) {
            try values.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
            let scales = absmax.baseAddress! + tile.lowerBound / blockSize
            Blockwise4Bit.quantize(floats, count: tile.count, blockSize: blockSize, format: format,
                                   packed: packed + (tile.lowerBound - range.lowerBound) / 2, absmax: scales)
            // A NaN or infinity makes its block's absmax non-finite: only then look for it.
            if checkFinite, !FiniteChecks.allFinite(UnsafeBufferPointer(start: scales, count: divideRoundingUp(tile.count, blockSize))),
               let bad = FiniteChecks.firstNonFinite(UnsafeBufferPointer(start: floats, count: tile.count)) {
                return NonFiniteValue(index: tile.lowerBound + bad, value: floats[bad], overflowsFloat16: false)
            }
        }
        return nil
    }
}

/// A NaN or infinity an encoder found: where, and what it was.
struct NonFiniteValue {
    var index: Int
    var value: Float
    /// A finite value that became infinite when rounded to float16 (int8).
    var overflowsFloat16: Bool

    func error(file: String, tensor: String) -> ConversionError {
        let text = value.isNaN ? "NaN" : "\(value)"
        return overflowsFloat16 ? .float16Overflow(file: file, tensor: tensor, index: index, value: text)
            : .nonFiniteValue(file: file, tensor: tensor, index: index, value: text)
    }
}

extension FourBitEncoder {
    /// The scheme `encode` will return for these values, computed first: with
    /// double quantization its offset, the mean of the block absmax values,
    /// which a layout that records it ahead of the data needs (bitsandbytes'
    /// quant-state blob, whose length depends on it). A pass over the values
    /// that only takes block maxima, on all cores.
    public func finalScheme(for makeValues: () throws -> FloatTensorSource, as tensor: TensorInfo, context: EncodingContext) throws -> TensorScheme? {
        guard doubleQuant else { return plannedScheme(for: tensor) }
        let values = try makeValues()
        let n = tensor.elementCount
        let plan = ChunkPlan(elementCount: n, unit: leastCommonMultiple(blockSize, values.alignment))
        let buffers = context.buffers(bufferSize).fitting(ChunkBuffers.Size(floats: plan.tile, bytes: 0, scratch: values.scratchBytes(for: plan.tile)))
        let blocks = Blockwise4Bit.blockCount(elementCount: n, blockSize: blockSize)
        let absmax = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, blocks))
        defer { absmax.deallocate() }
        try computeChunksInOrder(count: plan.chunkCount, slots: buffers.slots, threads: context.threads, compute: { c, slot in
            let floats = buffers.floats(slot).baseAddress!
            for tile in plan.tiles(of: plan.chunkRange(c)) {
                try values.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
                Blockwise4Bit.absmax(floats, count: tile.count, blockSize: blockSize, into: absmax.baseAddress! + tile.lowerBound / blockSize)
            }
        }, inOrder: { _, _ in })
        let offset = DoubleQuantization.offset(absmax: UnsafeBufferPointer(rebasing: absmax[0..<blocks]), mean: mean)
        return .fourBit(FourBitParameters(format: format, blockSize: blockSize, blockScales: .doubleQuantized(offset: offset)))
    }
}
