import Dispatch

/// Computes a tensor's chunks on all cores and hands the results back in order.
///
/// Every streaming pipeline in qconv (quantize, dequantize, verify, merge,
/// copy) has this shape: cut a tensor into chunks, compute them on all cores,
/// consume them in order. `threads` workers each take the next chunk as soon
/// as they are free and compute it into slot `chunk % slots` with
/// `compute(chunk, slot)`, staying at most `slots` chunks ahead of the
/// consumer; the calling thread hands each finished chunk to
/// `inOrder(chunk, slot)` in chunk order while the workers go on. Memory is
/// bounded by the slots, whatever the tensor's size.
///
/// `compute` and `inOrder` run at the same time on different slots: each may
/// only touch its own slot's buffers and results. The first error stops the
/// work and is rethrown.
public func computeChunksInOrder(
    count chunkCount: Int, slots: Int, threads: Int,
    compute: (_ chunk: Int, _ slot: Int) throws -> Void,
    inOrder: (_ chunk: Int, _ slot: Int) throws -> Void
) throws {
    precondition(slots > 0, "at least one slot")
    guard chunkCount > 0 else { return }
    let workers = max(1, min(threads, chunkCount, slots))
    let schedule = ChunkSchedule(chunkCount: chunkCount, slots: slots)
    try withoutActuallyEscaping(compute) { compute in
        let group = DispatchGroup()
        for _ in 0..<workers {
            DispatchQueue.global().async(group: group) {
                while let chunk = schedule.claim() {
                    do {
                        try compute(chunk, chunk % slots)
                        schedule.computed(chunk)
                    } catch {
                        schedule.fail(error)
                    }
                }
            }
        }
        for chunk in 0..<chunkCount {
            guard schedule.waitUntilComputed(chunk) else { break }
            do {
                try inOrder(chunk, chunk % slots)
            } catch {
                schedule.fail(error)
                break
            }
            schedule.consumed(chunk)
        }
        group.wait()
        if let failure = schedule.failure { throw failure }
    }
}

/// The bookkeeping of `computeChunksInOrder`: which chunk is next, which are
/// computed, how far the consumer has got.
private final class ChunkSchedule: Sendable {
    private struct State {
        var nextChunk = 0
        /// Chunks before this one are consumed; their slots are free.
        var consumed = 0
        var computed: [Bool]
        var failure: Error?
    }

    private let chunkCount: Int
    private let slots: Int
    private let state: Locked<State>

    init(chunkCount: Int, slots: Int) {
        self.chunkCount = chunkCount
        self.slots = slots
        state = Locked(State(computed: [Bool](repeating: false, count: slots)))
    }

    var failure: Error? { state.withLock { $0.failure } }

    /// The next chunk to compute, once its slot is free; nil when all are taken or something failed.
    func claim() -> Int? {
        let chunkCount = chunkCount, slots = slots
        return state.withLock(when: { $0.failure != nil || $0.nextChunk >= chunkCount || $0.nextChunk < $0.consumed + slots }) { state in
            guard state.failure == nil, state.nextChunk < chunkCount else { return nil }
            state.nextChunk += 1
            return state.nextChunk - 1
        }
    }

    func computed(_ chunk: Int) {
        state.withLockWakingWaiters { $0.computed[chunk % slots] = true }
    }

    /// Waits for `chunk` to be computed; false when something failed.
    func waitUntilComputed(_ chunk: Int) -> Bool {
        let slot = chunk % slots
        return state.withLock(when: { $0.failure != nil || $0.computed[slot] }) { $0.failure == nil }
    }

    /// Frees `chunk`'s slot for the chunk `slots` later.
    func consumed(_ chunk: Int) {
        state.withLockWakingWaiters { state in
            state.computed[chunk % slots] = false
            state.consumed = chunk + 1
        }
    }

    func fail(_ error: Error) {
        state.withLockWakingWaiters { state in
            if state.failure == nil { state.failure = error }
        }
    }
}
