import Glibc

/// The destination of a command's output, written under a temporary name
/// beside it and renamed into place only when the command succeeds.
///
/// A failed or interrupted run leaves nothing behind: `discard()` (also run on
/// deinit and on SIGINT/SIGTERM/SIGHUP) removes the temporary file or folder.
/// SIGXFSZ is ignored, so that a write past the file size limit (`ulimit -f`)
/// fails with EFBIG, an I/O error whose cleanup runs, instead of killing the
/// process. The destination itself is never touched before `commit()`.
public final class AtomicOutput {
    public enum Kind { case file, directory }

    /// The path the user asked for.
    public let destination: String
    /// Where the output is written until `commit()`.
    public let temporaryPath: String
    public let kind: Kind
    private let overwrite: Bool
    private var finished = false

    /// Checks the destination and creates the temporary file or folder.
    ///
    /// - Parameters:
    ///   - overwrite: replace an existing destination (`--force`).
    ///   - inputs: paths the command reads; the destination may be none of
    ///     them, nor a folder that holds one of them, even with `overwrite`.
    public init(destination: String, kind: Kind, overwrite: Bool, inputs: [String]) throws {
        self.destination = destination
        self.kind = kind
        self.overwrite = overwrite
        try Self.checkDestination(destination, kind: kind, overwrite: overwrite, inputs: inputs)

        let directory = FileSystem.directoryName(of: destination)
        guard FileSystem.kind(of: directory) == .directory else {
            throw IOError("create", path: destination, code: ENOENT, detail: "folder '\(directory)' does not exist")
        }
        let base = FileSystem.baseName(of: destination)
        var created: String?
        for attempt in 0..<100 {
            let path = FileSystem.join(directory, ".\(base).qconv-tmp-\(getpid())-\(attempt)")
            if kind == .file {
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                if fd >= 0 { close(fd); created = path; break }
            } else if mkdir(path, 0o755) == 0 {
                created = path
                break
            }
            if errno != EEXIST { throw IOError("create", path: destination) }
        }
        guard let path = created else {
            throw IOError("create", path: destination, code: EEXIST, detail: "100 temporary names beside it are taken")
        }
        temporaryPath = path
        TemporaryFileRegistry.register(path, isDirectory: kind == .directory)
    }

    deinit { if !finished { discard() } }

    /// Opens the temporary file for writing (file outputs). Its errors name
    /// the destination, which is what the user asked for.
    public func makeWriter() throws -> SequentialWriter {
        precondition(kind == .file, "makeWriter() is for file outputs")
        let fd = open(temporaryPath, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw IOError("create", path: destination) }
        return SequentialWriter(descriptor: fd, path: destination)
    }

    /// The temporary path of a file inside a folder output.
    public func path(for name: String) -> String {
        precondition(kind == .directory, "path(for:) is for folder outputs")
        let path = FileSystem.join(temporaryPath, name)
        TemporaryFileRegistry.register(path, isDirectory: false)
        return path
    }

    /// Moves the finished output into place.
    public func commit() throws {
        precondition(!finished, "commit() called twice")
        var displaced: String?
        if FileSystem.exists(destination) {
            guard overwrite else { throw Self.existsError(destination) }
            if FileSystem.kind(of: destination) == .directory || kind == .directory {
                // rename(2) cannot replace a non-empty folder: move the old one aside first.
                let aside = temporaryPath + "-old"
                guard rename(destination, aside) == 0 else { throw IOError("replace", path: destination) }
                displaced = aside
            }
        }
        guard rename(temporaryPath, destination) == 0 else {
            let error = IOError("rename \(temporaryPath) to", path: destination)
            if let displaced { rename(displaced, destination) }
            throw error
        }
        finished = true
        TemporaryFileRegistry.unregister(prefix: temporaryPath)
        if let displaced { FileSystem.removeItem(displaced) }
    }

    /// Removes the temporary output; the destination is left as it was.
    public func discard() {
        guard !finished else { return }
        finished = true
        FileSystem.removeItem(temporaryPath)
        TemporaryFileRegistry.unregister(prefix: temporaryPath)
    }

    static func existsError(_ destination: String) -> UsageError {
        UsageError("\(destination): output already exists; pass --force to replace it")
    }

    static func checkDestination(_ destination: String, kind: Kind, overwrite: Bool, inputs: [String]) throws {
        guard let target = FileSystem.identity(of: destination) else { return }
        for input in inputs {
            // Walk from the input up to the root: the destination may be neither
            // the input nor any folder that contains it.
            var path = FileSystem.canonicalPath(input)
            while true {
                if FileSystem.identity(of: path) == target {
                    throw UsageError("\(destination): refusing to write over an input (\(input))")
                }
                let parent = FileSystem.directoryName(of: path)
                if parent == path { break }
                path = parent
            }
        }
        guard overwrite else { throw existsError(destination) }
        let existing = FileSystem.kind(of: destination)
        if kind == .file && existing == .directory {
            throw UsageError("\(destination): is a folder; the output of this command is a file")
        }
        if kind == .directory && existing != .directory {
            throw UsageError("\(destination): is a file; the output of this command is a folder")
        }
    }
}

/// Temporary outputs that a signal handler must remove before the process dies.
///
/// Kept as C strings in a fixed table so the handler only calls
/// async-signal-safe functions (`unlink`, `rmdir`).
enum TemporaryFileRegistry {
    private static let capacity = 4096
    nonisolated(unsafe) private static var entries = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
    nonisolated(unsafe) private static var isDirectory = UnsafeMutablePointer<Bool>.allocate(capacity: capacity)
    nonisolated(unsafe) private static var count = 0
    nonisolated(unsafe) private static var installed = false

    static func register(_ path: String, isDirectory directory: Bool) {
        installHandlersOnce()
        guard count < capacity else { return }
        isDirectory[count] = directory
        entries[count] = strdup(path)
        count += 1
    }

    static func unregister(prefix: String) {
        var kept = 0
        for i in 0..<count {
            guard let entry = entries[i] else { continue }
            if String(cString: entry).hasPrefix(prefix) {
                free(entry)
            } else {
                entries[kept] = entry
                isDirectory[kept] = isDirectory[i]
                kept += 1
            }
        }
        count = kept
    }

    private static func installHandlersOnce() {
        guard !installed else { return }
        installed = true
        for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
            signal(signalNumber) { received in
                TemporaryFileRegistry.removeAllForSignal()
                signal(received, SIG_DFL)
                raise(received)
            }
        }
        // Past the file size limit, write(2) then fails with EFBIG (an IOError,
        // after which the temporary output is discarded) instead of the
        // process dying of SIGXFSZ with the temporary file left behind.
        signal(SIGXFSZ, SIG_IGN)
    }

    private static func removeAllForSignal() {
        // Files first (newest first), then folders, which are empty by then.
        var i = count - 1
        while i >= 0 {
            if let entry = entries[i], !isDirectory[i] { unlink(entry) }
            i -= 1
        }
        i = count - 1
        while i >= 0 {
            if let entry = entries[i], isDirectory[i] { rmdir(entry) }
            i -= 1
        }
    }
}
