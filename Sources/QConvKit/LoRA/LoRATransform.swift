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
        return try MergedTensorSource(base: base, prepared: try plan.prepare(change), threads: threads)
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
            let note: JSONObject = JSONObject([("merged_adapter", .object([
                "adapter": .string(adapter.path), "scale": .double(options.scale), "tensors_changed": .int(plan.changes.count),
            ]))])
            _ = try ContainerRewriter.rewrite(container, to: destination, transform: transform,
                                              options: .init(threads: options.threads, overwrite: options.overwrite, quiet: !options.showProgress, note: note))
        }
        return LoRAMergeSummary(plan: plan, base: container.path, output: destination, baseTensorCount: container.tensors.count)
    }
}
