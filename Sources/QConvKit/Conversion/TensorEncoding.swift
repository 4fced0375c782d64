/// Writing float32 values out as safetensors data: the last step of
/// `dequant` and of `merge-lora`.
public enum TensorEncoding {
    /// Elements per chunk handed to the writer.
    static let chunkElements = 1 << 20
    /// Elements read and encoded at once by one thread: small enough to stay
    /// in the core's cache between decoding and encoding.
    static let tileElements = 1 << 14

    /// Buffers for `write`: a few chunks per thread, with room for tiles of
    /// sources that read several long rows at once (a merge's `down_proj`).
    public static func makeBuffers(threads: Int) -> ChunkBuffers {
        ChunkBuffers(slots: max(2, threads * 2), floats: tileElements * 2, bytes: chunkElements * 4, scratch: tileElements * 16)
    }

    /// Writes `source` encoded as `dtype` (F32, F16, BF16 or F64) into `region`
    /// (a tensor's bytes in a checkpoint or container writer), on all cores:
    /// each worker writes the tiles it encodes while they are in its cache.
    ///
    /// - Parameters:
    ///   - inOrder: sees every chunk's bytes in order on the calling thread
    ///     (a container part's checksum).
    ///   - consumed: told, in order on the calling thread, the end of each
    ///     range written (a container decoder checks its checksum there).
    /// - Returns: how many written values are NaN or infinite (a finite
    ///   float32 can overflow F16), for callers that must refuse them.
    @discardableResult
    public static func write(_ source: FloatTensorSource, as dtype: DType, into region: OutputRegion,
                             buffers sharedBuffers: ChunkBuffers, threads: Int,
                             inOrder: ((UnsafeRawBufferPointer) throws -> Void)? = nil,
                             consumed: ((_ end: Int) throws -> Void)? = nil) throws -> Int {
        precondition(dtype.isEncodableFromFloat, "cannot encode \(dtype.rawValue)")
        let n = source.info.elementCount
        precondition(region.length == UInt64(n * (dtype.byteWidth ?? 4)), "region does not fit \(source.info.name) as \(dtype.rawValue)")
        let width = dtype.byteWidth ?? 4
        let tile = source.chunkElements(limit: tileElements)
        let chunk = max(tile, sharedBuffers.byteCapacity / width / tile * tile)
        // A row longer than the shared buffers (or a whole-tensor source) gets buffers of its own.
        let buffers = tile <= sharedBuffers.floatCapacity && source.scratchBytes(for: tile) <= sharedBuffers.scratch(0).count
            && chunk * width <= sharedBuffers.byteCapacity ? sharedBuffers
            : ChunkBuffers(slots: sharedBuffers.slots, floats: tile, bytes: chunk * width, scratch: source.scratchBytes(for: tile))
        var nonFinite = [Int](repeating: 0, count: buffers.slots)
        var total = 0
        try nonFinite.withUnsafeMutableBufferPointer { nonFinite in
            try processChunksInBatches(chunkCount: (n + chunk - 1) / chunk, slots: buffers.slots, threads: threads, compute: { c, slot in
                let range = c * chunk..<min(n, (c + 1) * chunk)
                let floats = buffers.floats(slot).baseAddress!
                let output = buffers.bytes(slot).baseAddress!
                nonFinite[slot] = 0
                // Encoded bytes are written about 256 KB at a time, while still in this core's cache.
                var unwritten = range.lowerBound
                for start in stride(from: range.lowerBound, to: range.upperBound, by: tile) {
                    let count = min(tile, range.upperBound - start)
                    try source.readFloats(start..<start + count, into: floats, scratch: buffers.scratch(slot))
                    let encoded = output + (start - range.lowerBound) * width
                    FloatConversion.encode(floats, count: count, as: dtype, into: encoded)
                    nonFinite[slot] += FiniteChecks.nonFiniteCount(encoded: encoded, dtype: dtype, count: count)
                    let end = start + count
                    if (end - unwritten) * width >= SequentialWriter.bufferSize || end == range.upperBound {
                        try region.write(UnsafeRawBufferPointer(start: output + (unwritten - range.lowerBound) * width, count: (end - unwritten) * width),
                                         at: unwritten * width)
                        unwritten = end
                    }
                }
            }, emit: { c, slot in
                let count = min(n, (c + 1) * chunk) - c * chunk
                total += nonFinite[slot]
                try inOrder?(UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<count * width]))
                try consumed?(c * chunk + count)
            })
        }
        return total
    }
}
