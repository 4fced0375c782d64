/// Reads a checkpoint in transformers' bitsandbytes layout (a safetensors
/// file, or a model folder, sharded or not) as a `Model` whose tensors are
/// the weights, quantized (`fourBit` or `int8`, parts viewing the stored
/// pieces) or raw; the pieces themselves (code tables, quant-state blobs,
/// weight formats) are not tensors of the model.
public enum BitsandbytesReader: ModelReader {
    /// A safetensors file whose header names a bitsandbytes piece, or a model
    /// folder whose config.json says `quant_method: bitsandbytes` or whose
    /// index (or single file) names such a piece.
    public static func recognize(_ probe: FormatProbe) -> ModelFormat? {
        switch probe.kind {
        case let .file(size, head):
            return headerNamesPieces(path: probe.path, size: size, head: head) ? .bitsandbytes(.file) : nil
        case .folder(let names):
            let layout: Checkpoint.Layout
            if names.contains(Checkpoint.indexFileName) {
                layout = .shardedFolder
            } else if names.contains(where: { $0.hasSuffix(".safetensors") }) {
                layout = .folder
            } else {
                return nil
            }
            if let config = BitsandbytesConfigFile.read(folder: probe.path),
               (try? BitsandbytesConfigFile(path: config.path, bytes: config.bytes))?.isBitsandbytes == true {
                return .bitsandbytes(layout)
            }
            return folderNamesPieces(probe.path, names: names, layout: layout) ? .bitsandbytes(layout) : nil
        }
    }

    public static func open(_ probe: FormatProbe, as format: ModelFormat) throws -> Model {
        let layout = try BitsandbytesLayout(path: probe.path)
        if let problem = layout.problems.first { throw problem }
        return try model(of: layout)
    }

    /// The model view of a checked layout.
    static func model(of layout: BitsandbytesLayout) throws -> Model {
        let checkpoint = layout.checkpoint
        let files = checkpoint.shards.map { shard in
            ModelFile(name: FileSystem.baseName(of: shard.path), path: shard.path, size: shard.file.size, tensorCount: shard.tensors.count)
        }
        let sideFiles = try checkpoint.auxiliaryFiles.map { name in try SideFile(path: FileSystem.join(checkpoint.path, name), name: name) }
        return Model(path: checkpoint.path, format: .bitsandbytes(checkpoint.layout), files: files, sideFiles: sideFiles,
                     metadata: checkpoint.metadata, tensors: layout.tensors,
                     index: checkpoint.layout == .shardedFolder ? checkpoint.index : nil, inputPaths: checkpoint.filePaths)
    }

    /// Byte strings only a bitsandbytes checkpoint's tensor names contain.
    static let markers: [[UInt8]] = [Array(BitsandbytesLayout.quantStateMarker.utf8), Array(".SCB\"".utf8), Array(".weight_format\"".utf8)]

    /// Whether a safetensors header names a bitsandbytes piece (read as bytes; `open` validates it).
    static func headerNamesPieces(path: String, size: UInt64, head: [UInt8]) -> Bool {
        guard head.count >= 9, head[8] == UInt8(ascii: "{") else { return false }
        let length = head[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard length <= SafeTensorsHeader.maximumHeaderLength, length + 8 <= size,
              let file = try? ReadableFile(path: path), let header = try? file.readBytes(at: 8, count: Int(length)) else { return false }
        return markers.contains { contains(header, $0) }
    }

    private static func folderNamesPieces(_ folder: String, names: [String], layout: Checkpoint.Layout) -> Bool {
        if layout == .shardedFolder {
            let path = FileSystem.join(folder, Checkpoint.indexFileName)
            guard let file = try? ReadableFile(path: path), file.size <= SafeTensorsHeader.maximumHeaderLength,
                  let bytes = try? file.readBytes(at: 0, count: Int(file.size)) else { return false }
            return markers.contains { contains(bytes, $0) }
        }
        let safetensors = names.filter { $0.hasSuffix(".safetensors") }
        guard let single = names.contains(Checkpoint.singleFileName) ? Checkpoint.singleFileName : (safetensors.count == 1 ? safetensors[0] : nil),
              let probe = try? FormatProbe(path: FileSystem.join(folder, single)), case let .file(size, head) = probe.kind else { return false }
        return headerNamesPieces(path: probe.path, size: size, head: head)
    }

    /// Whether `bytes` contains `pattern`.
    static func contains(_ bytes: [UInt8], _ pattern: [UInt8]) -> Bool {
        guard let first = pattern.first, pattern.count <= bytes.count else { return false }
        var i = 0
        let last = bytes.count - pattern.count
        while i <= last {
            if bytes[i] == first && bytes[i..<(i + pattern.count)].elementsEqual(pattern) { return true }
            i += 1
        }
        return false
    }
}

extension BitsandbytesLayout {
    /// Opens the checkpoint at `path` (validating every header and the index)
    /// and its config.json, and analyses them.
    ///
    /// - Throws: the checkpoint's errors, `BitsandbytesError.configInvalid`.
    init(path: String) throws {
        let checkpoint = try Checkpoint(path: path)
        var config: BitsandbytesConfigFile?
        if checkpoint.layout != .file, checkpoint.auxiliaryFiles.contains(TransformersConfig.fileName),
           let file = BitsandbytesConfigFile.read(folder: path) {
            config = try BitsandbytesConfigFile(path: file.path, bytes: file.bytes)
        }
        self.init(checkpoint: checkpoint, config: config)
    }
}
