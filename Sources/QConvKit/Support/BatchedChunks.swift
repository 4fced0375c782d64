import Dispatch
import Glibc

/// Runs a tensor's chunks on all cores and hands the results back in order.
///
/// Every streaming pipeline in qconv (quantize, dequantize, verify, merge) has
/// the same shape: cut a tensor into chunks, compute chunks on all cores, then
/// write them out in order. `threads` workers each take the next chunk as
/// soon as they are free and compute it into slot `chunk % slots` with
/// `compute(chunk, slot)`, staying at most `slots` chunks ahead of the output;
/// the calling thread hands finished chunks to `emit(chunk, slot)` in chunk
/// order, so writing overlaps computing and nobody waits for a whole batch.
/// Memory is bounded by the slots, whatever the tensor's size.
///
/// `compute` and `emit` run at the same time on different slots: each may
/// only touch its own slot's buffers and results.
public func processChunksInBatches(
    chunkCount: Int, slots: Int, threads: Int,
    compute: (_ chunk: Int, _ slot: Int) throws -> Void,
    emit: (_ chunk: Int, _ slot: Int) throws -> Void
) throws {
    precondition(slots > 0, "at least one slot")
    guard chunkCount > 0 else { return }
    let workers = max(1, min(threads, chunkCount, slots))
    try withoutActuallyEscaping(compute) { compute in
        let pipeline = OrderedPipeline(chunkCount: chunkCount, slots: slots)
        let group = DispatchGroup()
        for _ in 0..<workers {
            DispatchQueue.global().async(group: group) {
                while let chunk = pipeline.claim() {
                    do {
                        try compute(chunk, chunk % slots)
                        pipeline.finish(chunk)
                    } catch {
                        pipeline.fail(error)
                    }
                }
            }
        }
        var failure: Error?
        for chunk in 0..<chunkCount {
            guard pipeline.waitUntilComputed(chunk) else { break }
            do {
                try emit(chunk, chunk % slots)
            } catch {
                pipeline.fail(error)
                break
            }
            pipeline.release(chunk)
        }
        group.wait()
        failure = pipeline.error
        if let failure { throw failure }
    }
}

/// The bookkeeping of `processChunksInBatches`: which chunk is next, which
/// are computed, how far the output has got. One mutex, one condition.
private final class OrderedPipeline: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private let chunkCount: Int
    private let slots: Int
    private var nextChunk = 0
    /// Chunks before this one have been emitted; their slots are free.
    private var emitted = 0
    private var computed: [Bool]
    private(set) var error: Error?

    init(chunkCount: Int, slots: Int) {
        self.chunkCount = chunkCount
        self.slots = slots
        computed = [Bool](repeating: false, count: slots)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// The next chunk to compute, once its slot is free; nil when all are taken or something failed.
    func claim() -> Int? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while error == nil && nextChunk < chunkCount && nextChunk >= emitted + slots {
            pthread_cond_wait(&condition, &mutex)
        }
        guard error == nil, nextChunk < chunkCount else { return nil }
        nextChunk += 1
        return nextChunk - 1
    }

    func finish(_ chunk: Int) {
        pthread_mutex_lock(&mutex)
        computed[chunk % slots] = true
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    /// Waits for `chunk` to be computed; false when something failed.
    func waitUntilComputed(_ chunk: Int) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while error == nil && !computed[chunk % slots] {
            pthread_cond_wait(&condition, &mutex)
        }
        return error == nil
    }

    /// Frees `chunk`'s slot for the chunk `slots` later.
    func release(_ chunk: Int) {
        pthread_mutex_lock(&mutex)
        computed[chunk % slots] = false
        emitted = chunk + 1
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    func fail(_ failure: Error) {
        pthread_mutex_lock(&mutex)
        if error == nil { error = failure }
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }
}

/// Per-slot scratch memory for `processChunksInBatches`, allocated once per
/// command and reused for every tensor.
public final class ChunkBuffers {
    public let slots: Int
    public let floatCapacity: Int
    public let byteCapacity: Int
    private let floatStorage: [UnsafeMutableBufferPointer<Float>]
    private let byteStorage: [UnsafeMutableRawBufferPointer]
    private let scratchStorage: [UnsafeMutableRawBufferPointer]

    /// - Parameters:
    ///   - floats: float32 elements per slot (decoded values).
    ///   - bytes: bytes per slot for results (packed codes, encoded output).
    ///   - scratch: bytes per slot for raw input on its way to float.
    public init(slots: Int, floats: Int, bytes: Int, scratch: Int) {
        self.slots = slots
        floatCapacity = floats
        byteCapacity = bytes
        floatStorage = (0..<slots).map { _ in
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(floats, 1))
            buffer.initialize(repeating: 0)
            return buffer
        }
        byteStorage = (0..<slots).map { _ in .allocate(byteCount: max(bytes, 1), alignment: 64) }
        scratchStorage = (0..<slots).map { _ in .allocate(byteCount: max(scratch, 1), alignment: 64) }
    }

    deinit {
        floatStorage.forEach { $0.deallocate() }
        byteStorage.forEach { $0.deallocate() }
        scratchStorage.forEach { $0.deallocate() }
    }

    public func floats(_ slot: Int) -> UnsafeMutableBufferPointer<Float> { floatStorage[slot] }
    public func bytes(_ slot: Int) -> UnsafeMutableRawBufferPointer { byteStorage[slot] }
    public func scratch(_ slot: Int) -> UnsafeMutableRawBufferPointer { scratchStorage[slot] }
}
