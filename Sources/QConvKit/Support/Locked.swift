import Glibc

/// A value guarded by a mutex, with a condition to wait on: the one lock type
/// of QConvKit (after swift-nio's `NIOLockedValueBox` and `ConditionLock`).
///
/// The mutex and the condition live in the tail of a `ManagedBuffer`, so their
/// address never moves (a `pthread_mutex_t` stored inline in a Swift class may
/// be moved or copied by the compiler). Callers only see closures that run
/// with the lock held.
public final class Locked<Value>: @unchecked Sendable {
    private let storage: LockStorage<Value>

    public init(_ value: Value) {
        storage = LockStorage.make(value)
    }

    /// Runs `body` with the lock held.
    @discardableResult
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try storage.withLockedValue { value, _ in try body(&value) }
    }

    /// Runs `body` with the lock held, then wakes every thread waiting in
    /// `withLock(when:_:)` so that it looks at the value again.
    @discardableResult
    public func withLockWakingWaiters<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try storage.withLockedValue { value, primitives in
            defer { pthread_cond_broadcast(primitives.condition) }
            return try body(&value)
        }
    }

    /// Waits until `ready(value)` holds (releasing the lock meanwhile), then
    /// runs `body` with the lock held.
    @discardableResult
    public func withLock<Result>(when ready: (Value) -> Bool, _ body: (inout Value) throws -> Result) rethrows -> Result {
        try storage.withLockedValue { value, primitives in
            while !ready(value) { pthread_cond_wait(primitives.condition, primitives.mutex) }
            return try body(&value)
        }
    }
}

/// The pthread objects of a `Locked`, at stable addresses.
struct LockPrimitives {
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>
}

/// Header: the guarded value; tail: one mutex and one condition.
final class LockStorage<Value>: ManagedBuffer<Value, LockStorage.Tail> {
    struct Tail {
        var mutex = pthread_mutex_t()
        var condition = pthread_cond_t()
    }

    static func make(_ value: Value) -> LockStorage<Value> {
        let storage = unsafeDowncast(create(minimumCapacity: 1) { _ in value }, to: LockStorage<Value>.self)
        storage.withUnsafeMutablePointerToElements { tail in
            tail.initialize(to: Tail())
            let primitives = Self.primitives(tail)
            pthread_mutex_init(primitives.mutex, nil)
            pthread_cond_init(primitives.condition, nil)
        }
        return storage
    }

    private static func primitives(_ tail: UnsafeMutablePointer<Tail>) -> LockPrimitives {
        let raw = UnsafeMutableRawPointer(tail)
        return LockPrimitives(
            mutex: (raw + MemoryLayout<Tail>.offset(of: \Tail.mutex)!).assumingMemoryBound(to: pthread_mutex_t.self),
            condition: (raw + MemoryLayout<Tail>.offset(of: \Tail.condition)!).assumingMemoryBound(to: pthread_cond_t.self))
    }

    func withLockedValue<Result>(_ body: (inout Value, LockPrimitives) throws -> Result) rethrows -> Result {
        try withUnsafeMutablePointers { value, tail in
            let primitives = Self.primitives(tail)
            pthread_mutex_lock(primitives.mutex)
            defer { pthread_mutex_unlock(primitives.mutex) }
            return try body(&value.pointee, primitives)
        }
    }

    deinit {
        withUnsafeMutablePointerToElements { tail in
            let primitives = Self.primitives(tail)
            pthread_cond_destroy(primitives.condition)
            pthread_mutex_destroy(primitives.mutex)
            _ = tail.deinitialize(count: 1)
        }
    }
}
