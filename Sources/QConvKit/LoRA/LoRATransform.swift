/// A LoRA merge as a `TensorTransform`, so that containers can be merged into
/// by the container pipelines (`ContainerRewriter`, `Dequantizer`).
public struct LoRATransform: TensorTransform {
    public let plan: LoRAMergePlan
    public let allowsNonFinite: Bool

    public init(plan: LoRAMergePlan, allowNonfinite: Bool) {
        self.plan = plan
        allowsNonFinite = allowNonfinite
    }

    public var inputFiles: [String] { plan.adapter.filePaths }

    public func output(for tensor: TensorInfo) -> TensorInfo? {
        plan.change(for: tensor.name)?.output
    }

    public func values(for tensor: TensorInfo, base: FloatTensorSource, threads: Int) throws -> FloatTensorSource {
        guard let change = plan.change(for: tensor.name) else { return base }
        return try MergedTensorSource(base: base, prepared: try plan.prepare(change, decodeReplacement: false), threads: threads)
    }

    public func nonFiniteError(tensor: String, count: Int) -> Error {
        LoRAMergeError.nonFiniteResult(tensor: tensor, count: count)
    }
}

extension LoRAMerger {
    /// Checks the adapter against a container's tensors (their source dtypes and shapes).
    public static func plan(container: ContainerFile, adapter: LoRAAdapter, scale: Double = 1) throws -> LoRAMergePlan {
        try LoRAMergePlan(adapter: adapter, baseTensors: container.tensors.map(\.info), scaleMultiplier: scale, baseDescription: container.path)
    }

    /// Merges into a quantized base (QLoRA): each changed tensor is
    /// dequantized, merged in float32 and quantized again with its own scheme
    /// and parameters; everything else is copied. With `dequantize`, writes
    /// safetensors instead (a file for a `.safetensors` destination, else a
    /// model folder), each tensor in `dtype` or its source dtype.
    @discardableResult
    public static func merge(container: ContainerFile, adapter: LoRAAdapter, to destination: String, options: LoRAMergeOptions = LoRAMergeOptions(),
                             dequantize: Bool = false, dtype: DType? = nil) throws -> LoRAMergeSummary {
        let plan = try self.plan(container: container, adapter: adapter, scale: options.scale)
        let transform = LoRATransform(plan: plan, allowNonfinite: options.allowNonfinite)
        if dequantize {
            _ = try Dequantizer.dequantize(container, to: destination,
                                           options: .init(dtype: dtype, threads: options.threads, overwrite: options.overwrite, quiet: !options.showProgress),
                                           transform: transform)
        } else {
            // The provenance lists the rewritten tensors: `verify` measures a
            // raw one of them instead of requiring it to be identical.
            let note: JSONObject = JSONObject([(RoundTripVerifier.mergeProvenanceKey, .object([
                "adapter": .string(adapter.path), "scale": .double(options.scale), "tensors_changed": .int(plan.changes.count),
                "tensors": .array(plan.changes.map { .string($0.output.name) }),
            ]))])
            do {
                _ = try ContainerRewriter.rewrite(container, to: destination, transform: transform,
                                                  options: .init(threads: options.threads, overwrite: options.overwrite, quiet: !options.showProgress, note: note))
            } catch ConversionError.nonFiniteValue(_, let tensor, let index, let value) where plan.change(for: tensor) != nil {
                // The quantizer saw the merged values, not the base's: say so
                // (its error names the base file, as if the base were bad).
                throw LoRAMergeError.nonFiniteRequantization(tensor: tensor, scheme: container.tensor(named: tensor)?.scheme.rawValue ?? "?",
                                                             index: index, value: value)
            } catch ConversionError.float16Overflow(_, let tensor, let index, let value) where plan.change(for: tensor) != nil {
                throw LoRAMergeError.requantizationOverflow(tensor: tensor, index: index, value: value)
            }
        }
        return LoRAMergeSummary(plan: plan, base: container.path, output: destination, baseTensorCount: container.tensors.count)
    }
}
