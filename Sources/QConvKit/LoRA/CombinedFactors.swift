/// Computes the factors of a `LoRACombinedModule`, PEFT 0.21.2's
/// `add_weighted_adapter` for one module, step for step in float32 where
/// PEFT works in float32 (so that the merge that follows gives PEFT's values
/// to within its rounding), and in double precision for the SVD.
///
/// Memory: the contributing modules' factors, decoded (`[r, in]` and
/// `[out, r]` each); the SVD methods add their own working space (see
/// `LowRankSVD`, `PrunedDeltaSVD`).
struct CombinedFactors {
    /// One contribution's factors, decoded to float32.
    struct Loaded {
        /// `A_i`, `[rank, columns]` row-major.
        let down: [Float]
        /// `B_i`, `[rows, rank]` row-major.
        let up: [Float]
        let rank: Int
        let weight: Double
        let scale: Double
        let adapterIndex: Int
    }

    let module: LoRACombinedModule
    /// Output features (`B`'s rows) and input features (`A`'s columns).
    private(set) var rows = 0
    private(set) var columns = 0

    init(_ module: LoRACombinedModule) {
        self.module = module
    }

    func compute(threads: Int) throws -> (up: [Float], down: [Float], rank: Int) {
        var work = self
        let loaded = try work.load()
        switch module.method {
        case .cat:
            return work.concatenated(loaded)
        case let .factors(merge):
            return try work.mergedFactors(loaded, merge)
        case let .svd(merge, truncation):
            let delta = CombinedDelta(tensor: module.tensor, loaded: loaded, rows: work.rows, columns: work.columns, merge: merge)
            var result = merge == .sum ? LowRankSVD.truncated(delta, rank: module.rank, threads: threads)
                : try PrunedDeltaSVD.truncated(delta, rank: module.rank, threads: threads)
            if let clamp = truncation.clamp { SVDClamp.apply(quantile: clamp, up: &result.up, down: &result.down) }
            return result
        }
    }

    /// Decodes every contribution's factors and learns the module's shape.
    private mutating func load() throws -> [Loaded] {
        try module.contributions.map { contribution in
            let down = try contribution.module.down.allFloats(), up = try contribution.module.up.allFloats()
            let rank = contribution.module.down.info.shape.first ?? 0
            precondition(rank > 0 && down.count % rank == 0 && up.count % rank == 0, "\(contribution.module.name): factors checked by the plan")
            rows = up.count / rank
            columns = down.count / rank
            return Loaded(down: down, up: up, rank: rank, weight: contribution.weight, scale: contribution.scale,
                          adapterIndex: contribution.adapterIndex)
        }
    }

    /// `cat`: `A_i * w_i * s_i` stacked (rows), `B_i` side by side (columns);
    /// torch multiplies by each Python float in turn, rounding each time.
    /// Both are then rounded to the dtype PEFT holds them in (`factorDType`).
    private func concatenated(_ loaded: [Loaded]) -> (up: [Float], down: [Float], rank: Int) {
        let rank = loaded.reduce(0) { $0 + $1.rank }
        var down: [Float] = [], up = [Float](repeating: 0, count: rows * rank)
        down.reserveCapacity(rank * columns)
        var offset = 0
        for factor in loaded {
            let w = Float(factor.weight), s = Float(factor.scale)
            down += factor.down.map { $0 * w * s }
            for row in 0..<rows {
                for k in 0..<factor.rank { up[row * rank + offset + k] = factor.up[row * factor.rank + k] }
            }
            offset += factor.rank
        }
        if let dtype = module.factorDType {
            up.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: dtype) }
            down.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: dtype) }
        }
        return (up, down, rank)
    }

    /// `linear`, `ties`, ...: the task merge applied to the `A_i` with
    /// weights `sign(w_i s_i) sqrt|w_i s_i|` and to the `B_i` with
    /// `sqrt|w_i s_i|` (computed in double as Python does, then rounded to float32).
    private func mergedFactors(_ loaded: [Loaded], _ merge: LoRATaskMerge) throws -> (up: [Float], down: [Float], rank: Int) {
        let rank = loaded[0].rank
        guard loaded.allSatisfy({ $0.rank == rank }) else {
            throw LoRACombinationError.ranksDiffer(method: module.method.name, ranks: zip(module.contributions, loaded).map {
                "\($0.module.down.name): r=\($1.rank)"
            })
        }
        let products = loaded.map { $0.weight * $0.scale }
        let downWeights = products.map { Float(($0 >= 0 ? 1 : -1) * abs($0).squareRoot()) }
        let upWeights = products.map { Float(abs($0).squareRoot()) }
        let down = TaskMergeRunner(merge: merge, tensor: module.tensor, part: "lora_A", adapterIndices: loaded.map(\.adapterIndex))
            .merged(loaded.map(\.down), weights: downWeights)
        let up = TaskMergeRunner(merge: merge, tensor: module.tensor, part: "lora_B", adapterIndices: loaded.map(\.adapterIndex))
            .merged(loaded.map(\.up), weights: upWeights)
        return (up, down, rank)
    }
}

/// One `LoRATaskMerge` over task tensors of one kind (the `A`s, the `B`s or
/// the deltas of a module): their pruning (magnitude thresholds or random
/// streams) and the merge itself, on whole tensors or on ranges of their elements.
struct TaskMergeRunner {
    let merge: LoRATaskMerge
    /// One random stream per task tensor (DARE), keyed by the seed and
    /// `<tensor>:<part>:<adapter index>`.
    let keys: [UInt64]

    init(merge: LoRATaskMerge, tensor: String, part: String, adapterIndices: [Int]) {
        self.merge = merge
        keys = adapterIndices.map { SplitMix64.key(seed: merge.seed ?? 0, label: "\(tensor):\(part):\($0)") }
    }

    /// Merges whole task tensors (equal lengths).
    func merged(_ tasks: [[Float]], weights: [Float]) -> [Float] {
        let count = tasks[0].count
        var pruned = tasks
        var thresholds: [Float] = []
        switch merge {
        case .ties(let density, _), .magnitudePrune(let density):
            thresholds = tasks.map { $0.withUnsafeBufferPointer { MagnitudeSelection.threshold(of: $0, density: density) } }
        case .sum, .dareLinear, .dareTies:
            break
        }
        var out = [Float](repeating: 0, count: count)
        for i in pruned.indices {
            pruned[i].withUnsafeMutableBufferPointer { prune($0.baseAddress!, count: count, task: i, thresholds: thresholds, firstIndex: 0) }
        }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * count)
        defer { scratch.deallocate() }
        withPointers(pruned) { pointers in
            out.withUnsafeMutableBufferPointer { combine(pointers, weights: weights, count: count, scratch: scratch, into: $0.baseAddress!) }
        }
        return out
    }

    /// Prunes elements `firstIndex ..< firstIndex + count` of task `task` in
    /// place (`thresholds`: one per task for the magnitude merges).
    func prune(_ values: UnsafeMutablePointer<Float>, count: Int, task: Int, thresholds: [Float], firstIndex: Int) {
        switch merge {
        case .sum:
            break
        case .ties(let density, _), .magnitudePrune(let density):
            if density < 1 { TaskArithmetic.prune(values, count: count, keepingMagnitudesFrom: thresholds[task]) }
        case .dareLinear(let density, _), .dareTies(let density, _, _):
            if density < 1 { TaskArithmetic.randomPrune(values, count: count, density: density, key: keys[task], firstIndex: firstIndex) }
        }
    }

    /// Merges pruned values of the tasks (`count` each) into `out`;
    /// `scratch` holds `2 * count` floats.
    func combine(_ tasks: [UnsafePointer<Float>], weights: [Float], count: Int, scratch: UnsafeMutablePointer<Float>,
                 into out: UnsafeMutablePointer<Float>) {
        switch merge {
        case .sum, .magnitudePrune, .dareLinear:
            TaskArithmetic.weightedSum(tasks, weights: weights, count: count, into: out)
        case .ties(_, let sign), .dareTies(_, let sign, _):
            TaskArithmetic.disjointMerge(tasks, weights: weights, count: count, election: sign == .total ? .total : .frequency,
                                         scratch: scratch, into: out)
        }
    }
}

/// Pointers to the storage of each array, valid inside `body`.
func withPointers<R>(_ arrays: [[Float]], _ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
    func nest(_ index: Int, _ collected: [UnsafePointer<Float>]) throws -> R {
        guard index < arrays.count else { return try body(collected) }
        return try arrays[index].withUnsafeBufferPointer { try nest(index + 1, collected + [$0.baseAddress!]) }
    }
    return try nest(0, [])
}
