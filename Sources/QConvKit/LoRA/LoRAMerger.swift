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
    public var progress: ProgressHandler?
    /// A folder output: shards of at most this many bytes instead of the base's shards.
    public var maxShardSize: UInt64?
    /// A folder output: write only this part's shards.
    public var part: OutputPart?

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
    /// Every adapter merged (`adapter` first).
    public var adapters: [String]
    /// How several adapters were combined; nil for one adapter merged as it is.
    public var combination: LoRACombination?
    /// The tied embeddings the merge unties; nil when it does not.
    public var untied: TiedEmbeddings?
    /// nil for a dry run.
    public var output: String?
    public var mapping: LoRAKeyMapping
    public var scaleMultiplier: Double
    public var changes: [Entry]
    /// Tensors copied byte for byte.
    public var copiedCount: Int
    /// The quantization a merge went through (`QuantizedBaseTransform`), and
    /// how many tensors became `dequant(quant(W))`; nil for a plain merge.
    public var through: (quantization: WeightQuantization, tensorCount: Int)?

    public init(plan: LoRAMergePlan, base: String, output: String?, baseTensorCount: Int) {
        self.base = base
        adapter = plan.adapter.path
        adapters = plan.adapters.map(\.path)
        combination = plan.combination
        untied = plan.untiedEmbeddings
        self.output = output
        mapping = plan.mapping
        scaleMultiplier = plan.scaleMultiplier
        changes = plan.changes.map { change in
            Entry(name: change.output.name, kind: change.kind.rawValue, dtype: change.output.dtype, shape: change.output.shape,
                  rank: change.rank, alpha: change.alpha, scale: change.scale, isDoRA: change.isDoRA,
                  replaced: change.replacement != nil, adapterTensors: change.adapterTensors)
        }
        // Untying may add the output embedding, which the base's files lacked.
        copiedCount = baseTensorCount + (untied?.outputStored == false ? 1 : 0) - changes.count
    }

    /// The JSON report of docs/CLI.md.
    public func json() -> JSONValue {
        var object = JSONObject()
        object.append("base", .string(base))
        object.append("adapter", .string(adapter))
        object.append("adapters", .array(adapters.map(JSONValue.string)))
        object.append("combination", combination?.json(adapters: adapters) ?? .null)
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
        object.append("through", through.map { Self.json($0.quantization, tensorCount: $0.tensorCount) } ?? .null)
        object.append("untied", untied?.json ?? .null)
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

/// Merges a PEFT LoRA adapter into a model of any format qconv reads, as
/// PEFT's `merge_and_unload()` does, and writes a model of the same shape:
/// the same format, shard files with the same tensors, index, side files and
/// metadata, and every untouched tensor byte for byte (`ModelRewriter`); or,
/// with `dequantize`, a safetensors checkpoint (`Dequantizer`).
///
/// Changed tensors are read through a `MergedTensorSource`: chunks merged on
/// every thread a cache-sized tile at a time, encoded (or quantized again,
/// for a quantized base: QLoRA) in order while the next are merged. Memory:
/// the decoded factors of one module and a few chunk buffers per thread; a
/// replacement tensor is streamed from the adapter, and DoRA on
/// fan_in_fan_out weights or embeddings (norms across rows) reads the base
/// twice instead of holding the tensor.
public enum LoRAMerger {
    /// Checks the adapter against the base's tensors (their source dtypes
    /// and shapes) and lists what would change.
    public static func plan(base: Model, adapter: LoRAAdapter, scale: Double = 1) throws -> LoRAMergePlan {
        try LoRAMergePlan(adapter: adapter, baseTensors: base.tensors.map(\.info), scaleMultiplier: scale, baseDescription: base.path)
    }

    /// Merges and writes `destination` atomically; nothing is written when the
    /// adapter does not fit or a merged value is not finite.
    ///
    /// - Parameters:
    ///   - dequantize: write safetensors (a file for a `.safetensors`
    ///     destination, else a model folder) instead of the base's format.
    ///   - dtype: with `dequantize`, the output dtype of float tensors (nil:
    ///     each tensor's source dtype).
    @discardableResult
    public static func merge(base: Model, adapter: LoRAAdapter, to destination: String, options: LoRAMergeOptions = LoRAMergeOptions(),
                             dequantize: Bool = false, dtype: DType? = nil) throws -> LoRAMergeSummary {
        try merge(plan: try self.plan(base: base, adapter: adapter, scale: options.scale), base: base, to: destination, options: options,
                  dequantize: dequantize, dtype: dtype)
    }

    /// Checks several adapters against the base and plans their combination
    /// (PEFT's `add_weighted_adapter`); one adapter with `combination` nil is `plan(base:adapter:scale:)`.
    /// A base with tied embeddings (`TiedEmbeddings`) is planned with its
    /// output embedding as a tensor of its own; when the adapters change
    /// either side the plan says so (`untiedEmbeddings`) and the merge unties it.
    public static func plan(base: Model, adapters: [LoRAAdapter], combination: LoRACombination?, scale: Double = 1) throws -> LoRAMergePlan {
        func plan(_ model: Model) throws -> LoRAMergePlan {
            guard let combination else { return try self.plan(base: model, adapter: adapters[0], scale: scale) }
            return try LoRAMergePlan(combining: adapters, combination: combination, baseTensors: model.tensors.map(\.info), scaleMultiplier: scale,
                                     baseDescription: model.path, quantizedTensors: Set(model.tensors.filter { $0.scheme.isQuantized }.map(\.name)))
        }
        if let tied = try TiedEmbeddings.detect(in: base), var untied = try? plan(tied.withOutputTensor(base)), tied.isChanged(by: untied) {
            untied.untiedEmbeddings = tied
            return untied
        }
        return try plan(base)
    }

    /// Merges what `plan` (made for `base`) says; see `merge(base:adapter:to:options:dequantize:dtype:)`.
    /// `options.scale` is the plan's.
    ///
    /// - Parameter through: merge into the base as a QLoRA model quantized
    ///   this way saw it (`QuantizedBaseTransform`); `base` must not be quantized.
    @discardableResult
    public static func merge(plan: LoRAMergePlan, base: Model, to destination: String, options: LoRAMergeOptions = LoRAMergeOptions(),
                             dequantize: Bool = false, dtype: DType? = nil, through: WeightQuantization? = nil) throws -> LoRAMergeSummary {
        let original = base.tensors.count
        var base = base
        if let tied = plan.untiedEmbeddings { base = try tied.untie(base) }
        var transform: TensorTransform = LoRATransform(plan: plan, allowNonfinite: options.allowNonfinite)
        var throughCount = 0
        if let through {
            if let quantized = base.tensors.first(where: { $0.scheme.isQuantized }) {
                throw ConversionError.alreadyQuantized(path: base.path, tensor: quantized.name, scheme: quantized.scheme.summary)
            }
            // A new way to merge, so it gives PEFT's bits (no earlier output to keep).
            let selection = try TensorSelection()
            let quantized = QuantizedBaseTransform(merge: LoRATransform(plan: plan.throughQuantization { QuantizedBaseTransform.isQuantized($0, selection: selection) },
                                                                        allowNonfinite: options.allowNonfinite),
                                                   quantization: through, selection: selection)
            throughCount = base.tensors.filter { quantized.isQuantized($0.info) }.count
            transform = quantized
        }
        do {
            if dequantize {
                _ = try Dequantizer.dequantize(base, to: destination, options: .init(dtype: dtype, maxShardSize: options.maxShardSize, threads: options.threads,
                                                                                     overwrite: options.overwrite, progress: options.progress, part: options.part),
                                               transform: transform)
            } else {
                // A container's provenance lists the rewritten tensors: `verify`
                // measures a raw one of them instead of requiring it to be identical.
                var merged = JSONObject([
                    ("adapter", .string(plan.adapter.path)), ("scale", .double(plan.scaleMultiplier)), ("tensors_changed", .int(plan.changes.count)),
                    ("tensors", .array(plan.changes.map { .string($0.output.name) })),
                ])
                if let combination = plan.combination { merged.append("combination", combination.json(adapters: plan.adapters.map(\.path))) }
                let note = JSONObject([(RoundTripVerifier.mergeProvenanceKey, .object(merged))])
                try ModelRewriter.rewrite(base, to: destination, transform: transform,
                                          options: .init(threads: options.threads, overwrite: options.overwrite, note: note, progress: options.progress,
                                                         maxShardSize: options.maxShardSize, part: options.part))
            }
        } catch let error as ConversionError {
            throw mergeError(error, plan: plan, base: base)
        }
        var summary = LoRAMergeSummary(plan: plan, base: base.path, output: destination, baseTensorCount: original)
        if let through {
            summary.through = (through, throughCount)
            summary.copiedCount = base.tensors.filter { transform.output(for: $0.info) == nil }.count
        }
        return summary
    }

    /// A conversion error of a merged tensor says so: the encoder saw the
    /// merged values, not the base's (its error names the base file, as if
    /// the base were bad).
    static func mergeError(_ error: ConversionError, plan: LoRAMergePlan, base: Model) -> Error {
        switch error {
        case let .nonFiniteResults(tensor, count) where plan.change(for: tensor) != nil:
            return LoRAMergeError.nonFiniteResult(tensor: tensor, count: count)
        case let .nonFiniteValue(_, tensor, index, value) where plan.change(for: tensor) != nil:
            return LoRAMergeError.nonFiniteRequantization(tensor: tensor, scheme: base.tensor(named: tensor)?.scheme.name ?? "?", index: index, value: value)
        case let .float16Overflow(_, tensor, index, value) where plan.change(for: tensor) != nil:
            return LoRAMergeError.requantizationOverflow(tensor: tensor, index: index, value: value)
        case .nonFiniteResults, .nonFiniteValue, .float16Overflow, .schemeMismatch, .notAFolderOutput, .alreadyQuantized:
            return error
        }
    }
}

extension LoRAMergeSummary {
    /// The `through` member of the JSON report.
    static func json(_ quantization: WeightQuantization, tensorCount: Int) -> JSONValue {
        var object = JSONObject()
        object.append("quantization", .string(quantization.name))
        switch quantization {
        case let .fourBit(_, blockSize, doubleQuant):
            object.append("block_size", .int(blockSize))
            object.append("double_quant", .bool(doubleQuant))
        case .int8:
            object.append("block_size", .null)
            object.append("double_quant", .null)
        }
        object.append("tensors", .int(tensorCount))
        return .object(object)
    }
}
