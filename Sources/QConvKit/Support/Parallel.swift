import Dispatch
import Glibc

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads.
///
/// Work is handed out one index at a time from a shared counter, so uneven
/// chunks (a last partial block, a tensor smaller than the rest) balance
/// themselves. The first error thrown stops further work and is rethrown.
public func parallelFor(_ count: Int, threads: Int, _ body: (Int) throws -> Void) throws {
    guard count > 0 else { return }
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { try body(i) }
        return
    }
    let state = ParallelState()
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while let i = state.next(limit: count) {
                do { try body(i) } catch { state.fail(error) }
            }
        }
    }
    if let error = state.error { throw error }
}

/// The number of threads to use when the user did not say: every core.
public var defaultThreadCount: Int { max(1, ProcessInfoShim.activeProcessorCount) }

private final class ParallelState: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var nextIndex = 0
    private(set) var error: Error?

    init() { pthread_mutex_init(&lock, nil) }
    deinit { pthread_mutex_destroy(&lock) }

    func next(limit: Int) -> Int? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard error == nil, nextIndex < limit else { return nil }
        nextIndex += 1
        return nextIndex - 1
    }

    func fail(_ error: Error) {
        pthread_mutex_lock(&lock)
        if self.error == nil { self.error = error }
        pthread_mutex_unlock(&lock)
    }
}

enum ProcessInfoShim {
    static var activeProcessorCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}
