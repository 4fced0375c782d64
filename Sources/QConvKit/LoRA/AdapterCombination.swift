/// How several LoRA adapters become one, as PEFT's `add_weighted_adapter`
/// combines them (`combination_type`), before the result is merged like a
/// single adapter (`merge_and_unload`).
///
/// Every method gives each module one equivalent LoRA, factors `B'`
/// `[out, k]` and `A'` `[k, in]` with PEFT's scale for the new adapter
/// (`LoRACombinedModule`), which the merge then adds to the base as it adds
/// any adapter: streaming, into any format, rounded once.
public enum LoRACombinationMethod: Equatable, Sendable {
    /// `cat`: `A' = [w_1 s_1 A_1; ...]`, `B' = [B_1 ... B_n]`; the delta is
    /// exactly `sum_i w_i s_i B_i A_i` (ranks may differ).
    case cat
    /// `linear`, `ties`, `magnitude_prune`, `dare_linear`, `dare_ties`: the
    /// task merge applied to the `A_i` with weights `sign(w_i s_i) sqrt|w_i s_i|`
    /// and to the `B_i` with `sqrt|w_i s_i|`, separately (equal ranks needed).
    case factors(LoRATaskMerge)
    /// `svd`, `ties_svd`, ...: the task merge applied to the deltas
    /// `s_i B_i A_i` with weights `w_i`, then the truncated SVD of the result:
    /// `B' = U_k S_k`, `A' = V_k^T` (optionally clamped).
    case svd(LoRATaskMerge, LoRASVDTruncation)

    /// PEFT's `combination_type` name.
    public var name: String {
        switch self {
        case .cat: return "cat"
        case .factors(let merge): return merge.factorsName
        case .svd(let merge, _): return merge.factorsName == "linear" ? "svd" : merge.factorsName + "_svd"
        }
    }

    /// Every name `name` can be, in PEFT's documentation order.
    public static let names = ["cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd",
                               "magnitude_prune", "magnitude_prune_svd"]

    /// The task merge, for every method but `cat`.
    public var taskMerge: LoRATaskMerge? {
        switch self {
        case .cat: return nil
        case .factors(let merge), .svd(let merge, _): return merge
        }
    }
}

/// PEFT's `merge_utils`: how task tensors `t_i` (all of one shape) with
/// weights `w_i` become one.
public enum LoRATaskMerge: Equatable, Sendable {
    /// `task_arithmetic`: `sum_i w_i t_i`.
    case sum
    /// `ties`: each `t_i` keeps its `density` largest magnitudes; a sign is
    /// elected per element; the mean of the weighted values of that sign.
    case ties(density: Double, majoritySign: LoRAMajoritySign)
    /// `magnitude_prune`: each `t_i` keeps its `density` largest magnitudes, then `sum_i w_i t_i`.
    case magnitudePrune(density: Double)
    /// `dare_linear`: each element of each `t_i` is kept with probability
    /// `density` and divided by it (`LoRARandomMask`), then `sum_i w_i t_i`.
    case dareLinear(density: Double, seed: UInt64)
    /// `dare_ties`: the random masks of `dare_linear`, then the sign election of `ties`.
    case dareTies(density: Double, majoritySign: LoRAMajoritySign, seed: UInt64)

    /// The name of the method applying this merge to the factors.
    var factorsName: String {
        switch self {
        case .sum: return "linear"
        case .ties: return "ties"
        case .magnitudePrune: return "magnitude_prune"
        case .dareLinear: return "dare_linear"
        case .dareTies: return "dare_ties"
        }
    }

    /// The fraction of each task tensor kept, for the pruning merges.
    public var density: Double? {
        switch self {
        case .sum: return nil
        case .ties(let density, _), .magnitudePrune(let density), .dareLinear(let density, _), .dareTies(let density, _, _): return density
        }
    }

    public var majoritySign: LoRAMajoritySign? {
        switch self {
        case .ties(_, let sign), .dareTies(_, let sign, _): return sign
        case .sum, .magnitudePrune, .dareLinear: return nil
        }
    }

    /// The seed of the random masks, for the DARE merges.
    public var seed: UInt64? {
        switch self {
        case .dareLinear(_, let seed), .dareTies(_, _, let seed): return seed
        case .sum, .ties, .magnitudePrune: return nil
        }
    }
}

/// How `ties` elects each element's sign (`majority_sign_method`).
public enum LoRAMajoritySign: String, Equatable, Sendable, CaseIterable {
    /// The sign of the sum of the (pruned, unweighted) values.
    case total
    /// The sign held by more of the (pruned) values.
    case frequency
}

/// The SVD methods' truncation: `svd_rank` and `svd_clamp`.
public struct LoRASVDTruncation: Equatable, Sendable {
    /// The rank kept; nil: the largest rank among the adapters (PEFT's default).
    public var rank: Int?
    /// A quantile in [0, 1]: the values of `U_k S_k` and `V_k^T` are clamped
    /// to +- that quantile of all of them; nil: no clamp.
    public var clamp: Double?

    public init(rank: Int? = nil, clamp: Double? = nil) {
        self.rank = rank
        self.clamp = clamp
    }
}

/// What a multi-adapter merge does: the method and one weight per adapter.
public struct LoRACombination: Equatable, Sendable {
    public var method: LoRACombinationMethod
    /// `w_i`, in the order of the adapters.
    public var weights: [Double]

    public init(method: LoRACombinationMethod, weights: [Double]) {
        self.method = method
        self.weights = weights
    }

    /// The method PEFT applies: with one adapter, `add_weighted_adapter`
    /// always combines linearly, whatever was asked.
    var effectiveMethod: LoRACombinationMethod {
        weights.count == 1 ? .factors(.sum) : method
    }

    /// The combination as the JSON report and a container's provenance record it.
    public func json(adapters: [String]) -> JSONValue {
        let method = effectiveMethod
        var object = JSONObject()
        object.append("method", .string(method.name))
        object.append("requested_method", .string(self.method.name))
        object.append("adapters", .array(adapters.map(JSONValue.string)))
        object.append("weights", .array(weights.map(JSONValue.double)))
        let merge = method.taskMerge
        object.append("density", merge?.density.map(JSONValue.double) ?? .null)
        object.append("majority_sign_method", merge?.majoritySign.map { .string($0.rawValue) } ?? .null)
        object.append("seed", merge?.seed.map { .uint($0) } ?? .null)
        if case let .svd(_, truncation) = method {
            object.append("svd_rank", truncation.rank.map(JSONValue.int) ?? .null)
            object.append("svd_clamp", truncation.clamp.map(JSONValue.double) ?? .null)
        } else {
            object.append("svd_rank", .null)
            object.append("svd_clamp", .null)
        }
        return .object(object)
    }
}
