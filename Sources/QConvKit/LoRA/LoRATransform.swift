/// A LoRA merge as a `TensorTransform`, so that the model pipelines
/// (`ModelRewriter`, `Dequantizer`) merge into any base.
public struct LoRATransform: TensorTransform {
    public let plan: LoRAMergePlan
    public let allowsNonFinite: Bool

    /// Combined changes are prepared one tensor ahead.
    private let lookahead: LookaheadPreparation

    public init(plan: LoRAMergePlan, allowNonfinite: Bool) {
        self.plan = plan
        allowsNonFinite = allowNonfinite
        lookahead = LookaheadPreparation(plan: plan)
    }

    public var inputFiles: [String] { plan.adapters.flatMap(\.filePaths) }

    public func output(for tensor: TensorInfo) -> TensorInfo? {
        plan.change(for: tensor.name)?.output
    }

    public func values(for tensor: TensorInfo, base: FloatTensorSource, threads: Int) throws -> FloatTensorSource {
        guard let change = plan.change(for: tensor.name) else { return base }
        return try MergedTensorSource(base: base, prepared: try lookahead.prepared(change, threads: threads), threads: threads)
    }
}
