/// Reads safetensors files and model folders (single file or sharded with
/// an index) as a `Model`: every tensor raw, in the shards' order.
public enum SafeTensorsReader: ModelReader {
    /// Any regular file no other reader claims (its header says whether it
    /// is one), or a folder with an index or safetensors files.
    public static func recognize(_ probe: FormatProbe) -> ModelFormat? {
        switch probe.kind {
        case .file:
            return .safetensorsFile
        case .folder(let names):
            if names.contains(Checkpoint.indexFileName) { return .safetensorsShardedFolder }
            return names.contains { $0.hasSuffix(".safetensors") } ? .safetensorsFolder : nil
        }
    }

    public static func open(_ probe: FormatProbe, as format: ModelFormat) throws -> Model {
        try model(of: try Checkpoint(path: probe.path))
    }

    /// The model view of an opened checkpoint.
    public static func model(of checkpoint: Checkpoint) throws -> Model {
        let format: ModelFormat
        switch checkpoint.layout {
        case .file: format = .safetensorsFile
        case .folder: format = .safetensorsFolder
        case .shardedFolder: format = .safetensorsShardedFolder
        }
        let files = checkpoint.shards.map { shard in
            ModelFile(name: FileSystem.baseName(of: shard.path), path: shard.path, size: shard.file.size, tensorCount: shard.tensors.count)
        }
        let sideFiles = try checkpoint.auxiliaryFiles.map { name -> SideFile in
            let file = try ReadableFile(path: FileSystem.join(checkpoint.path, name))
            return SideFile(name: name, size: file.size, bytes: StoredBytes(file: file, offset: 0, length: file.size))
        }
        let tensors = checkpoint.tensors.map { tensor in
            let stored = tensor.stored
            let bytes = StoredBytes(file: stored.file, offset: stored.offset, length: UInt64(stored.info.byteCount))
            return ModelTensor(info: stored.info, scheme: .raw, parts: [StoredPart(layout: PartLayout(.data, stored.info.dtype, stored.info.shape), bytes: bytes)],
                               file: tensor.shard)
        }
        return Model(path: checkpoint.path, format: format, files: files, sideFiles: sideFiles, metadata: checkpoint.metadata,
                     tensors: tensors, index: checkpoint.layout == .shardedFolder ? checkpoint.index : nil, inputPaths: checkpoint.filePaths,
                     leftOutFiles: checkpoint.leftOutFiles)
    }
}
