/// What a long-running library call tells its caller about its progress.
///
/// The library never draws anything: a command passes a `ProgressHandler`,
/// and the command-line front end decides whether and how to show it (a line
/// on a terminal, nothing in a pipe or with `quiet`).
public enum ProgressEvent: Sendable, Equatable {
    /// `done` of `total` units (bytes, usually) are finished; `item` is what
    /// was finished last (a tensor name), for display.
    case advanced(label: String, done: UInt64, total: UInt64, item: String)
    /// The work is over (finished or failed): a display clears itself.
    case finished(label: String)
}

/// Receives `ProgressEvent`s; called from any thread, one call at a time.
public typealias ProgressHandler = @Sendable (ProgressEvent) -> Void

/// Counts work done on behalf of a `ProgressHandler`; `advance` may be called
/// from several threads at once.
public final class ProgressCounter: Sendable {
    private let label: String
    private let total: UInt64
    private let handler: ProgressHandler?
    private let done = Locked<UInt64>(0)

    /// - Parameters:
    ///   - total: units of work (bytes, usually).
    ///   - handler: nil counts nothing and reports nothing.
    public init(label: String, total: UInt64, handler: ProgressHandler?) {
        self.label = label
        self.total = total
        self.handler = handler
    }

    /// Records `amount` more units done.
    public func advance(by amount: UInt64, item: String = "") {
        guard let handler else { return }
        done.withLock { done in
            done += amount
            handler(.advanced(label: label, done: done, total: total, item: item))
        }
    }

    /// Tells the handler the work is over.
    public func finish() {
        guard let handler else { return }
        done.withLock { _ in handler(.finished(label: label)) }
    }
}
