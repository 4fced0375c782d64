import Dispatch
import Glibc

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads.
///
/// Work is handed out one index at a time from a shared counter, so uneven
/// items (a last partial block, a tensor smaller than the rest) balance
/// themselves. The first error thrown stops further work and is rethrown.
public func parallelFor(_ count: Int, threads: Int, _ body: (Int) throws -> Void) throws {
    guard count > 0 else { return }
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { try body(i) }
        return
    }
    let state = Locked<(next: Int, failure: Error?)>((0, nil))
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while let i = state.withLock({ state -> Int? in
                guard state.failure == nil, state.next < count else { return nil }
                state.next += 1
                return state.next - 1
            }) {
                do { try body(i) } catch { state.withLock { if $0.failure == nil { $0.failure = error } } }
            }
        }
    }
    if let error = state.withLock({ $0.failure }) { throw error }
}

/// The number of threads to use when the caller does not say: every online core.
public var defaultThreadCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
