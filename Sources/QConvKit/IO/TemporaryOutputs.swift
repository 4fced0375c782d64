import Glibc

/// Every temporary output of this process that still exists: what must be
/// removed when the process is told to stop before it finished.
///
/// `AtomicOutput` creates its temporary file or folder (and the files it
/// creates inside a folder) through `create`, and unregisters them when it
/// commits or discards. The library installs no signal handler: a front end
/// that wants interrupted runs to leave nothing behind calls `removeAll()`
/// from its own signal handling (the qconv executable does, from a thread
/// that waits for SIGINT, SIGTERM and SIGHUP), then ends the process.
public enum TemporaryOutputs {
    static let shared = Registry()

    /// Creates a temporary output with `make`; see `Registry.create`.
    static func create(_ path: String, isDirectory: Bool, with make: () -> Bool) -> Registry.Creation {
        shared.create(path, isDirectory: isDirectory, with: make)
    }

    /// Forgets `path` and every path inside it.
    static func unregister(_ path: String) {
        shared.unregister(path)
    }

    /// The paths registered now, newest first.
    public static var paths: [String] { shared.paths }

    /// Removes every registered temporary output, files first (newest
    /// first), then folders with whatever is still in them. From then on no
    /// temporary output can be created in this process, which is about to end.
    public static func removeAll() {
        shared.removeAll()
    }

    /// The list itself (one per process, `shared`; tests make their own).
    final class Registry: Sendable {
        private struct Entry {
            var path: String
            var isDirectory: Bool
        }

        private struct State {
            var entries: [Entry] = []
            /// `removeAll()` has run: nothing may be created any more.
            var stopping = false
        }

        /// What `create` did.
        enum Creation: Equatable {
            case created
            /// `make` failed with this error; the path is no longer listed.
            case failed(Errno)
            /// `removeAll()` has run; nothing was created.
            case stopping
        }

        private let state = Locked(State())

        /// Creates `path` with `make` (true when it created it; false, with
        /// `errno` set, when not). The path is listed before it is created,
        /// and that exact path is unlisted again when `make` fails. All of it
        /// runs with the lock held, so that a concurrent `removeAll()` either
        /// comes after (and removes what was created) or before (and nothing
        /// is created): no signal can leave a temporary output behind. (`make`
        /// runs with the lock held: one system call, never a call back into
        /// the registry.)
        func create(_ path: String, isDirectory: Bool, with make: () -> Bool) -> Creation {
            state.withLock { state in
                guard !state.stopping else { return .stopping }
                state.entries.append(Entry(path: path, isDirectory: isDirectory))
                guard make() else {
                    let error = Errno.current
                    if let index = state.entries.lastIndex(where: { $0.path == path }) { state.entries.remove(at: index) }
                    return .failed(error)
                }
                return .created
            }
        }

        func register(_ path: String, isDirectory: Bool) {
            state.withLock { $0.entries.append(Entry(path: path, isDirectory: isDirectory)) }
        }

        func unregister(_ path: String) {
            state.withLock { $0.entries.removeAll { $0.path == path || $0.path.hasPrefix(path + "/") } }
        }

        var paths: [String] { state.withLock { $0.entries.reversed().map(\.path) } }

        /// Removes everything listed, with the lock held so that nothing is
        /// created meanwhile, and refuses every later `create`.
        func removeAll() {
            state.withLock { state in
                state.stopping = true
                let all = state.entries
                state.entries.removeAll()
                for entry in all.reversed() where !entry.isDirectory { unlink(entry.path) }
                for entry in all.reversed() where entry.isDirectory { FileSystem.removeItem(entry.path) }
            }
        }
    }
}
