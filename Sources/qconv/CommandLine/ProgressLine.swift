import Glibc
import QConvCommandLine
import QConvKit

/// The progress line on stderr: drawn only when stderr is a terminal, at
/// most ten times a second, cut to the terminal's width (the middle of a long
/// tensor name gives way), and cleared when the work is over so that the
/// report starts on a clean line.
final class ProgressLine: Sendable {
    private struct State {
        var lastDraw: UInt64 = 0
        var drew = false
    }

    private let state = Locked(State())

    /// The line now on the terminal, if any: what an interruption clears.
    private static let current = Locked<ProgressLine?>(nil)

    /// A handler that draws the line, or nil when stderr is not a terminal.
    static func handler() -> ProgressHandler? {
        guard isatty(2) != 0 else { return nil }
        let line = ProgressLine()
        current.withLock { $0 = line }
        return { line.show($0) }
    }

    /// Clears the line of the current progress, if one is drawn (Ctrl-C).
    static func clearForInterruption() {
        current.withLock { $0?.clear() }
    }

    func show(_ event: ProgressEvent) {
        state.withLock { state in
            switch event {
            case let .advanced(label, done, total, item):
                let now = UInt64(monotonicSeconds() * 1000)
                guard now - state.lastDraw >= 100 || done >= total else { return }
                state.lastDraw = now
                let percent = min(100, done * 100 / max(total, 1))
                // The width is read at every draw (at most ten a second), so a resized window (SIGWINCH) is followed.
                fputs("\r" + TerminalText.fitted("\(label) \(percent)%", item, width: Self.terminalWidth()) + "\u{1B}[K", stderr)
                state.drew = true
            case .finished:
                guard state.drew else { return }
                fputs("\r\u{1B}[K", stderr)
                state.drew = false
            }
        }
    }

    private func clear() {
        state.withLock { state in
            guard state.drew else { return }
            fputs("\r\u{1B}[K", stderr)
            state.drew = false
        }
    }

    /// The columns of the terminal on stderr (80 when it does not say).
    static func terminalWidth() -> Int {
        var size = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }
}
