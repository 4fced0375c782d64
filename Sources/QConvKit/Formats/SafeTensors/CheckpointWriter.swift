/// Writes a checkpoint (a single safetensors file, or a model folder with
/// shards, an index and side files) by streaming, atomically: the
/// safetensors `ModelWriter`.
///
/// Tensors are written in the order given at creation; `write(_:)` moves on to
/// the next shard by itself when a shard's bytes are complete. Nothing appears
/// at the destination until `commit()`, except for one part of a job array,
/// whose shards each appear when complete (`FolderOutput`).
public final class CheckpointWriter: ModelWriter {
    /// What the output looks like.
    public enum Layout {
        /// One safetensors file at the destination.
        case file
        /// A model folder; each shard is a file name and the tensors in it.
        /// An index is written when there are several shards. (`planShards`
        /// names a single shard `model.safetensors`.)
        case folder(shards: [(fileName: String, tensors: [TensorInfo])])
    }

    public let destination: String
    private let output: ShardFiles
    private let shardPlan: [(fileName: String, tensors: [TensorInfo])]
    /// The shards this writer writes: all, or a job array part's.
    private let writtenShards: Set<Int>
    private let shardOfTensor: [String: Int]
    private let metadata: [(key: String, value: String)]?
    private var current: SafeTensorsWriter?
    private var currentShard = -1
    private var remainingInShard: UInt64 = 0
    private var indexJSON: String?

    /// Creates the temporary output and writes the first shard's header.
    ///
    /// - Parameters:
    ///   - sideFiles: files written into a folder output as they are (config.json, ...).
    ///   - sourceIndex: when the folder mirrors a sharded source folder (merge-lora),
    ///     the source's parsed `model.safetensors.index.json`. The new index then
    ///     keeps the source's members and `metadata` keys, with `total_size`
    ///     (and `total_parameters` where the source has it) recomputed and the
    ///     `weight_map` rebuilt, and is written even for a single shard.
    ///     Without it, the index is the one transformers writes.
    ///   - inputs: paths the command reads, which the destination must not be.
    ///   - part: write only this part's shards of a folder (and the index and
    ///     side files, as every part does); the tensors of the others must not come.
    public init(destination: String, layout: Layout, tensors: [TensorInfo], metadata: [(key: String, value: String)]?,
                sideFiles: [SideFile] = [], sourceIndex: JSONObject? = nil, overwrite: Bool, inputs: [String], part: OutputPart? = nil) throws {
        self.destination = destination
        self.metadata = metadata
        switch layout {
        case .file:
            precondition(part == nil, "a job array part writes shards of a folder")
            shardPlan = [(FileSystem.baseName(of: destination), tensors)]
            output = try ShardFiles(file: destination, overwrite: overwrite, inputs: inputs)
            writtenShards = [0]
        case .folder(let shards):
            shardPlan = shards
            let folder = try FolderOutput(destination: destination, overwrite: overwrite, inputs: inputs, part: part)
            output = ShardFiles(folder: folder)
            writtenShards = Set(part?.shards(ofSizes: shards.map { Self.fileSize(of: $0.tensors, metadata: metadata) }) ?? Array(shards.indices))
            do {
                for file in sideFiles { try folder.copySideFile(file) }
            } catch {
                folder.discard()
                throw error
            }
            if let sourceIndex {
                indexJSON = Self.indexJSON(shards: shards, mirroring: sourceIndex)
            } else if shards.count > 1 {
                indexJSON = Self.indexJSON(shards: shards)
            }
        }
        var shardOfTensor: [String: Int] = [:]
        for (shard, entry) in shardPlan.enumerated() { for tensor in entry.tensors { shardOfTensor[tensor.name] = shard } }
        self.shardOfTensor = shardOfTensor
        if part == nil { try openNextShard() }
    }

    /// Bytes of a shard file: its header and its tensors' data.
    static func fileSize(of tensors: [TensorInfo], metadata: [(key: String, value: String)]?) -> UInt64 {
        8 + UInt64(SafeTensorsWriter.headerBytes(tensors: tensors, metadata: metadata).count) + tensors.reduce(0) { $0 + UInt64($1.byteCount) }
    }

    /// Whether this writer writes `tensor` (one job array part writes its shards' tensors only).
    public func writes(_ tensor: TensorInfo) -> Bool {
        shardOfTensor[tensor.name].map(writtenShards.contains) ?? false
    }

    public var partShards: PartShards? {
        guard let part = output.folder?.part else { return nil }
        return PartShards(part: part, written: writtenShards.sorted().map { shardPlan[$0].fileName }, shardCount: shardPlan.count)
    }

    /// The tensors shard by shard: the order `writeTensor` takes them in.
    public var writingOrder: [String]? { shardPlan.flatMap { $0.tensors.map(\.name) } }

    /// Plans the shards of a safetensors folder: tensors in order, a new
    /// shard whenever the next tensor would push the current one past
    /// `maximumBytes` (a tensor larger than the limit gets a shard of its own,
    /// in its place), named as transformers names them.
    public static func planShards(_ tensors: [TensorInfo], maximumBytes: UInt64) -> [(fileName: String, tensors: [TensorInfo])] {
        var groups: [[TensorInfo]] = [[]]
        var size: UInt64 = 0
        for tensor in tensors {
            let bytes = UInt64(tensor.byteCount)
            if !groups[groups.count - 1].isEmpty && size + bytes > maximumBytes {
                groups.append([])
                size = 0
            }
            groups[groups.count - 1].append(tensor)
            size += bytes
        }
        return Array(zip(TransformersSharding.fileNames(count: groups.count), groups))
    }

    /// The index transformers writes: sorted keys, two-space indent, newline at the end.
    static func indexJSON(shards: [(fileName: String, tensors: [TensorInfo])]) -> String {
        let all = shards.flatMap(\.tensors)
        return indexJSON(weightMap: shards.flatMap { shard in shard.tensors.map { ($0.name, shard.fileName) } },
                         totalSize: all.reduce(UInt64(0)) { $0 + UInt64($1.byteCount) },
                         totalParameters: all.reduce(UInt64(0)) { $0 + UInt64($1.elementCount) }, mirroring: nil)
    }

    /// The index of a folder that mirrors a source folder (see below).
    static func indexJSON(shards: [(fileName: String, tensors: [TensorInfo])], mirroring source: JSONObject) -> String {
        let all = shards.flatMap(\.tensors)
        return indexJSON(weightMap: shards.flatMap { shard in shard.tensors.map { ($0.name, shard.fileName) } },
                         totalSize: all.reduce(UInt64(0)) { $0 + UInt64($1.byteCount) },
                         totalParameters: all.reduce(UInt64(0)) { $0 + UInt64($1.elementCount) }, mirroring: source)
    }

    /// An index listing `weightMap` (tensor, shard file), written as
    /// transformers writes one (sorted keys, two-space indent). Without a
    /// source: `metadata` holds `total_parameters` and `total_size`. Mirroring
    /// a source index: its members and `metadata` keys as they were (a
    /// duplicated key once, in its first place with its last value, as Python
    /// reads it), `total_size` set to the new byte count (added if missing),
    /// `total_parameters` updated only where the source has it, and the new `weight_map`.
    static func indexJSON(weightMap entries: [(tensor: String, file: String)], totalSize: UInt64, totalParameters: UInt64,
                          mirroring source: JSONObject?) -> String {
        var map = JSONObject()
        for entry in entries { map.append(entry.tensor, .string(entry.file)) }
        guard let source else {
            let index: JSONValue = .object([
                "metadata": .object(["total_parameters": .uint(totalParameters), "total_size": .uint(totalSize)]),
                "weight_map": .object(map),
            ])
            return JSONWriter.serialize(index, style: .indented, sortKeys: true) + "\n"
        }
        var index = deduplicated(source)
        var metadata = deduplicated(index["metadata"]?.objectValue ?? JSONObject())
        func set(_ key: String, _ value: JSONValue) {
            if let i = metadata.members.firstIndex(where: { $0.key == key }) { metadata.members[i].value = value } else { metadata.append(key, value) }
        }
        set("total_size", .uint(totalSize))
        if metadata["total_parameters"] != nil { set("total_parameters", .uint(totalParameters)) }

        index.members.removeAll { $0.key == "metadata" || $0.key == "weight_map" }
        index.append("metadata", .object(metadata))
        index.append("weight_map", .object(map))
        return JSONWriter.serialize(.object(index), style: .indented, sortKeys: true) + "\n"
    }

    /// An object with each key once: in its first place, with its last value.
    private static func deduplicated(_ object: JSONObject) -> JSONObject {
        var result = JSONObject()
        var position: [String: Int] = [:]
        for member in object.members {
            if let i = position[member.key] {
                result.members[i].value = member.value
            } else {
                position[member.key] = result.members.count
                result.append(member.key, member.value)
            }
        }
        return result
    }

    /// Appends tensor data in order, crossing into the next shard as needed.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while rest.count > 0 {
            while remainingInShard == 0 { try openNextShard() }
            let n = Int(min(UInt64(rest.count), remainingInShard))
            try current!.write(UnsafeRawBufferPointer(rebasing: rest[0..<n]))
            remainingInShard -= UInt64(n)
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    /// Sets aside the next tensor's `length` bytes (in the shard that holds
    /// it) for positioned writes from any thread.
    public func reserve(_ length: UInt64) throws -> OutputRegion {
        try shard(forNext: length).reserve(length)
    }

    /// Copies a stored tensor's bytes as they are (the kernel copies them).
    /// The tensor must be the next one.
    public func copy(_ tensor: StoredTensor, buffer: UnsafeMutableRawBufferPointer) throws {
        try shard(forNext: UInt64(tensor.info.byteCount)).copy(tensor, buffer: buffer)
    }

    /// The shard that holds the next tensor, of `length` bytes, with its room taken.
    private func shard(forNext length: UInt64) throws -> SafeTensorsWriter {
        while remainingInShard == 0 && length > 0 { try openNextShard() }
        precondition(length <= remainingInShard, "a tensor's bytes cannot span shards")
        remainingInShard -= length
        return current!
    }

    /// Finishes every shard, writes the index and moves the output into place.
    public func commit() throws {
        // Shards left to write: trailing ones without data, and this part's that got no tensor.
        for shard in writtenShards.sorted() where shard > currentShard { try enterShard(shard) }
        precondition(remainingInShard == 0, "commit() before all tensor data was written")
        try finishShard()
        try output.commit(indexJSON: indexJSON)
    }

    /// Adds a side file made in memory (a config) to a folder output.
    public func addFile(named name: String, bytes: [UInt8]) throws {
        guard let folder = output.folder else { preconditionFailure("addFile(named:bytes:) is for folder outputs") }
        try folder.writeSharedFile(name, bytes: bytes)
    }

    /// Writes the next tensor, which must be raw (one `data` part) as planned.
    public func writeTensor(_ tensor: TensorInfo, _ encode: (PartSink) throws -> TensorScheme) throws {
        guard let shard = shardOfTensor[tensor.name], writtenShards.contains(shard) else { preconditionFailure("\(tensor.name) is not written here") }
        if shard != currentShard { try enterShard(shard) }
        let sink = CheckpointPartSink(writer: self, tensor: tensor)
        let scheme = try encode(sink)
        precondition(scheme == .raw && sink.done, "\(tensor.name): a safetensors checkpoint holds raw tensors only")
    }

    /// Removes everything written so far (a part's shards already in place stay: they are complete).
    public func discard() {
        output.discard()
    }

    private func openNextShard() throws {
        try enterShard(currentShard + 1)
    }

    /// Finishes the current shard (complete by then) and starts `shard`.
    private func enterShard(_ shard: Int) throws {
        precondition(shard > currentShard && shard < shardPlan.count, "more tensor data than the plan holds")
        precondition(remainingInShard == 0, "a shard left before all its tensor data was written")
        try finishShard()
        currentShard = shard
        let plan = shardPlan[shard]
        current = try SafeTensorsWriter(output: try output.openShard(plan.fileName), tensors: plan.tensors, metadata: metadata)
        remainingInShard = plan.tensors.reduce(0) { $0 + UInt64($1.byteCount) }
    }

    /// Finishes the open shard and moves it into place when it is one file of a part.
    private func finishShard() throws {
        try current?.finish()
        current = nil
        try output.closeShard()
    }
}

/// The parts sink of a checkpoint: a raw tensor's one `data` part, written
/// into the shard that holds it.
private final class CheckpointPartSink: PartSink {
    let writer: CheckpointWriter
    let tensor: TensorInfo
    private(set) var done = false

    init(writer: CheckpointWriter, tensor: TensorInfo) {
        self.writer = writer
        self.tensor = tensor
    }

    private func check(_ part: PartLayout) {
        precondition(!done && part == PartLayout(.data, tensor.dtype, tensor.shape), "\(tensor.name): unexpected part \(part.description)")
    }

    func reserve(_ part: PartLayout) throws -> OutputRegion {
        check(part)
        return try writer.reserve(part.byteCount)
    }

    var needsBytesInOrder: Bool { false }
    func hashInOrder(_ bytes: UnsafeRawBufferPointer) {}
    func restartReserved() {}
    func endReserved() throws { done = true }

    func write(_ part: PartLayout, bytes: UnsafeRawBufferPointer) throws {
        check(part)
        try writer.write(bytes)
        done = true
    }

    /// Copied by the kernel; a part with a checksum (a container's) is read
    /// and hashed on the way instead.
    func copy(_ part: StoredPart, context: EncodingContext) throws {
        check(part.layout)
        if part.bytes.checksum != nil {
            var hasher = XXHash64()
            try streamBytes(of: part.bytes.file, from: part.bytes.offset, length: part.bytes.length,
                            into: try writer.reserve(part.bytes.length), buffers: context.copyBuffers, threads: context.threads) { hasher.update($0) }
            try part.bytes.check(hasher.digest())
        } else {
            try writer.copy(part.stored(named: tensor.name), buffer: context.copyBuffers.bytes(0))
        }
        done = true
    }
}
