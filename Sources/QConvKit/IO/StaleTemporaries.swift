import Glibc

/// Temporary outputs that a killed run left behind. A run stopped by
/// SIGINT, SIGTERM or SIGHUP removes its own (`TemporaryOutputs`), but one
/// killed with SIGKILL, or a machine that lost power, leaves
/// `.NAME.qconv-tmp-HOST-PID-N` (and, while a folder was being replaced,
/// `.NAME.qconv-tmp-HOST-PID-N-oldK`) beside the destination.
///
/// The next run on the same host that writes the same destination removes
/// those whose process no longer exists (`kill(PID, 0)` fails with ESRCH): a
/// temporary of a live process, or of a process qconv may not signal
/// (another user), is left alone, and so is every temporary of another host
/// (parts of a job array on several machines share an output folder, and a
/// PID means nothing across machines). Each removal is reported to the
/// handler a front end sets.
public enum StaleTemporaries {
    /// A stale temporary output that was removed.
    public struct Removal: Sendable, Equatable {
        public let path: String
        /// The process that created it, which no longer exists.
        public let processID: Int32
    }

    private static let handler = Locked<(@Sendable (Removal) -> Void)?>(nil)

    /// Sets what is called with each removal (nil: nothing). The library never prints.
    public static func setHandler(_ newHandler: (@Sendable (Removal) -> Void)?) {
        handler.withLock { $0 = newHandler }
    }

    /// This host's name as it appears in temporary names: `gethostname`,
    /// with every character but letters, digits, `.` and `_` turned into `_`
    /// (a `-` included, so that the name's fields stay apart).
    public static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        let name = gethostname(&buffer, buffer.count - 1) == 0 ? String(cString: buffer) : ""
        let kept = name.unicodeScalars.map { scalar -> Character in
            ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "." || scalar == "_"
                ? Character(scalar) : "_"
        }
        return kept.isEmpty ? "localhost" : String(kept)
    }()

    /// The start of the names of this host's temporaries beside
    /// `destination`: `.NAME.qconv-tmp-HOST-`, followed by `PID-N`.
    static func namePrefix(for destination: String) -> String {
        ".\(FileSystem.baseName(of: destination)).qconv-tmp-\(hostName)-"
    }

    /// Removes this host's stale temporaries of `destination` (in `directory`, its folder).
    @discardableResult
    static func remove(for destination: String, in directory: String) -> [Removal] {
        let prefix = namePrefix(for: destination)
        guard let names = try? FileSystem.contents(of: directory) else { return [] }
        var removed: [Removal] = []
        for name in names where name.hasPrefix(prefix) {
            guard let pid = processID(inSuffix: name.dropFirst(prefix.count)), pid != getpid(), !isRunning(pid) else { continue }
            let path = FileSystem.join(directory, name)
            FileSystem.removeItem(path)
            guard !FileSystem.entryExists(path) else { continue }
            let removal = Removal(path: path, processID: pid)
            removed.append(removal)
            handler.withLock { $0 }?(removal)
        }
        return removed
    }

    /// The PID of `PID-N` or `PID-N-oldK`; nil for any other name.
    static func processID(inSuffix suffix: Substring) -> Int32? {
        let fields = suffix.split(separator: "-", omittingEmptySubsequences: false)
        let digits = { (field: Substring) in !field.isEmpty && field.allSatisfy { ("0"..."9").contains($0) } }
        guard fields.count == 2 || (fields.count == 3 && fields[2].hasPrefix("old") && digits(fields[2].dropFirst(3))),
              digits(fields[0]), digits(fields[1]), let pid = Int32(fields[0]), pid > 0 else { return nil }
        return pid
    }

    private static func isRunning(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno != ESRCH
    }
}
