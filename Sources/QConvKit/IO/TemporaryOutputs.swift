import Glibc

/// Every temporary output of this process that still exists: what must be
/// removed when the process is told to stop before it finished.
///
/// `AtomicOutput` registers its temporary file or folder (and the files it
/// creates inside a folder) and unregisters them when it commits or
/// discards. The library installs no signal handler: a front end that wants
/// interrupted runs to leave nothing behind calls `removeAll()` from its own
/// signal handling (the qconv executable does, from a thread that waits for
/// SIGINT, SIGTERM and SIGHUP), then ends the process.
public enum TemporaryOutputs {
    private struct Entry {
        var path: String
        var isDirectory: Bool
    }

    private static let entries = Locked<[Entry]>([])

    static func register(_ path: String, isDirectory: Bool) {
        entries.withLock { $0.append(Entry(path: path, isDirectory: isDirectory)) }
    }

    static func unregister(prefix: String) {
        entries.withLock { $0.removeAll { $0.path.hasPrefix(prefix) } }
    }

    /// The paths registered now, newest first.
    public static var paths: [String] { entries.withLock { $0.reversed().map(\.path) } }

    /// Removes every registered temporary output, files first (newest
    /// first), then folders with whatever is still in them.
    public static func removeAll() {
        let all = entries.withLock { entries -> [Entry] in
            defer { entries.removeAll() }
            return entries
        }
        for entry in all.reversed() where !entry.isDirectory { unlink(entry.path) }
        for entry in all.reversed() where entry.isDirectory { FileSystem.removeItem(entry.path) }
    }
}
