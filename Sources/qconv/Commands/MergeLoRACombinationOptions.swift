import QConvCommandLine
import QConvKit

/// `merge-lora`'s options for several adapters (PEFT's `add_weighted_adapter`).
enum MergeLoRACombinationOptions {
    static let weightsOption = Option<[Double]>("--weights", "W1,W2,...",
                                                "One weight per ADAPTER, in order (default 1 each); negative weights subtract.",
                                                expected: "numbers separated by commas") { text in
        let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Double(String($0.filter { $0 != " " })) }
        guard values.allSatisfy({ $0?.isFinite == true }) else { return nil }
        return values.compactMap { $0 }
    }
    static let methodOption = Option<String>("--method", "M",
                                             "How several adapters combine (PEFT's combination_type): \(LoRACombinationMethod.names.joined(separator: ", ")).",
                                             expected: "one of \(LoRACombinationMethod.names.joined(separator: ", "))") {
        LoRACombinationMethod.names.contains($0) ? $0 : nil
    }
    static let densityOption = Option<Double>("--density", "D", "ties, magnitude_prune, dare_*: the fraction of each task tensor kept.",
                                              expected: "a number in 0...1", allowing: { (0...1).contains($0) })
    static let majoritySignOption = Option<LoRAMajoritySign>("--majority-sign", "total|frequency",
                                                             "ties, dare_ties: elect each element's sign by the sum (total, default) or the count of signs.",
                                                             expected: "total or frequency") { LoRAMajoritySign(rawValue: $0) }
    static let svdRankOption = Option<Int>("--svd-rank", "R", "SVD methods: the rank kept (default: the largest adapter rank).", in: 1...65536)
    static let svdClampOption = Option<Double>("--svd-clamp", "Q", "SVD methods: clamp the factors to the Q quantile of their values.",
                                               expected: "a number in 0...1", allowing: { (0...1).contains($0) })
    static let seedOption = Option<UInt64>("--seed", "N", "dare_*: the seed of the random masks (default 0); the same seed gives the same output.",
                                           expected: "an integer in 0...\(UInt64.max)") { UInt64($0) }

    static let specs = [weightsOption.spec, methodOption.spec, densityOption.spec, majoritySignOption.spec, svdRankOption.spec,
                        svdClampOption.spec, seedOption.spec]

    /// The combination the options ask for; nil for one adapter merged as
    /// it is (neither --weights nor --method).
    static func parse(_ arguments: ParsedArguments, adapterCount: Int) throws -> LoRACombination? {
        let weights = try arguments.value(weightsOption), name = try arguments.value(methodOption)
        let density = try arguments.value(densityOption), sign = try arguments.value(majoritySignOption)
        let svdRank = try arguments.value(svdRankOption), svdClamp = try arguments.value(svdClampOption), seed = try arguments.value(seedOption)
        if adapterCount > 1 && name == nil {
            throw arguments.usageError("\(adapterCount) adapters need --method (cat adds their deltas exactly)")
        }
        if let weights, weights.count != adapterCount {
            throw arguments.usageError("--weights gives \(weights.count) weight\(weights.count == 1 ? "" : "s") for \(adapterCount) adapter\(adapterCount == 1 ? "" : "s")")
        }
        guard let name = name ?? (weights == nil ? nil : "linear") else {
            for option in specs where arguments.isGiven(option) { throw arguments.usageError("\(option.name) goes with --method") }
            return nil
        }
        let pruning = !["cat", "linear", "svd"].contains(name)
        let usesSign = name.hasPrefix("ties") || name.hasPrefix("dare_ties")
        let isSVD = name.hasSuffix("svd"), isDARE = name.hasPrefix("dare")
        func refuse(_ option: OptionSpec, unless allowed: Bool, _ methods: String) throws {
            if !allowed && arguments.isGiven(option) { throw arguments.usageError("\(option.name) goes with --method \(methods), not \(name)") }
        }
        try refuse(densityOption.spec, unless: pruning, "ties, magnitude_prune, dare_linear, dare_ties (and their _svd forms)")
        try refuse(majoritySignOption.spec, unless: usesSign, "ties, dare_ties (and their _svd forms)")
        try refuse(svdRankOption.spec, unless: isSVD, "svd or a *_svd method")
        try refuse(svdClampOption.spec, unless: isSVD, "svd or a *_svd method")
        try refuse(seedOption.spec, unless: isDARE, "dare_linear, dare_ties (and their _svd forms)")
        if pruning && density == nil { throw arguments.usageError("--method \(name) needs --density") }
        let merge = taskMerge(name.hasSuffix("_svd") ? String(name.dropLast(4)) : name, density: density ?? 1, sign: sign ?? .total, seed: seed ?? 0)
        let method: LoRACombinationMethod
        switch name {
        case "cat": method = .cat
        case "svd": method = .svd(.sum, LoRASVDTruncation(rank: svdRank, clamp: svdClamp))
        default: method = isSVD ? .svd(merge, LoRASVDTruncation(rank: svdRank, clamp: svdClamp)) : .factors(merge)
        }
        return LoRACombination(method: method, weights: weights ?? [Double](repeating: 1, count: adapterCount))
    }

    /// The task merge a method name (without `_svd`) stands for.
    private static func taskMerge(_ name: String, density: Double, sign: LoRAMajoritySign, seed: UInt64) -> LoRATaskMerge {
        switch name {
        case "ties": return .ties(density: density, majoritySign: sign)
        case "magnitude_prune": return .magnitudePrune(density: density)
        case "dare_linear": return .dareLinear(density: density, seed: seed)
        case "dare_ties": return .dareTies(density: density, majoritySign: sign, seed: seed)
        default: return .sum
        }
    }

    /// The report's line about the combination.
    static func describe(_ combination: LoRACombination, adapterCount: Int) -> String {
        let weights = combination.weights.map { Format.cString("%g", $0) }.joined(separator: ", ")
        var text = "combined \(adapterCount) adapter\(adapterCount == 1 ? "" : "s") with \(combination.method.name) (weights \(weights)"
        if let merge = combination.method.taskMerge {
            if let density = merge.density { text += ", density \(Format.cString("%g", density))" }
            if let sign = merge.majoritySign { text += ", majority sign \(sign.rawValue)" }
            if let seed = merge.seed { text += ", seed \(seed)" }
        }
        if case let .svd(_, truncation) = combination.method {
            if let rank = truncation.rank { text += ", svd rank \(rank)" }
            if let clamp = truncation.clamp { text += ", svd clamp \(Format.cString("%g", clamp))" }
        }
        if adapterCount == 1 && combination.method != .factors(.sum) { text += "; one adapter is combined linearly, as PEFT does" }
        return text + ")"
    }
}
