/// Writes a model folder in transformers' bitsandbytes layout, the one
/// `from_pretrained` loads as `Linear4bit` / `Linear8bitLt` and vLLM as a
/// bitsandbytes checkpoint: sharded safetensors byte-identical to what
/// transformers + bitsandbytes save, `model.safetensors.index.json`, the
/// source's side files and `config.json` with `quantization_config`.
///
/// Every byte's place is planned up front (`BitsandbytesPlan`), so the
/// writer needs each tensor's final scheme before its values are seen (a
/// double-quantization offset is part of a quant-state blob whose length
/// the header records: `ConversionStep.finalScheme` computes it). Tensors
/// come shard by shard (`writingOrder`); the parts an encoder writes land at
/// their planned offsets, from any thread, and the pieces known in advance
/// (code tables, quant states, weight formats) are written beside them.
public final class BitsandbytesWriter: ModelWriter {
    /// What becomes of the source's config.json.
    public enum ConfigFile {
        /// Written again with this `quantization_config` (as transformers writes configs).
        case set(BitsandbytesConfig)
        /// Copied as it is (a merge into a bitsandbytes base).
        case keep
    }

    /// How tensors are grouped into shards.
    public enum Sharding {
        /// transformers' rule, shards of at most this many bytes (transformers' default is 5 GB).
        case bySize(maximumBytes: UInt64)
        /// The shards of a bitsandbytes source: their names, the shard of each
        /// tensor, and the source's index (kept as `CheckpointWriter` keeps one).
        case mirroring(names: [String], shardOfTensor: [Int], index: JSONObject?)
        /// One safetensors file at the destination (no side files, no index).
        case singleFile
    }

    /// transformers' default `max_shard_size`, "5GB".
    public static let defaultMaximumShardBytes: UInt64 = 5_000_000_000

    private let plan: BitsandbytesPlan
    private let output: ShardFiles
    /// The shards this writer writes: all, or a job array part's.
    private let writtenShards: Set<Int>
    private let indexJSON: String?
    private let unitOfTensor: [String: Int]
    private var currentShard = -1
    private var shardWriter: SequentialWriter?
    private var shardRegion: OutputRegion?
    private var shardWritten: UInt64 = 0

    /// Plans the layout, creates the temporary folder and writes the side files.
    ///
    /// - Parameters:
    ///   - tensors: every tensor with the scheme it will be written with (final, see above).
    ///   - source: the input's path, for messages.
    ///   - part: write only this part's shards (and the index, config and side
    ///     files, as every part does); the tensors of the others must not come.
    /// - Throws: `BitsandbytesError` for a tensor with no bitsandbytes form or
    ///   a config.json that is not a JSON object, `OutputError`, `IOError`.
    public init(destination: String, overwrite: Bool, inputs: [String], tensors: [(info: TensorInfo, scheme: TensorScheme)],
                sideFiles: [SideFile], config: ConfigFile, sharding: Sharding, source: String, part: OutputPart? = nil) throws {
        let plan: BitsandbytesPlan
        switch sharding {
        case .bySize(let maximum):
            plan = try BitsandbytesPlan(tensors: tensors, maximumShardBytes: maximum, source: source)
            indexJSON = plan.shards.count > 1 ? plan.indexJSON(mirroring: nil) : nil
        case let .mirroring(names, shardOfTensor, index):
            plan = try BitsandbytesPlan(tensors: tensors, maximumShardBytes: .max, mirroring: (names, shardOfTensor), source: source)
            indexJSON = index.map { plan.indexJSON(mirroring: $0) } ?? (plan.shards.count > 1 ? plan.indexJSON(mirroring: nil) : nil)
        case .singleFile:
            plan = try BitsandbytesPlan(tensors: tensors, maximumShardBytes: .max, mirroring: ([FileSystem.baseName(of: destination)], tensors.map { _ in 0 }),
                                        source: source)
            indexJSON = nil
        }
        self.plan = plan
        unitOfTensor = Dictionary(plan.units.enumerated().map { ($1.tensor.name, $0) }, uniquingKeysWith: { first, _ in first })
        if case .singleFile = sharding {
            precondition(part == nil, "a job array part writes shards of a folder")
            output = try ShardFiles(file: destination, overwrite: overwrite, inputs: inputs)
            writtenShards = [0]
            return
        }
        let folder = try FolderOutput(destination: destination, overwrite: overwrite, inputs: inputs, part: part)
        output = ShardFiles(folder: folder)
        writtenShards = Set(part?.shards(ofSizes: plan.shards.map { UInt64($0.header.count) + $0.dataLength }) ?? Array(plan.shards.indices))
        do {
            for file in sideFiles {
                if case .set(let quantization) = config, file.name == TransformersConfig.fileName {
                    try folder.writeSharedFile(file.name, bytes: try quantization.configFile(from: try file.readAll(), path: FileSystem.join(source, file.name)))
                } else {
                    try folder.copySideFile(file)
                }
            }
        } catch {
            folder.discard()
            throw error
        }
    }

    /// Whether this writer writes `tensor` (one job array part writes its shards' tensors only).
    public func writes(_ tensor: TensorInfo) -> Bool {
        unitOfTensor[tensor.name].map { writtenShards.contains(plan.shardOfUnit[$0]) } ?? false
    }

    public var partShards: PartShards? {
        guard let part = output.folder?.part else { return nil }
        return PartShards(part: part, written: writtenShards.sorted().map { plan.shards[$0].fileName }, shardCount: plan.shards.count)
    }

    /// The tensor names in the order the writer takes them: shard by shard.
    public var writingOrder: [String]? { plan.units.map(\.tensor.name) }

    /// The shard files, in order.
    public var shardNames: [String] { plan.shards.map(\.fileName) }

    public func writeTensor(_ tensor: TensorInfo, _ encode: (PartSink) throws -> TensorScheme) throws {
        guard let u = unitOfTensor[tensor.name] else { preconditionFailure("\(tensor.name) was not planned") }
        let unit = plan.units[u]
        precondition(unit.tensor == tensor, "\(tensor.name): written as \(tensor) but planned as \(unit.tensor)")
        try moveToShard(plan.shardOfUnit[u])
        let shard = plan.shards[currentShard]
        let sink = BitsandbytesPartSink(unit: unit, region: shardRegion!, offsets: shard.offsets)
        let scheme = try encode(sink)
        precondition(scheme == unit.scheme, "\(tensor.name): written as \(scheme) but planned as \(unit.scheme)")
        precondition(sink.done, "\(tensor.name): not every part was written")
        for piece in unit.pieces {
            guard case .bytes(let bytes) = piece.content else { continue }
            try bytes.withUnsafeBytes { try shardRegion!.write($0, at: Int(shard.offsets[piece.info.name]!)) }
        }
        shardWritten += unit.bytes
    }

    /// Finishes the shards, writes the index and moves the folder into place.
    public func commit() throws {
        for shard in writtenShards.sorted() where shard > currentShard { try moveToShard(shard) }
        try finishShard()
        try output.commit(indexJSON: indexJSON)
    }

    public func discard() {
        output.discard()
    }

    /// Finishes the current shard and opens shard `number`, a later one of this writer's.
    private func moveToShard(_ number: Int) throws {
        guard number != currentShard else { return }
        precondition(number > currentShard && writtenShards.contains(number), "tensors must come shard by shard (writingOrder)")
        try finishShard()
        currentShard = number
        let shard = plan.shards[number]
        let writer = try output.openShard(shard.fileName)
        writer.preallocate(UInt64(shard.header.count) + shard.dataLength)
        try writer.write(shard.header)
        shardRegion = try writer.reserve(shard.dataLength)
        shardWriter = writer
        shardWritten = 0
    }

    private func finishShard() throws {
        guard let writer = shardWriter else { return }
        precondition(shardWritten == plan.shards[currentShard].dataLength, "shard \(plan.shards[currentShard].fileName) is incomplete")
        try writer.close()
        try output.closeShard()
        shardWriter = nil
        shardRegion = nil
    }
}

/// A tensor's parts written at their pieces' places in the shard.
private final class BitsandbytesPartSink: PartSink {
    let unit: BitsandbytesPlan.Unit
    let region: OutputRegion
    let offsets: [String: UInt64]
    let layouts: [PartLayout]
    /// The next part expected.
    private var next = 0

    init(unit: BitsandbytesPlan.Unit, region: OutputRegion, offsets: [String: UInt64]) {
        self.unit = unit
        self.region = region
        self.offsets = offsets
        layouts = unit.scheme.parts(for: unit.tensor)
    }

    var done: Bool { next == layouts.count }

    /// The region of the next part (nil for an empty part no piece stores: int8 outliers), checked against the plan.
    private func take(_ part: PartLayout) -> OutputRegion? {
        precondition(next < layouts.count && layouts[next] == part, "\(unit.tensor.name): unexpected part \(part.description)")
        let index = next
        next += 1
        guard let piece = unit.pieces.first(where: { if case .part(index) = $0.content { return true } else { return false } }) else {
            precondition(part.byteCount == 0, "\(unit.tensor.name): part \(part.description) has no piece")
            return nil
        }
        return region.subregion(at: offsets[piece.info.name]!, length: part.byteCount)
    }

    func reserve(_ part: PartLayout) throws -> OutputRegion {
        guard let region = take(part) else { return self.region.subregion(at: 0, length: 0) }
        return region
    }

    var needsBytesInOrder: Bool { false }
    func hashInOrder(_ bytes: UnsafeRawBufferPointer) {}
    func restartReserved() {}
    func endReserved() throws {}

    func write(_ part: PartLayout, bytes: UnsafeRawBufferPointer) throws {
        precondition(UInt64(bytes.count) == part.byteCount, "\(part.name.rawValue): \(bytes.count) bytes for \(part.byteCount)")
        try take(part)?.write(bytes, at: 0)
    }

    /// Copied on all cores; a part with a checksum (a container's) is hashed on the way.
    func copy(_ part: StoredPart, context: EncodingContext) throws {
        guard let target = take(part.layout) else { return }
        var hasher = XXHash64()
        let hashing = part.bytes.checksum != nil
        try streamBytes(of: part.bytes.file, from: part.bytes.offset, length: part.bytes.length, into: target,
                        buffers: context.copyBuffers, threads: context.threads, inOrder: hashing ? { hasher.update($0) } : nil)
        if hashing { try part.bytes.check(hasher.digest()) }
    }
}
