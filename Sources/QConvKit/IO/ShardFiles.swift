/// Where the shard files of a model go, for the writers of sharded formats
/// (`CheckpointWriter`, `BitsandbytesWriter`): one file, the destination
/// itself (`AtomicOutput`), or a model folder (`FolderOutput`: whole, or one
/// job array part's shards, each moved into place once complete). One shard
/// is open at a time.
final class ShardFiles {
    private enum Destination {
        case file(AtomicOutput)
        case folder(FolderOutput)
    }

    private let destination: Destination
    /// The open shard of a folder.
    private var openFile: FolderOutput.File?

    /// One file at `path`.
    init(file path: String, overwrite: Bool, inputs: [String]) throws {
        destination = .file(try AtomicOutput(destination: path, kind: .file, overwrite: overwrite, inputs: inputs))
    }

    /// The shards of a model folder.
    init(folder: FolderOutput) {
        destination = .folder(folder)
    }

    /// The folder, nil for one file.
    var folder: FolderOutput? {
        guard case .folder(let folder) = destination else { return nil }
        return folder
    }

    /// Starts the shard `fileName` (for one file: the file itself).
    func openShard(_ fileName: String) throws -> SequentialWriter {
        precondition(openFile == nil, "the previous shard is still open")
        switch destination {
        case .file(let atomic):
            return try atomic.makeWriter()
        case .folder(let folder):
            let file = try folder.createFile(fileName)
            openFile = file
            return file.writer
        }
    }

    /// Closes the open shard of a folder and, for a part, moves it into place.
    func closeShard() throws {
        try openFile?.commit()
        openFile = nil
    }

    /// Moves the output into place; a folder gets `indexJSON` as its index first.
    func commit(indexJSON: String?) throws {
        switch destination {
        case .file(let atomic):
            try atomic.commit()
        case .folder(let folder):
            if let indexJSON { try folder.writeSharedFile(Checkpoint.indexFileName, bytes: Array(indexJSON.utf8)) }
            try folder.commit()
        }
    }

    /// Removes what is not in place yet.
    func discard() {
        switch destination {
        case .file(let atomic): atomic.discard()
        case .folder(let folder): folder.discard()
        }
    }
}
