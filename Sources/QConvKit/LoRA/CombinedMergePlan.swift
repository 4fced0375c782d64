/// Why adapters cannot be combined as asked. Invalid input (exit 3), except a
/// weight count that does not match the adapters (a usage error).
public enum LoRACombinationError: QConvError, Equatable {
    /// One weight per adapter is needed.
    case weightCount(adapters: Int, weights: Int)
    /// `linear`, `ties`, `magnitude_prune` and the DARE methods add factors
    /// element by element, so PEFT requires one rank for every adapter.
    case ranksDiffer(method: String, ranks: [String])
    /// A part of an adapter PEFT's `add_weighted_adapter` does not carry into
    /// the combined adapter (DoRA, `lora_B.bias`, whole-module tensors).
    case unsupported(adapter: String, tensor: String, feature: String)
    /// Two adapters change one base tensor in different ways (an embedding
    /// and a linear LoRA, or `fan_in_fan_out` in only one of them).
    case kindsDiffer(tensor: String, kinds: [String])

    public var category: ErrorCategory {
        switch self {
        case .weightCount: return .usage
        case .ranksDiffer, .unsupported, .kindsDiffer: return .invalidInput
        }
    }

    public var description: String {
        switch self {
        case let .weightCount(adapters, weights):
            return "\(weights) weight\(weights == 1 ? "" : "s") for \(adapters) adapter\(adapters == 1 ? "" : "s"): give one weight per adapter"
        case let .ranksDiffer(method, ranks):
            return "combination '\(method)' adds the adapters' factors element by element and needs one rank for all of them (as PEFT does), "
                + "but the ranks differ: \(ranks.joined(separator: ", ")); 'cat' or an SVD method combines adapters of different ranks"
        case let .unsupported(adapter, tensor, feature):
            return "\(adapter): tensor '\(tensor)': \(feature) cannot be combined with other adapters "
                + "(PEFT's add_weighted_adapter does not carry it into the combined adapter); merge this adapter on its own"
        case let .kindsDiffer(tensor, kinds):
            return "base tensor '\(tensor)': the adapters change it in different ways (\(kinds.joined(separator: ", "))) and cannot be combined"
        }
    }
}

/// The adapters that change one base tensor and how their factors combine:
/// what a combined `LoRATensorChange` merges instead of one module's factors.
public struct LoRACombinedModule {
    /// One adapter's module with its weight.
    public struct Contribution {
        public let module: LoRAModule
        /// The adapter's place in the combination (for the random streams).
        public let adapterIndex: Int
        /// The user's weight `w_i`.
        public let weight: Double
        /// The module's own scale `s_i` (alpha / r or alpha / sqrt(r)).
        public var scale: Double { module.scale }
    }

    /// The base tensor (names the random streams of the DARE methods).
    public let tensor: String
    public let contributions: [Contribution]
    /// The method PEFT applies (linear for a single adapter).
    public let method: LoRACombinationMethod
    /// PEFT's rank of the combined adapter: the SVD methods keep this many
    /// singular values (at most the rank of the delta).
    public let rank: Int
    /// The 16-bit dtype PEFT holds the combined factors in, nil for float32.
    /// PEFT makes the combined adapter in the base layer's dtype; `cat`
    /// copies the factors into it (rounding them), then the delta is computed
    /// in float32 and rounded to that dtype before it is added (LoRA's
    /// `get_delta_weight` on the CPU). The other methods replace the factors
    /// with their float32 results.
    public internal(set) var factorDType: DType? = nil

    /// The adapter tensors that go into the change.
    public var adapterTensors: [String] { contributions.flatMap { [$0.module.down.name, $0.module.up.name] } }

    /// The combined factors: `up` `[out, k]` and `down` `[k, in]` (`lora_B`
    /// and `lora_A` orientation), `k >= 1`.
    public func factors(threads: Int) throws -> (up: [Float], down: [Float], rank: Int) {
        try CombinedFactors(self).compute(threads: threads)
    }
}

extension LoRAMergePlan {
    /// A plan that merges several adapters combined as PEFT's
    /// `add_weighted_adapter(adapters, weights, combination_type=...)` followed
    /// by `merge_and_unload()` would.
    ///
    /// Each adapter is checked against the base as it would be on its own;
    /// then every base tensor some of them change gets one combined change.
    /// A base layer an adapter stores (`embed_tokens.base_layer.weight`,
    /// which PEFT saves with every adapter of an embedding) replaces the base
    /// tensor as loading the adapters in order would: the last adapter that
    /// stores one wins; the combined delta is added on top.
    /// The combined adapter's scale is PEFT's: `lora_alpha = r = new rank`,
    /// so 1, or `sqrt(new rank)` when the first adapter uses rsLoRA (PEFT
    /// copies the first adapter's config), times `scaleMultiplier`.
    ///
    /// - Parameter quantizedTensors: base tensors stored quantized, whose
    ///   PEFT layers are bitsandbytes layers (a combined adapter on them is
    ///   float32).
    public init(combining adapters: [LoRAAdapter], combination: LoRACombination, baseTensors: [TensorInfo], scaleMultiplier: Double = 1,
                baseDescription: String, quantizedTensors: Set<String> = []) throws {
        precondition(!adapters.isEmpty, "a combination of no adapters")
        guard combination.weights.count == adapters.count else {
            throw LoRACombinationError.weightCount(adapters: adapters.count, weights: combination.weights.count)
        }
        let plans = try adapters.map { try LoRAMergePlan(adapter: $0, baseTensors: baseTensors, baseDescription: baseDescription) }
        let method = combination.effectiveMethod
        let newRank = try Self.combinedRank(adapters, method: method)
        let scale = adapters[0].config.scale(rank: newRank, alpha: Double(newRank), multiplier: scaleMultiplier)
        var changes: [LoRATensorChange] = []
        for base in baseTensors {
            var contributions: [LoRACombinedModule.Contribution] = []
            var kinds: [(adapter: String, kind: LoRATensorChange.Kind)] = []
            var baseLayer: StoredTensor?
            for (index, plan) in plans.enumerated() {
                guard let change = plan.change(for: base.name) else { continue }
                let (module, stored) = try Self.combinable(change, of: adapters[index])
                baseLayer = stored ?? baseLayer
                guard let module else { continue }
                contributions.append(.init(module: module, adapterIndex: index, weight: combination.weights[index]))
                kinds.append((adapters[index].path, change.kind))
            }
            let output = TensorInfo(name: base.name, dtype: base.dtype, shape: baseLayer?.info.shape ?? base.shape)
            guard let first = contributions.first, let kind = kinds.first?.kind else {
                if let baseLayer {
                    changes.append(LoRATensorChange(base: base, output: output, kind: .replacement, replacement: baseLayer, module: nil,
                                                    rank: nil, alpha: nil, scale: nil))
                }
                continue
            }
            guard kinds.allSatisfy({ $0.kind == kind }) else {
                throw LoRACombinationError.kindsDiffer(tensor: base.name, kinds: kinds.map { "\($0.adapter): \($0.kind.rawValue)" })
            }
            var change = LoRATensorChange(base: base, output: output, kind: kind, replacement: baseLayer, module: first.module,
                                          rank: newRank, alpha: Double(newRank), scale: scale)
            change.combined = LoRACombinedModule(tensor: base.name, contributions: contributions, method: method, rank: newRank)
            if case .cat = method, base.dtype == .f16 || base.dtype == .bf16, !quantizedTensors.contains(base.name) {
                change.combined?.factorDType = base.dtype
            }
            changes.append(change)
        }
        self.init(adapters: adapters, mappings: plans.map(\.mapping), scaleMultiplier: scaleMultiplier, combination: combination, changes: changes)
    }

    /// What a change brings to a combination: its module (nil for a base
    /// layer stored alone) and the base layer it stores.
    private static func combinable(_ change: LoRATensorChange, of adapter: LoRAAdapter) throws -> (module: LoRAModule?, baseLayer: StoredTensor?) {
        let path = adapter.path
        if let replacement = change.replacement, !LoRAReplacement.isBaseLayer(replacement) {
            throw LoRACombinationError.unsupported(adapter: path, tensor: replacement.name, feature: "a whole-module tensor (modules_to_save)")
        }
        if change.kind == .replacement { return (nil, change.replacement) }
        guard let module = change.module, change.kind != .bias else {
            throw LoRACombinationError.unsupported(adapter: path, tensor: change.adapterTensors.first ?? change.base.name, feature: "lora_B.bias")
        }
        if let magnitude = module.magnitude {
            throw LoRACombinationError.unsupported(adapter: path, tensor: magnitude.name, feature: "a DoRA magnitude")
        }
        if let bias = module.upBias {
            throw LoRACombinationError.unsupported(adapter: path, tensor: bias.name, feature: "lora_B.bias")
        }
        return (module, change.replacement)
    }

    /// PEFT's rank of the combined adapter, from the configs (`r`, or the
    /// largest of `r` and the `rank_pattern` values): their sum for `cat`,
    /// their common value for the factor methods, `svd_rank` or the largest
    /// for the SVD methods.
    static func combinedRank(_ adapters: [LoRAAdapter], method: LoRACombinationMethod) throws -> Int {
        let ranks = adapters.map { adapter in ([adapter.config.rank] + adapter.config.rankPattern.map(\.rank)).max() ?? adapter.config.rank }
        switch method {
        case .cat:
            return ranks.reduce(0, +)
        case .factors:
            guard Set(ranks).count == 1 else {
                throw LoRACombinationError.ranksDiffer(method: method.name, ranks: zip(adapters, ranks).map { "\($0.path): r=\($1)" })
            }
            return ranks[0]
        case let .svd(_, truncation):
            return truncation.rank ?? ranks.max() ?? 1
        }
    }
}
