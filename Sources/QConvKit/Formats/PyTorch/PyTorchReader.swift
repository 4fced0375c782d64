/// Reads PyTorch checkpoints as a `Model`: a `.bin` file (recognized by its
/// zip signature, whatever its name), a model folder with
/// `pytorch_model.bin`, or a sharded one with `pytorch_model.bin.index.json`.
/// A folder that also holds safetensors weights is left to
/// `SafeTensorsReader`, as transformers prefers them.
///
/// Each tensor is raw: contiguous ones are regions of their storage's zip
/// entry (tensors sharing a storage share bytes), non-contiguous views are
/// `TensorScheme.strided` over the span of the storage they cover.
public enum PyTorchReader: ModelReader {
    public static let fileName = "pytorch_model.bin"
    public static let indexFileName = "pytorch_model.bin.index.json"
    /// A zip archive's first bytes: a local header, or the end record of an empty one.
    static let zipSignatures: [[UInt8]] = [[0x50, 0x4B, 0x03, 0x04], [0x50, 0x4B, 0x05, 0x06]]

    public static func recognize(_ probe: FormatProbe) -> ModelFormat? {
        switch probe.kind {
        case .file:
            return zipSignatures.contains { probe.starts(with: $0) } ? .pytorchFile : nil
        case .folder(let names):
            guard !names.contains(Checkpoint.indexFileName), !names.contains(where: { $0.hasSuffix(".safetensors") }) else { return nil }
            if names.contains(indexFileName) { return .pytorchShardedFolder }
            return names.contains(fileName) ? .pytorchFolder : nil
        }
    }

    public static func open(_ probe: FormatProbe, as format: ModelFormat) throws -> Model {
        let path = probe.path
        switch format {
        case .pytorchFolder:
            return try model(path: path, format: format, files: [try TorchCheckpointFile(path: FileSystem.join(path, fileName))], index: nil)
        case .pytorchShardedFolder:
            let indexPath = FileSystem.join(path, indexFileName)
            let (index, shardNames) = try Checkpoint.readIndex(indexPath, folderFiles: Set(probe.folderNames))
            let shards = try shardNames.map { try TorchCheckpointFile(path: FileSystem.join(path, $0)) }
            var shardOf: [String: String] = [:]
            var stored: [(name: String, shard: String)] = []
            for (name, shard) in zip(shardNames, shards) {
                for tensor in shard.tensors {
                    if let other = shardOf[tensor.info.name] {
                        throw CheckpointError.tensorInTwoShards(index: indexPath, tensor: tensor.info.name, shards: [other, name])
                    }
                    shardOf[tensor.info.name] = name
                    stored.append((tensor.info.name, name))
                }
            }
            try Checkpoint.validate(index: index, path: indexPath, shardOf: { shardOf[$0] }, tensors: stored)
            return try model(path: path, format: format, files: shards, index: index)
        default:
            return try model(path: path, format: .pytorchFile, files: [try TorchCheckpointFile(path: path)], index: nil)
        }
    }

    /// The model view of opened checkpoint files (one, or a folder's shards).
    private static func model(path: String, format: ModelFormat, files: [TorchCheckpointFile], index: JSONObject?) throws -> Model {
        let (sideNames, leftOut) = format.isFolder ? try SideFileScan.scan(path, weights: Set(files.map { FileSystem.baseName(of: $0.path) })) : ([], [])
        let sideFiles = try sideNames.map { try SideFile(path: FileSystem.join(path, $0), name: $0) }
        var tensors: [ModelTensor] = []
        for (number, checkpoint) in files.enumerated() {
            for tensor in checkpoint.tensors {
                tensors.append(modelTensor(tensor, in: checkpoint.file, fileNumber: number))
            }
        }
        var inputPaths = files.map(\.path)
        if format.isFolder {
            inputPaths.append(path)
            inputPaths += sideNames.map { FileSystem.join(path, $0) }
            if index != nil { inputPaths.append(FileSystem.join(path, indexFileName)) }
        }
        return Model(path: path, format: format,
                     files: files.map { ModelFile(name: FileSystem.baseName(of: $0.path), path: $0.path, size: $0.file.size, tensorCount: $0.tensors.count) },
                     sideFiles: sideFiles, metadata: nil, tensors: tensors, index: index, inputPaths: inputPaths, leftOutFiles: leftOut)
    }

    private static func modelTensor(_ tensor: TorchCheckpointFile.Tensor, in file: ReadableFile, fileNumber: Int) -> ModelTensor {
        let info = tensor.info
        switch tensor.placement {
        case .contiguous(let offset):
            let part = StoredPart(layout: PartLayout(.data, info.dtype, info.shape), bytes: StoredBytes(file: file, offset: offset, length: UInt64(info.byteCount)))
            return ModelTensor(info: info, scheme: .raw, parts: [part], file: fileNumber)
        case let .strided(first, layout):
            let scheme = TensorScheme.strided(layout)
            let partLayout = scheme.parts(for: info)[0]
            return ModelTensor(info: info, scheme: scheme, parts: [StoredPart(layout: partLayout, bytes: StoredBytes(file: file, offset: first, length: partLayout.byteCount))],
                               file: fileNumber)
        }
    }

    /// The name a safetensors shard written in place of a PyTorch one takes
    /// (as transformers names them): `pytorch_model.bin` becomes
    /// `model.safetensors`, `pytorch_model-00001-of-00002.bin`
    /// `model-00001-of-00002.safetensors`.
    public static func safetensorsName(of name: String) -> String {
        var stem = name.hasSuffix(".bin") ? String(name.dropLast(4)) : name
        if stem.hasPrefix("pytorch_model") { stem = "model" + stem.dropFirst("pytorch_model".count) }
        return stem + ".safetensors"
    }
}

extension FormatProbe {
    /// A folder's names (none for a file).
    var folderNames: [String] {
        guard case .folder(let names) = kind else { return [] }
        return names
    }
}
