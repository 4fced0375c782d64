import Glibc

/// The destination of a command's output, written under a temporary name
/// beside it and renamed into place only when the command succeeds.
///
/// A failed or interrupted run leaves nothing behind: `discard()` (also run on
/// deinit) removes the temporary file or folder, and every temporary path is
/// listed in `TemporaryOutputs`, which a front end empties when the process
/// is told to stop (SIGINT, SIGTERM). The destination itself is never touched
/// before `commit()`. Temporaries that killed runs left beside the same
/// destination are removed first (`StaleTemporaries`).
public final class AtomicOutput {
    public enum Kind: Sendable { case file, directory }

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
    ///   - overwrite: replace an existing destination.
    ///   - inputs: paths the command reads; the destination may be none of
    ///     them, nor a folder that holds one of them, even with `overwrite`.
    /// - Throws: `OutputError` for a destination that may not be written,
    ///   `IOError` when the temporary output cannot be created.
    public init(destination: String, kind: Kind, overwrite: Bool, inputs: [String]) throws {
        self.destination = destination
        self.kind = kind
        self.overwrite = overwrite
        try Self.checkDestination(destination, kind: kind, overwrite: overwrite, inputs: inputs)

        let directory = FileSystem.directoryName(of: destination)
        guard FileSystem.kind(of: directory) == .directory else {
            throw IOError("create", path: destination, reason: .other("folder '\(directory)' does not exist"))
        }
        StaleTemporaries.remove(for: destination, in: directory)
        temporaryPath = try Self.createTemporary(beside: destination, in: directory, kind: kind)
    }

    deinit { if !finished { discard() } }

    /// Creates `.NAME.qconv-tmp-HOST-PID-N` beside the destination, with the first
    /// free N. Each name is listed in `TemporaryOutputs` before it is created
    /// (and unlisted when it is taken), so that a signal arriving at any
    /// moment finds it there.
    private static func createTemporary(beside destination: String, in directory: String, kind: Kind) throws -> String {
        let prefix = StaleTemporaries.namePrefix(for: destination)
        for attempt in 0..<100 {
            let path = FileSystem.join(directory, "\(prefix)\(getpid())-\(attempt)")
            let creation = TemporaryOutputs.create(path, isDirectory: kind == .directory) {
                guard kind == .file else { return mkdir(path, 0o755) == 0 }
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                guard fd >= 0 else { return false }
                close(fd)
                return true
            }
            switch creation {
            case .created: return path
            case .failed(.fileExists): continue
            case let .failed(error): throw IOError("create", path: destination, errno: error)
            case .stopping: throw IOError("create", path: destination, reason: .other("the process is stopping"))
            }
        }
        throw IOError("create", path: destination, reason: .other("100 temporary names beside it are taken"))
    }

    /// Opens the temporary file for writing (file outputs). Its errors name
    /// the destination, which is what the user asked for.
    public func makeWriter() throws -> SequentialWriter {
        precondition(kind == .file, "makeWriter() is for file outputs")
        let fd = open(temporaryPath, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw IOError("create", path: destination) }
        return SequentialWriter(descriptor: fd, path: destination)
    }

    /// Creates the file `name` inside a folder output. Its errors name the
    /// file as it will be called once the output is in place
    /// (`destination/name`), never the temporary folder.
    public func createFile(named name: String) throws -> SequentialWriter {
        precondition(kind == .directory, "createFile(named:) is for folder outputs")
        let path = FileSystem.join(temporaryPath, name)
        let finalPath = FileSystem.join(destination, name)
        var fd: Int32 = -1
        switch TemporaryOutputs.create(path, isDirectory: false, with: {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            return fd >= 0
        }) {
        case .created: return SequentialWriter(descriptor: fd, path: finalPath)
        case let .failed(error): throw IOError("create", path: finalPath, errno: error)
        case .stopping: throw IOError("create", path: finalPath, reason: .other("the process is stopping"))
        }
    }

    /// Moves the finished output into place. Without `overwrite`, an entry
    /// that appeared at the destination meanwhile (another run's output, a
    /// link) is never replaced: the rename itself refuses to replace where the
    /// system can do that in one step.
    public func commit() throws {
        precondition(!finished, "commit() called twice")
        if overwrite { try replaceDestination() } else { try moveIntoPlace() }
        finished = true
        TemporaryOutputs.unregister(temporaryPath)
    }

    private func moveIntoPlace() throws {
        switch try FileSystem.renameWithoutReplacing(temporaryPath, to: destination) {
        case .renamed: return
        case .destinationExists: throw OutputError.exists(path: destination)
        case .unsupported:
            guard !FileSystem.entryExists(destination) else { throw OutputError.exists(path: destination) }
            guard rename(temporaryPath, destination) == 0 else { throw IOError("rename \(temporaryPath) to", path: destination) }
        }
    }

    /// Replaces whatever is at the destination. rename(2) cannot replace a
    /// non-empty folder, so a folder (or anything, for folder outputs) is
    /// moved aside first and removed after; when another run moves things at
    /// the same time, the steps are tried again a few times.
    private func replaceDestination() throws {
        var displaced: [String] = []
        for attempt in 1...3 {
            if FileSystem.entryExists(destination) && (kind == .directory || FileSystem.kind(of: destination) == .directory) {
                let aside = "\(temporaryPath)-old\(attempt)"
                if rename(destination, aside) == 0 {
                    displaced.append(aside)
                } else if Errno.current != .noSuchFileOrDirectory || attempt == 3 {
                    throw IOError("replace", path: destination)
                }
            }
            if rename(temporaryPath, destination) == 0 { break }
            let error = Errno.current
            let raced = error == .fileExists || error.rawValue == ENOTEMPTY || error.rawValue == EISDIR
            if !raced || attempt == 3 {
                if let first = displaced.first, !FileSystem.entryExists(destination) { rename(first, destination) }
                throw IOError("rename \(temporaryPath) to", path: destination, errno: error)
            }
        }
        for aside in displaced { FileSystem.removeItem(aside) }
    }

    /// Removes the temporary output; the destination is left as it was.
    public func discard() {
        guard !finished else { return }
        finished = true
        FileSystem.removeItem(temporaryPath)
        TemporaryOutputs.unregister(temporaryPath)
    }

    static func checkDestination(_ destination: String, kind: Kind, overwrite: Bool, inputs: [String]) throws {
        // Any entry counts, a dangling symbolic link included (`lstat`).
        guard FileSystem.entryExists(destination) else { return }
        if let target = FileSystem.identity(of: destination) { try checkNotAnInput(target, destination: destination, inputs: inputs) }
        guard overwrite else { throw OutputError.exists(path: destination) }
        let existing = FileSystem.kind(of: destination)
        if kind == .file && existing == .directory { throw OutputError.folderWhereFileGoes(path: destination) }
        // A dangling link (`.missing` through it) may be replaced by either kind.
        if kind == .directory && existing != .directory && existing != .missing { throw OutputError.fileWhereFolderGoes(path: destination) }
    }

    private static func checkNotAnInput(_ target: FileSystem.Identity, destination: String, inputs: [String]) throws {
        for input in inputs {
            // Walk from the input up to the root: the destination may be neither
            // the input nor any folder that contains it.
            var path = FileSystem.canonicalPath(input)
            while true {
                if FileSystem.identity(of: path) == target {
                    throw OutputError.wouldOverwriteInput(path: destination, input: input)
                }
                let parent = FileSystem.directoryName(of: path)
                if parent == path { break }
                path = parent
            }
        }
    }
}

/// Why an output may not be written where it was asked for (exit 2).
public enum OutputError: QConvError, Equatable {
    /// The destination exists and replacing it was not asked for.
    case exists(path: String)
    /// The destination is one of the inputs, or a folder holding one.
    case wouldOverwriteInput(path: String, input: String)
    /// The destination is a folder; the output is a file.
    case folderWhereFileGoes(path: String)
    /// The destination is a file; the output is a folder.
    case fileWhereFolderGoes(path: String)

    public var category: ErrorCategory { .usage }

    public var description: String {
        switch self {
        case let .exists(path): return "\(path): output already exists"
        case let .wouldOverwriteInput(path, input): return "\(path): refusing to write over an input (\(input))"
        case let .folderWhereFileGoes(path): return "\(path): is a folder; the output of this command is a file"
        case let .fileWhereFolderGoes(path): return "\(path): is a file; the output of this command is a folder"
        }
    }
}
