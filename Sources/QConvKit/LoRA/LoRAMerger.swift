import Dispatch

/// How `LoRAMerger.merge` runs.
public struct LoRAMergeOptions {
    /// Multiplies every delta (PEFT's `scale_layer`); 1 merges the adapter as trained.
    public var scale: Double = 1
    /// Write merged tensors that hold NaN or infinity instead of failing.
    public var allowNonfinite = false
    public var threads: Int = defaultThreadCount
    /// Replace an existing destination.
    public var overwrite = false
    /// Draw a progress line on a terminal.
    public var showProgress = false

    public init() {}
}

/// What a merge changed (or, for a dry run, would change).
public struct LoRAMergeSummary {
    public struct Entry {
        public var name: String
        public var kind: String
        public var dtype: DType
        public var shape: [Int]
        public var rank: Int?
        public var alpha: Double?
        public var scale: Double?
        public var isDoRA: Bool
        public var replaced: Bool
        public var adapterTensors: [String]
    }

    public var base: String
    public var adapter: String
    /// nil for a dry run.
    public var output: String?
    public var mapping: LoRAKeyMapping
    public var scaleMultiplier: Double
    public var changes: [Entry]
    /// Tensors copied byte for byte.
    public var copiedCount: Int

    public init(plan: LoRAMergePlan, base: String, output: String?, baseTensorCount: Int) {
        self.base = base
        adapter = plan.adapter.path
        self.output = output
        mapping = plan.mapping
        scaleMultiplier = plan.scaleMultiplier
        changes = plan.changes.map { change in
            Entry(name: change.output.name, kind: change.kind.rawValue, dtype: change.output.dtype, shape: change.output.shape,
                  rank: change.rank, alpha: change.alpha, scale: change.scale, isDoRA: change.isDoRA,
                  replaced: change.replacement != nil, adapterTensors: change.adapterTensors)
        }
        copiedCount = baseTensorCount - changes.count
    }

    /// The `--json` report.
    public func json() -> JSONValue {
        var object = JSONObject()
        object.append("base", .string(base))
        object.append("adapter", .string(adapter))
        object.append("output", output.map(JSONValue.string) ?? .null)
        object.append("dry_run", .bool(output == nil))
        object.append("mapping", .object([
            "description": .string(mapping.description),
            "removed_prefix": .string(mapping.removedPrefix),
            "added_prefix": .string(mapping.addedPrefix),
        ]))
        object.append("scale_multiplier", .double(scaleMultiplier))
        object.append("tensors_changed", .int(changes.count))
        object.append("tensors_copied", .int(copiedCount))
        object.append("changes", .array(changes.map { entry in
            var item = JSONObject()
            item.append("name", .string(entry.name))
            item.append("kind", .string(entry.kind))
            item.append("dtype", .string(entry.dtype.rawValue))
            item.append("shape", .array(entry.shape.map(JSONValue.int)))
            item.append("rank", entry.rank.map(JSONValue.int) ?? .null)
            item.append("alpha", entry.alpha.map(JSONValue.double) ?? .null)
            item.append("scale", entry.scale.map(JSONValue.double) ?? .null)
            item.append("dora", .bool(entry.isDoRA))
            item.append("replaced", .bool(entry.replaced))
            item.append("adapter_tensors", .array(entry.adapterTensors.map(JSONValue.string)))
            return .object(item)
        }))
        return .object(object)
    }
}

/// Merges a PEFT LoRA adapter into a safetensors checkpoint (a file, a model
/// folder or a sharded folder) and writes a checkpoint of the same shape:
/// the same shard files with the same tensors, the index, the auxiliary
/// files, the metadata, and every untouched tensor byte for byte.
///
/// Changed tensors are read through a `MergedTensorSource` and written by the
/// same pipeline as `dequant` (`TensorEncoding.write`): chunks merged on every
/// thread a cache-sized tile at a time, written in order while the next are
/// merged. Memory: the decoded factors of one module and a few chunk buffers
/// per thread; a replacement tensor is streamed from the adapter, and DoRA
/// on fan_in_fan_out weights or embeddings (norms across rows) reads the
/// base twice instead of holding the tensor.
public enum LoRAMerger {
    /// Checks the adapter against the base and lists what would change.
    public static func plan(base: Checkpoint, adapter: LoRAAdapter, scale: Double = 1) throws -> LoRAMergePlan {
        try LoRAMergePlan(adapter: adapter, baseTensors: base.tensors.map(\.info), scaleMultiplier: scale, baseDescription: base.path)
    }

    /// Merges and writes `destination` atomically; nothing is written when the
    /// adapter does not fit or a merged value is not finite.
    @discardableResult
    public static func merge(base: Checkpoint, adapter: LoRAAdapter, to destination: String, options: LoRAMergeOptions = LoRAMergeOptions()) throws -> LoRAMergeSummary {
        let plan = try self.plan(base: base, adapter: adapter, scale: options.scale)
        let outputs = base.tensors.map { plan.change(for: $0.name)?.output ?? $0.info }

        let layout: CheckpointWriter.Layout
        let auxiliary = base.auxiliaryFiles.map { (source: FileSystem.join(base.path, $0), name: $0) }
        switch base.layout {
        case .file:
            layout = .file
        case .folder, .shardedFolder:
            var shards: [(fileName: String, tensors: [TensorInfo])] = base.shards.map { (FileSystem.baseName(of: $0.path), []) }
            for (tensor, output) in zip(base.tensors, outputs) { shards[tensor.shard].tensors.append(output) }
            layout = .folder(shards: shards)
        }
        // A sharded base's index is mirrored: its metadata keys are kept and
        // total_size follows the merged tensors (a resized vocabulary changes it).
        let writer = try CheckpointWriter(destination: destination, layout: layout, tensors: outputs, metadata: base.metadata,
                                          auxiliaryFiles: auxiliary, sourceIndex: base.layout == .shardedFolder ? base.index : nil,
                                          overwrite: options.overwrite, inputs: base.filePaths + adapter.filePaths)
        let progress = Progress(label: "merging", total: outputs.reduce(0) { $0 + UInt64($1.byteCount) }, quiet: !options.showProgress)
        defer { progress.finish() }
        do {
            let buffers = TensorEncoding.makeBuffers(threads: options.threads)
            for (tensor, info) in zip(base.tensors, outputs) {
                if let change = plan.change(for: tensor.name) {
                    try writeMerged(tensor.stored, change: change, plan: plan, into: writer, buffers: buffers, options: options)
                } else {
                    try writer.copy(tensor.stored, buffer: buffers.bytes(0))
                }
                progress.advance(by: UInt64(info.byteCount), item: tensor.name)
            }
            try writer.commit()
        } catch {
            writer.discard()
            throw error
        }
        return LoRAMergeSummary(plan: plan, base: base.path, output: destination, baseTensorCount: base.tensors.count)
    }

    /// Merges one tensor and writes it in its output dtype.
    static func writeMerged(_ base: FloatTensorSource, change: LoRATensorChange, plan: LoRAMergePlan, into writer: CheckpointWriter,
                            buffers: ChunkBuffers, options: LoRAMergeOptions) throws {
        let source = try MergedTensorSource(base: base, prepared: try plan.prepare(change, decodeReplacement: false), threads: options.threads)
        let nonFinite = try TensorEncoding.write(source, as: change.output.dtype, into: try writer.reserve(UInt64(change.output.byteCount)),
                                                 buffers: buffers, threads: options.threads)
        if nonFinite > 0 && !options.allowNonfinite {
            throw LoRAMergeError.nonFiniteResult(tensor: change.output.name, count: nonFinite)
        }
    }
}
