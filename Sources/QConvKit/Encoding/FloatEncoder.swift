/// Float32 values written out in a float dtype (F32, F16, BF16 or F64), as a
/// raw tensor: what `dequant` writes, and every tensor a merge changes in an
/// unquantized output.
///
/// Each worker decodes a tile, encodes it into its chunk's bytes and writes
/// them about 256 KB at a time, while they are still in its core's cache.
public struct FloatEncoder: TensorEncoder {
    public let dtype: DType

    public init(dtype: DType) {
        precondition(dtype.isEncodableFromFloat, "cannot encode \(dtype.rawValue)")
        self.dtype = dtype
    }

    public func plannedScheme(for tensor: TensorInfo) -> TensorScheme { .raw }

    public func finalScheme(for values: () throws -> FloatTensorSource, as tensor: TensorInfo, context: EncodingContext) throws -> TensorScheme? { .raw }

    /// Room for tiles of sources that read several long rows at once (a merge's `down_proj`).
    public var bufferSize: ChunkBuffers.Size {
        ChunkBuffers.Size(floats: ChunkPlan.defaultTileElements * 2, bytes: ChunkPlan.defaultChunkElements * 4,
                          scratch: ChunkPlan.defaultTileElements * 16)
    }

    public func encode(_ values: FloatTensorSource, as tensor: TensorInfo, from file: String, into sink: PartSink,
                       context: EncodingContext) throws -> TensorScheme {
        precondition(tensor.dtype == dtype && values.info.elementCount == tensor.elementCount, "\(tensor.name) is not \(dtype.rawValue) values of its shape")
        let region = try sink.reserve(PartLayout(.data, dtype, tensor.shape))
        let nonFinite = try write(values, into: region, context: context, inOrder: sink.needsBytesInOrder ? { sink.hashInOrder($0) } : nil)
        try sink.endReserved()
        if nonFinite > 0 && !context.allowNonfinite { throw ConversionError.nonFiniteResults(tensor: tensor.name, count: nonFinite) }
        return .raw
    }

    /// Writes `values` encoded as `dtype` into `region`, on all cores.
    ///
    /// - Parameter inOrder: sees every chunk's bytes in order on the calling
    ///   thread (a container part's checksum).
    /// - Returns: how many written values are NaN or infinite (a finite
    ///   float32 can overflow F16).
    func write(_ values: FloatTensorSource, into region: OutputRegion, context: EncodingContext,
               inOrder: ((UnsafeRawBufferPointer) -> Void)?) throws -> Int {
        let width = dtype.byteWidth!
        let plan = ChunkPlan(elementCount: values.info.elementCount, unit: values.alignment, chunkLimit: bufferSize.bytes / width)
        // A row longer than the shared buffers gets buffers of its own.
        let buffers = context.buffers(bufferSize).fitting(ChunkBuffers.Size(floats: plan.tile, bytes: plan.chunk * width,
                                                                            scratch: values.scratchBytes(for: plan.tile)))
        let nonFinite = SlotValues(slots: buffers.slots, initial: 0)
        // A container decoder that left its checksum to the reader is checked in order, here.
        let checked = values as? SequentiallyCheckedSource
        var total = 0
        try computeChunksInOrder(count: plan.chunkCount, slots: buffers.slots, threads: context.threads, compute: { c, slot in
            nonFinite[slot] = try encodeChunk(plan.chunkRange(c), of: values, plan: plan, buffers: buffers, slot: slot, into: region,
                                              keepingBytes: inOrder != nil)
        }, inOrder: { c, slot in
            let range = plan.chunkRange(c)
            total += nonFinite[slot]
            inOrder?(UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<range.count * width]))
            try checked?.checkBytes(before: range.upperBound)
        })
        try checked?.finishChecks()
        return total
    }

    /// Decodes and encodes `range` a tile at a time into the slot's bytes and
    /// writes them about 256 KB at a time; returns the count of non-finite values written.
    ///
    /// - Parameter keepingBytes: the chunk's bytes stay in the slot's buffer
    ///   for `inOrder`; otherwise the buffer's first 256 KB or so are used
    ///   over again after each write, so that the encoded bytes are written
    ///   while they are still in the core's cache.
    private func encodeChunk(_ range: Range<Int>, of values: FloatTensorSource, plan: ChunkPlan, buffers: ChunkBuffers, slot: Int,
                             into region: OutputRegion, keepingBytes: Bool) throws -> Int {
        let width = dtype.byteWidth!
        let floats = buffers.floats(slot).baseAddress!
        let output = buffers.bytes(slot).baseAddress!
        var nonFinite = 0
        var unwritten = range.lowerBound
        // The element whose bytes are at the start of the buffer.
        var bufferStart = range.lowerBound
        for tile in plan.tiles(of: range) {
            try values.readFloats(tile, into: floats, scratch: buffers.scratch(slot))
            let encoded = output + (tile.lowerBound - bufferStart) * width
            FloatConversion.encode(floats, count: tile.count, as: dtype, into: encoded)
            nonFinite += FiniteChecks.nonFiniteCount(encoded: encoded, dtype: dtype, count: tile.count)
            if (tile.upperBound - unwritten) * width >= SequentialWriter.bufferSize || tile.upperBound == range.upperBound {
                try region.write(UnsafeRawBufferPointer(start: output + (unwritten - bufferStart) * width, count: (tile.upperBound - unwritten) * width),
                                 at: unwritten * width)
                unwritten = tile.upperBound
                if !keepingBytes { bufferStart = unwritten }
            }
        }
        return nonFinite
    }
}

/// A source whose stored bytes are checked against a checksum as a pipeline
/// reads it in order (a container tensor decoded once, by `dequant` or
/// `verify`), instead of in a pass before: the calling thread hashes the
/// part while the workers decode it. Output written from the values
/// meanwhile is discarded when the check fails.
public protocol SequentiallyCheckedSource: FloatTensorSource {
    /// Checks the stored bytes that hold the elements before `element`.
    func checkBytes(before element: Int) throws
    /// Checks the rest and throws when the stored bytes are damaged.
    func finishChecks() throws
}
