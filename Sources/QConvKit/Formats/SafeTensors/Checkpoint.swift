/// A safetensors checkpoint as one set of tensors, whatever its layout: a
/// single file, a model folder with `model.safetensors`, or a sharded model
/// folder with `model.safetensors.index.json`.
///
/// Opening reads and validates headers only. Tensors come in a stable order:
/// shard by shard (in file-name order), and within a shard in data order.
public final class Checkpoint: @unchecked Sendable {
    public enum Layout: String, Sendable {
        case file = "safetensors file"
        case folder = "model folder"
        case shardedFolder = "sharded model folder"
    }

    /// One tensor of the checkpoint and the shard it is stored in.
    public struct Tensor: Sendable {
        public let stored: StoredTensor
        /// Index into `shards`.
        public let shard: Int
        public var info: TensorInfo { stored.info }
        public var name: String { stored.info.name }
    }

    public static let indexFileName = "model.safetensors.index.json"
    public static let singleFileName = "model.safetensors"

    /// The path the user gave.
    public let path: String
    public let layout: Layout
    public let shards: [SafeTensorsFile]
    public let tensors: [Tensor]
    /// The parsed index of a sharded folder.
    public let index: JSONObject?
    /// Files of a model folder that are not weights (config.json, tokenizer
    /// files, ...), as names relative to the folder, sorted: the visible
    /// files (not folders) that `isAuxiliaryFileName` accepts. Converters carry
    /// them along (a container embeds them).
    public let auxiliaryFiles: [String]
    private let tensorByName: [String: Int]

    /// Opens a file or a model folder, validating every header and, for a
    /// sharded folder, the index against the shards.
    public init(path: String) throws {
        self.path = path
        switch FileSystem.kind(of: path) {
        case .missing:
            throw IOError("open", path: path, errno: .noSuchFileOrDirectory)
        case .directory:
            let names = try FileSystem.contents(of: path)
            let safetensors = names.filter { $0.hasSuffix(".safetensors") }
            if names.contains(Self.indexFileName) {
                let indexPath = FileSystem.join(path, Self.indexFileName)
                let (index, shardNames) = try Self.readIndex(indexPath, folderFiles: Set(names))
                self.index = index
                shards = try shardNames.map { try SafeTensorsFile(path: FileSystem.join(path, $0)) }
                layout = .shardedFolder
                // Shards may be named anything the index says.
                let shardFiles = Set(shardNames)
                auxiliaryFiles = names.filter { !shardFiles.contains($0) && Self.isAuxiliary($0, in: path) }
            } else {
                let single: String
                if names.contains(Self.singleFileName) {
                    single = Self.singleFileName
                } else if safetensors.count == 1 {
                    single = safetensors[0]
                } else if safetensors.isEmpty {
                    throw CheckpointError.noWeights(folder: path)
                } else {
                    throw CheckpointError.ambiguousWeights(folder: path, files: safetensors)
                }
                index = nil
                shards = [try SafeTensorsFile(path: FileSystem.join(path, single))]
                layout = .folder
                auxiliaryFiles = names.filter { Self.isAuxiliary($0, in: path) }
            }
        default:
            index = nil
            shards = [try SafeTensorsFile(path: path)]
            layout = .file
            auxiliaryFiles = []
        }

        var tensors: [Tensor] = []
        var byName: [String: Int] = [:]
        for (shardNumber, shard) in shards.enumerated() {
            for entry in shard.tensors {
                if let previous = byName[entry.name] {
                    let first = FileSystem.baseName(of: shards[tensors[previous].shard].path)
                    throw CheckpointError.tensorInTwoShards(
                        index: FileSystem.join(path, Self.indexFileName), tensor: entry.name,
                        shards: [first, FileSystem.baseName(of: shard.path)])
                }
                byName[entry.name] = tensors.count
                let stored = StoredTensor(info: entry.info, file: shard.file, offset: shard.header.dataStart + entry.dataOffsets.lowerBound)
                tensors.append(Tensor(stored: stored, shard: shardNumber))
            }
        }
        self.tensors = tensors
        tensorByName = byName
        if let index { try validate(index: index) }
    }

    public func tensor(named name: String) -> Tensor? {
        tensorByName[name].map { tensors[$0] }
    }

    /// The first shard's `__metadata__` (shards written by one tool share it).
    public var metadata: [(key: String, value: String)]? { shards.first?.header.metadata }

    /// Paths of every file this checkpoint consists of (for refusing to overwrite inputs).
    public var filePaths: [String] {
        var paths = shards.map(\.path)
        if layout != .file {
            paths.append(path)
            paths += auxiliaryFiles.map { FileSystem.join(path, $0) }
            if layout == .shardedFolder { paths.append(FileSystem.join(path, Self.indexFileName)) }
        }
        return paths
    }

    /// The shard file name a tensor is stored in.
    public func shardName(of tensor: Tensor) -> String {
        FileSystem.baseName(of: shards[tensor.shard].path)
    }

    /// Extensions (compared in lower case) of weight and checkpoint formats:
    /// safetensors, PyTorch, TensorFlow/Keras, Flax, ONNX, GGUF, rust-bert,
    /// NumPy and TFLite. Files with them are never auxiliary files.
    public static let weightFileExtensions: Set<String> = ["bin", "pt", "pth", "ckpt", "h5", "msgpack", "onnx", "gguf", "ot",
                                                           "safetensors", "npz", "tflite"]

    /// Whether a file of a model folder, by its name, is carried along with the
    /// weights: not hidden (a leading `.`), not weights in any format
    /// (`weightFileExtensions`), and not the index of such weights
    /// (`model.safetensors.index.json`, `pytorch_model.bin.index.json`).
    public static func isAuxiliaryFileName(_ name: String) -> Bool {
        guard !name.hasPrefix(".") else { return false }
        let stem = name.hasSuffix(".index.json") ? String(name.dropLast(".index.json".count)) : name
        guard let dot = stem.lastIndex(of: ".") else { return true }
        return !weightFileExtensions.contains(stem[stem.index(after: dot)...].lowercased())
    }

    /// An auxiliary file name that is not a subfolder in `folder`. A named
    /// pipe, device or socket under such a name counts, so that reading it
    /// refuses it (`ReadableFile`) instead of leaving it out silently.
    private static func isAuxiliary(_ name: String, in folder: String) -> Bool {
        guard isAuxiliaryFileName(name) else { return false }
        switch FileSystem.kind(of: FileSystem.join(folder, name)) {
        case .file, .other: return true
        case .directory, .missing: return false
        }
    }

    /// Reads the index and returns it with its shard names in file-name order.
    private static func readIndex(_ indexPath: String, folderFiles: Set<String>) throws -> (JSONObject, [String]) {
        let file = try ReadableFile(path: indexPath)
        guard file.size <= SafeTensorsHeader.maximumHeaderLength else {
            throw CheckpointError.invalidIndex(file: indexPath, reason: "\(file.size) bytes is larger than any index should be")
        }
        let bytes = try file.readBytes(at: 0, count: Int(file.size))
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch let error as JSONParseError {
            throw CheckpointError.invalidIndex(file: indexPath, reason: "not valid JSON: \(error)")
        }
        guard let object = root.objectValue else {
            throw CheckpointError.invalidIndex(file: indexPath, reason: "must be a JSON object, found \(root.kindDescription)")
        }
        guard let weightMapValue = object["weight_map"] else {
            throw CheckpointError.invalidIndex(file: indexPath, reason: "missing \"weight_map\"")
        }
        guard let weightMap = weightMapValue.objectValue else {
            throw CheckpointError.invalidIndex(file: indexPath, reason: "\"weight_map\" must be an object, found \(weightMapValue.kindDescription)")
        }
        var shardNames = Set<String>()
        for (tensor, value) in weightMap.members {
            guard let shard = value.stringValue else {
                throw CheckpointError.invalidIndex(file: indexPath, reason: "weight_map entry '\(tensor)' must be a string, found \(value.kindDescription)")
            }
            guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw CheckpointError.unsafeShardName(index: indexPath, tensor: tensor, shard: shard)
            }
            guard folderFiles.contains(shard) else { throw CheckpointError.shardMissing(index: indexPath, shard: shard) }
            shardNames.insert(shard)
        }
        return (object, shardNames.sorted())
    }

    /// Checks the index against what the shards hold: every listed tensor is
    /// in its shard, every stored tensor is listed, none is listed twice.
    private func validate(index: JSONObject) throws {
        let indexPath = FileSystem.join(path, Self.indexFileName)
        guard let weightMap = index["weight_map"]?.objectValue else { return }
        var listed: [String: String] = [:]
        for (name, value) in weightMap.members {
            let shard = value.stringValue ?? ""
            if let other = listed[name] {
                throw CheckpointError.tensorInTwoShards(index: indexPath, tensor: name, shards: [other, shard])
            }
            listed[name] = shard
            guard let tensor = tensor(named: name) else {
                throw CheckpointError.tensorListedButAbsent(index: indexPath, tensor: name, shard: shard)
            }
            let found = shardName(of: tensor)
            if found != shard {
                throw CheckpointError.tensorInWrongShard(index: indexPath, tensor: name, listed: shard, found: found)
            }
        }
        for tensor in tensors where listed[tensor.name] == nil {
            throw CheckpointError.tensorNotListed(index: indexPath, tensor: tensor.name, shard: shardName(of: tensor))
        }
    }
}
