/// A model as every command sees it, whatever format it was read from: the
/// output of a `ModelReader` (see `Model.open(_:)`).
///
/// It holds headers only: side files, metadata and logical tensors, each
/// with the scheme it is stored with and where its parts are. Values are read
/// on demand, range by range (`ModelTensor.values`), so opening a model of
/// any size is immediate.
public final class Model: @unchecked Sendable {
    /// The path the user gave.
    public let path: String
    public let format: ModelFormat
    /// The files that hold tensors (shards), in tensor order.
    public let files: [ModelFile]
    /// Files that belong with the weights (config.json, tokenizer files), by
    /// path relative to the model folder.
    public let sideFiles: [SideFile]
    /// Files of the model folder that are not carried along, and why.
    public let leftOutFiles: [SideFileScan.LeftOut]
    /// The `__metadata__` of a safetensors file (of its first shard), or what
    /// a container recorded of its source's.
    public let metadata: [(key: String, value: String)]?
    public let tensors: [ModelTensor]
    /// A sharded folder's parsed `model.safetensors.index.json`, which a
    /// folder written to mirror it keeps.
    public let index: JSONObject?
    /// What a container recorded about how it was made (qconv version,
    /// options, source, merges).
    public let provenance: JSONObject?
    /// Every path this model consists of (files, folder, index, side files),
    /// which no output may overwrite.
    public let inputPaths: [String]
    private let tensorIndex: [String: Int]

    public init(path: String, format: ModelFormat, files: [ModelFile], sideFiles: [SideFile], metadata: [(key: String, value: String)]?,
                tensors: [ModelTensor], index: JSONObject? = nil, provenance: JSONObject? = nil, inputPaths: [String],
                leftOutFiles: [SideFileScan.LeftOut] = []) {
        self.path = path
        self.format = format
        self.files = files
        self.sideFiles = sideFiles
        self.leftOutFiles = leftOutFiles
        self.metadata = metadata
        self.tensors = tensors
        self.index = index
        self.provenance = provenance
        self.inputPaths = inputPaths
        var byName: [String: Int] = [:]
        for (i, tensor) in tensors.enumerated() { byName[tensor.name] = i }
        tensorIndex = byName
    }

    /// This model with some of its parts replaced, everything else kept:
    /// how a reader or a merge presents a model in another light (FP8 weights
    /// paired with their scales, an untied output embedding).
    public func replacing(files: [ModelFile]? = nil, sideFiles: [SideFile]? = nil, tensors: [ModelTensor]? = nil) -> Model {
        Model(path: path, format: format, files: files ?? self.files, sideFiles: sideFiles ?? self.sideFiles, metadata: metadata,
              tensors: tensors ?? self.tensors, index: index, provenance: provenance, inputPaths: inputPaths, leftOutFiles: leftOutFiles)
    }

    public func tensor(named name: String) -> ModelTensor? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Bytes of every tensor in its source dtype (what `dequant` writes).
    public var sourceTensorBytes: UInt64 { tensors.reduce(0) { $0 + UInt64($1.info.byteCount) } }

    /// How many quantized tensors each scheme (`TensorScheme.summary`) has, in order of first appearance.
    public var quantizedSchemeCounts: [(scheme: String, count: Int)] { Self.quantizedSchemeCounts(tensors) }

    /// How many of `tensors` each quantized scheme has, in order of first appearance.
    public static func quantizedSchemeCounts(_ tensors: [ModelTensor]) -> [(scheme: String, count: Int)] {
        var counts: [(scheme: String, count: Int)] = []
        for tensor in tensors where tensor.scheme.isQuantized {
            let name = tensor.scheme.summary
            if let i = counts.firstIndex(where: { $0.scheme == name }) { counts[i].count += 1 } else { counts.append((name, 1)) }
        }
        return counts
    }

    /// Bytes of the files that hold tensors.
    public var fileBytes: UInt64 { files.reduce(0) { $0 + $1.size } }
}

/// A file of a model that holds tensors.
public struct ModelFile: Sendable {
    /// The file's name (a shard's name in its folder).
    public let name: String
    public let path: String
    public let size: UInt64
    public let tensorCount: Int

    public init(name: String, path: String, size: UInt64, tensorCount: Int) {
        self.name = name
        self.path = path
        self.size = size
        self.tensorCount = tensorCount
    }
}

/// A file that belongs with the weights (config.json, tokenizer files): a
/// file of the model folder, one embedded in a container, or one a reader
/// made (an FP8 model's config without its `quantization_config`).
public struct SideFile: Sendable {
    public enum Contents: Sendable {
        /// Bytes of a file; `checksum` is checked whenever they are read.
        case stored(StoredBytes)
        /// Bytes made in memory.
        case generated([UInt8])
    }

    public let name: String
    public let size: UInt64
    public let contents: Contents

    public init(name: String, size: UInt64, bytes: StoredBytes) {
        self.name = name
        self.size = size
        contents = .stored(bytes)
    }

    public init(name: String, generated bytes: [UInt8]) {
        self.name = name
        size = UInt64(bytes.count)
        contents = .generated(bytes)
    }

    /// The file at `path`, carried as `name`.
    public init(path: String, name: String) throws {
        let file = try ReadableFile(path: path)
        self.init(name: name, size: file.size, bytes: StoredBytes(file: file, offset: 0, length: file.size))
    }

    /// The whole file, checked against its checksum when it has one.
    public func readAll() throws -> [UInt8] {
        switch contents {
        case .generated(let bytes):
            return bytes
        case .stored(let bytes):
            let data = try bytes.file.readBytes(at: bytes.offset, count: Int(bytes.length))
            if bytes.checksum != nil { try bytes.check(XXHash64.hash(data)) }
            return data
        }
    }
}

/// A region of a file, and what its format records about it (a container's
/// parts and embedded files: their xxHash64, and the zero padding in front
/// of them), checked whenever it is read: every reader of the region ends
/// with `check`, so that one set of rules holds for every command.
public struct StoredBytes: Sendable {
    public let file: ReadableFile
    public let offset: UInt64
    public let length: UInt64
    public let checksum: UInt64?
    /// Bytes just before `offset` that must be zero (less than 64: a
    /// container's padding between regions).
    public let padding: UInt64
    /// The error to throw when the bytes do not hash to `checksum`.
    let mismatch: @Sendable (_ actual: UInt64) -> Error
    /// The error to throw when the padding byte at this file offset is not zero.
    let paddingNotZero: @Sendable (_ offset: UInt64) -> Error

    public init(file: ReadableFile, offset: UInt64, length: UInt64, checksum: UInt64?, padding: UInt64 = 0,
                mismatch: @escaping @Sendable (_ actual: UInt64) -> Error,
                paddingNotZero: @escaping @Sendable (_ offset: UInt64) -> Error = { _ in preconditionFailure("no padding to check") }) {
        precondition(padding <= offset, "padding before the start of the file")
        self.file = file
        self.offset = offset
        self.length = length
        self.checksum = checksum
        self.padding = padding
        self.mismatch = mismatch
        self.paddingNotZero = paddingNotZero
    }

    /// Unchecked bytes (a safetensors tensor, a file of a folder).
    public init(file: ReadableFile, offset: UInt64, length: UInt64) {
        self.init(file: file, offset: offset, length: length, checksum: nil, mismatch: { _ in preconditionFailure("no checksum to mismatch") })
    }

    public func checksumError(actual: UInt64) -> Error { mismatch(actual) }

    /// Throws when `actual`, the hash of every byte, is not the recorded
    /// checksum, or when the padding in front of the region is not zero.
    public func check(_ actual: UInt64) throws {
        if let checksum, checksum != actual { throw mismatch(actual) }
        guard padding > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: Int(padding))
        try bytes.withUnsafeMutableBytes { try file.read(at: offset - padding, into: $0) }
        if let index = bytes.firstIndex(where: { $0 != 0 }) { throw paddingNotZero(offset - padding + UInt64(index)) }
    }
}

/// One logical tensor of a model: the source tensor's name, dtype and shape,
/// how it is stored, and where each of its parts is.
public struct ModelTensor: Sendable {
    public let info: TensorInfo
    public let scheme: TensorScheme
    /// The parts `scheme.parts(for: info)` lists, in that order.
    public let parts: [StoredPart]
    /// Index into `Model.files` of the file that holds it.
    public let file: Int

    public init(info: TensorInfo, scheme: TensorScheme, parts: [StoredPart], file: Int) {
        precondition(parts.map(\.layout) == scheme.parts(for: info), "\(info.name): parts do not match the scheme")
        self.info = info
        self.scheme = scheme
        self.parts = parts
        self.file = file
    }

    public var name: String { info.name }

    /// Bytes stored for this tensor (all parts, without padding).
    public var storedBytes: UInt64 { parts.reduce(0) { $0 + $1.layout.byteCount } }

    /// The path of the file holding it, for messages.
    public var filePath: String { parts[0].bytes.file.path }

    /// The part called `name`, if its scheme has one.
    public func part(_ name: PartName) -> StoredPart? { parts.first { $0.layout.name == name } }

    /// A raw tensor's bytes as a `StoredTensor` (nil for quantized ones).
    public var rawStored: StoredTensor? {
        guard case .raw = scheme else { return nil }
        return parts[0].stored(named: info.name)
    }
}

/// One part of a stored tensor and where its bytes are.
public struct StoredPart: Sendable {
    public let layout: PartLayout
    public let bytes: StoredBytes

    public init(layout: PartLayout, bytes: StoredBytes) {
        precondition(bytes.length == layout.byteCount, "\(layout.name.rawValue): \(bytes.length) bytes for \(layout.byteCount)")
        self.layout = layout
        self.bytes = bytes
    }

    /// The part as a `StoredTensor` (for reading through the common paths).
    public func stored(named name: String) -> StoredTensor {
        StoredTensor(info: TensorInfo(name: name, dtype: layout.dtype, shape: layout.shape), file: bytes.file, offset: bytes.offset)
    }

    /// The whole (small) part, checked against its checksum.
    public func readAll() throws -> [UInt8] {
        let data = try bytes.file.readBytes(at: bytes.offset, count: Int(bytes.length))
        try bytes.check(XXHash64.hash(data))
        return data
    }

    /// Streams the part through xxHash64 in bounded pieces and compares with
    /// its checksum (nothing to do without one).
    public func verifyChecksum(buffer: UnsafeMutableRawBufferPointer) throws {
        guard bytes.checksum != nil else { return }
        var hasher = XXHash64()
        try bytes.file.stream(from: bytes.offset, length: bytes.length, buffer: buffer) { hasher.update($0) }
        try bytes.check(hasher.digest())
    }
}
