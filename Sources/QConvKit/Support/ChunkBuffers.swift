/// Per-slot scratch memory for `computeChunksInOrder`, allocated once per
/// command and reused for every tensor.
public final class ChunkBuffers {
    /// What a pipeline needs per slot.
    public struct Size: Equatable, Sendable {
        /// float32 elements (decoded values).
        public var floats: Int
        /// Bytes for results (packed codes, encoded output).
        public var bytes: Int
        /// Bytes for raw input on its way to float.
        public var scratch: Int

        public init(floats: Int, bytes: Int, scratch: Int) {
            self.floats = floats
            self.bytes = bytes
            self.scratch = scratch
        }

        /// Whether buffers of this size hold `other`.
        public func holds(_ other: Size) -> Bool {
            floats >= other.floats && bytes >= other.bytes && scratch >= other.scratch
        }
    }

    public let slots: Int
    public let size: Size
    private let floatStorage: [UnsafeMutableBufferPointer<Float>]
    private let byteStorage: [UnsafeMutableRawBufferPointer]
    private let scratchStorage: [UnsafeMutableRawBufferPointer]

    public init(slots: Int, size: Size) {
        self.slots = slots
        self.size = size
        floatStorage = (0..<slots).map { _ in
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(size.floats, 1))
            buffer.initialize(repeating: 0)
            return buffer
        }
        byteStorage = (0..<slots).map { _ in .allocate(byteCount: max(size.bytes, 1), alignment: 64) }
        scratchStorage = (0..<slots).map { _ in .allocate(byteCount: max(size.scratch, 1), alignment: 64) }
    }

    /// Buffers for `threads` threads: two slots per thread, so that a chunk
    /// is computed while the one before it is consumed.
    public convenience init(threads: Int, size: Size) {
        self.init(slots: max(2, threads * 2), size: size)
    }

    deinit {
        floatStorage.forEach { $0.deallocate() }
        byteStorage.forEach { $0.deallocate() }
        scratchStorage.forEach { $0.deallocate() }
    }

    /// These buffers when they hold `needed`, else new ones of that size with
    /// as many slots (a row longer than a chunk gets buffers of its own).
    public func fitting(_ needed: Size) -> ChunkBuffers {
        size.holds(needed) ? self : ChunkBuffers(slots: slots, size: needed)
    }

    public var floatCapacity: Int { size.floats }
    public var byteCapacity: Int { size.bytes }

    public func floats(_ slot: Int) -> UnsafeMutableBufferPointer<Float> { floatStorage[slot] }
    public func bytes(_ slot: Int) -> UnsafeMutableRawBufferPointer { byteStorage[slot] }
    public func scratch(_ slot: Int) -> UnsafeMutableRawBufferPointer { scratchStorage[slot] }
}

/// One value per slot of `computeChunksInOrder` (a chunk's partial result),
/// at a stable address: the worker computing a slot writes it while the
/// calling thread reads another, which a Swift array shared between threads
/// would not allow.
public final class SlotValues<Value>: @unchecked Sendable {
    private let storage: UnsafeMutableBufferPointer<Value>

    public init(slots: Int, initial: Value) {
        storage = .allocate(capacity: slots)
        storage.initialize(repeating: initial)
    }

    deinit {
        storage.deinitialize()
        storage.deallocate()
    }

    /// The slot's value; only the thread that owns the slot at the time may touch it.
    /// (Addressed in place, so that `&values[slot]` mutates without a copy.)
    public subscript(slot: Int) -> Value {
        unsafeAddress { UnsafePointer(storage.baseAddress! + slot) }
        unsafeMutableAddress { storage.baseAddress! + slot }
    }
}
