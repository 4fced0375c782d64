import Glibc

/// A one-line progress display on stderr, shown only when stderr is a
/// terminal and the user did not ask for `--quiet`.
///
/// `advance` may be called from several threads at once.
public final class Progress: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private let enabled: Bool
    private let label: String
    private let total: UInt64
    private var done: UInt64 = 0
    private var lastDraw: UInt64 = 0
    private var drew = false

    /// - Parameters:
    ///   - total: units of work (bytes, usually) for the percentage.
    ///   - quiet: `--quiet` was given.
    public init(label: String, total: UInt64, quiet: Bool) {
        self.label = label
        self.total = max(total, 1)
        enabled = !quiet && isatty(2) != 0
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

    /// Records `amount` more units done and redraws at most ten times a second.
    public func advance(by amount: UInt64, item: String = "") {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        done += amount
        guard enabled else { return }
        let now = UInt64(monotonicSeconds() * 1000)
        guard now - lastDraw >= 100 || done >= total else { return }
        lastDraw = now
        let percent = min(100, done * 100 / total)
        var line = "\r\(label) \(percent)% \(item)"
        if line.count > 100 { line = String(line.prefix(100)) }
        fputs(line + "\u{1B}[K", stderr)
        drew = true
    }

    /// Clears the line so the final report starts on a clean line.
    public func finish() {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard enabled, drew else { return }
        fputs("\r\u{1B}[K", stderr)
    }
}
