import Glibc
import QConvKit

/// Where a command's output goes: results on stdout, errors on stderr.
struct Console {
    /// `--quiet`: no text report (JSON and errors are still printed).
    var quiet = false

    /// Human-readable output; suppressed by `--quiet`.
    func say(_ text: String) {
        guard !quiet else { return }
        write(text + "\n")
    }

    /// Machine-readable output; printed even with `--quiet`.
    func printJSON(_ value: JSONValue) {
        write(JSONWriter.serialize(value, style: .indented) + "\n")
    }

    func write(_ text: String) {
        fputs(text, stdout)
    }

    /// Something the user should know that is not an error (stderr, one line; not printed with `--quiet`).
    static func note(_ message: String) {
        fflush(stdout)
        fputs("qconv: note: \(message)\n", stderr)
    }

    static func error(_ message: String) {
        fflush(stdout)
        // One line per error, as scripts expect; continuation lines (hints) are indented.
        let lines = message.split(separator: "\n", omittingEmptySubsequences: false)
        fputs("qconv: error: \(lines[0])\n", stderr)
        for line in lines.dropFirst() { fputs("  \(line)\n", stderr) }
    }
}
