import Glibc
import QConvKit

/// The progress line on stderr: drawn only when stderr is a terminal, at
/// most ten times a second, cleared when the work is over so that the report
/// starts on a clean line.
final class ProgressLine: Sendable {
    private struct State {
        var lastDraw: UInt64 = 0
        var drew = false
    }

    private let state = Locked(State())

    /// A handler that draws the line, or nil when stderr is not a terminal.
    static func handler() -> ProgressHandler? {
        guard isatty(2) != 0 else { return nil }
        let line = ProgressLine()
        return { line.show($0) }
    }

    func show(_ event: ProgressEvent) {
        state.withLock { state in
            switch event {
            case let .advanced(label, done, total, item):
                let now = UInt64(monotonicSeconds() * 1000)
                guard now - state.lastDraw >= 100 || done >= total else { return }
                state.lastDraw = now
                let percent = min(100, done * 100 / max(total, 1))
                var line = "\r\(label) \(percent)% \(item)"
                if line.count > 100 { line = String(line.prefix(100)) }
                fputs(line + "\u{1B}[K", stderr)
                state.drew = true
            case .finished:
                guard state.drew else { return }
                fputs("\r\u{1B}[K", stderr)
                state.drew = false
            }
        }
    }
}
