import Glibc

/// A model folder being written (shards, an index, side files), in one of
/// two ways:
///
/// - whole: everything goes into a temporary folder beside the destination,
///   renamed into place by `commit()` (`AtomicOutput`);
/// - one part of a job array (`OutputPart`): the destination folder itself,
///   made if missing and shared with the other parts, which may run at the
///   same time. Each of this part's shard files is written under a temporary
///   name inside it and renamed into place once complete, so a part that dies
///   leaves no partial shard. Files every part writes alike (the index, side
///   files) are written only when missing or different; replacing a
///   different one, like replacing an existing shard of this part, takes `overwrite`.
public final class FolderOutput {
    public let destination: String
    public let part: OutputPart?
    private let overwrite: Bool
    private let inputs: [String]
    /// Whole: the temporary folder.
    private let whole: AtomicOutput?

    public init(destination: String, overwrite: Bool, inputs: [String], part: OutputPart?) throws {
        self.destination = destination
        self.part = part
        self.overwrite = overwrite
        self.inputs = inputs
        guard part != nil else {
            whole = try AtomicOutput(destination: destination, kind: .directory, overwrite: overwrite, inputs: inputs)
            return
        }
        whole = nil
        switch FileSystem.kind(of: destination) {
        case .directory: break
        case .missing:
            let parent = FileSystem.directoryName(of: destination)
            guard FileSystem.kind(of: parent) == .directory else {
                throw IOError("create", path: destination, reason: .other("folder '\(parent)' does not exist"))
            }
            // Another part may make it at the same moment.
            if mkdir(destination, 0o755) != 0 && Errno.current != .fileExists { throw IOError("create", path: destination) }
        case .file, .other:
            throw OutputError.fileWhereFolderGoes(path: destination)
        }
    }

    /// A file of the folder, written front to back, then `commit()`ted.
    public final class File {
        public let writer: SequentialWriter
        private let atomic: AtomicOutput?

        fileprivate init(writer: SequentialWriter, atomic: AtomicOutput?) {
            self.writer = writer
            self.atomic = atomic
        }

        /// Closes the file; for a part, moves it into place.
        public func commit() throws {
            try writer.close()
            try atomic?.commit()
        }
    }

    /// Starts the file `name` (a path relative to the folder).
    public func createFile(_ name: String) throws -> File {
        try createFile(name, replacing: overwrite)
    }

    private func createFile(_ name: String, replacing: Bool) throws -> File {
        if let whole {
            try FileSystem.createFolders(for: name, in: whole.temporaryPath)
            return File(writer: try whole.createFile(named: name), atomic: nil)
        }
        try FileSystem.createFolders(for: name, in: destination)
        let atomic = try AtomicOutput(destination: FileSystem.join(destination, name), kind: .file, overwrite: replacing, inputs: inputs)
        return File(writer: try atomic.makeWriter(), atomic: atomic)
    }

    /// Writes a file every part writes alike. For a part: left alone when the
    /// destination already holds these bytes; written when missing (another
    /// part writing it at the same moment writes the same bytes, and the last
    /// rename wins); replacing different bytes takes `overwrite`.
    public func writeSharedFile(_ name: String, bytes: [UInt8]) throws {
        var replacing = overwrite
        if whole == nil {
            let path = FileSystem.join(destination, name)
            if let existing = try? ReadableFile(path: path) {
                if existing.size == UInt64(bytes.count), (try? existing.readBytes(at: 0, count: bytes.count)) == bytes { return }
            } else {
                replacing = true
            }
        }
        let file = try createFile(name, replacing: replacing)
        try file.writer.write(bytes)
        try file.commit()
    }

    /// Copies a side file into the folder (read whole and checked when it
    /// has a checksum, or written as it was made).
    public func copySideFile(_ side: SideFile) throws {
        guard case .stored(let bytes) = side.contents, bytes.checksum == nil, whole != nil else {
            try writeSharedFile(side.name, bytes: try side.readAll())
            return
        }
        let file = try createFile(side.name)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SequentialWriter.bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        try file.writer.append(contentsOf: bytes.file, offset: bytes.offset, length: bytes.length, buffer: buffer)
        try file.commit()
    }

    /// Moves a whole folder into place (a part's files are in place already).
    public func commit() throws {
        try whole?.commit()
    }

    /// Removes what is not in place yet (a part's open file goes with its `File`).
    public func discard() {
        whole?.discard()
    }
}
