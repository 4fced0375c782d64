/// Copies `length` bytes of `file` from `offset` into `region`: workers read
/// pieces of at most 256 KB (see `SequentialWriter.bufferSize`) into the slots'
/// byte buffers and write them while they are in their core's cache; the
/// calling thread sees every piece, in order, through `inOrder` (to compute a
/// checksum on the way).
///
/// The copy of a tensor stored as it is (raw container parts, `dequant` of
/// raw tensors): reading and writing run on all cores, once.
public func streamBytes(of file: ReadableFile, from offset: UInt64, length: UInt64, into region: OutputRegion,
                        buffers: ChunkBuffers, threads: Int, inOrder: ((UnsafeRawBufferPointer) throws -> Void)? = nil) throws {
    precondition(region.length == length, "region of \(region.length) bytes for \(length)")
    let step = UInt64(min(buffers.byteCapacity, SequentialWriter.bufferSize))
    let count = Int((length + step - 1) / step)
    func piece(_ chunk: Int, _ slot: Int) -> UnsafeMutableRawBufferPointer {
        let start = UInt64(chunk) * step
        return UnsafeMutableRawBufferPointer(rebasing: buffers.bytes(slot)[0..<Int(min(step, length - start))])
    }
    try computeChunksInOrder(count: count, slots: buffers.slots, threads: threads, compute: { chunk, slot in
        let bytes = piece(chunk, slot)
        try file.read(at: offset + UInt64(chunk) * step, into: bytes)
        try region.write(UnsafeRawBufferPointer(bytes), at: chunk * Int(step))
    }, inOrder: { chunk, slot in
        try inOrder?(UnsafeRawBufferPointer(piece(chunk, slot)))
    })
}
