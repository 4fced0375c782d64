/// The element-wise loops of PEFT's `utils/merge_utils.py` on float32
/// buffers, each step rounded to float32 as torch computes it: task tensors
/// `t_i` (equal lengths) pruned, weighted by `w_i` and merged.
enum TaskArithmetic {
    /// How `calculate_majority_sign_mask` elects a sign per element.
    enum SignElection {
        /// The sign of `sum_i t_i`.
        case total
        /// The sign of `sum_i sign(t_i)`.
        case frequency
    }

    /// `task_arithmetic`: `out[j] = sum_i t_i[j] * w_i`, summed in task order
    /// (torch's `(stack * w).sum(dim=0)`).
    static func weightedSum(_ tasks: [UnsafePointer<Float>], weights: [Float], count: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(tasks.count == weights.count && !tasks.isEmpty, "one weight per task tensor")
        let first = tasks[0], w0 = weights[0]
        for j in 0..<count { out[j] = first[j] * w0 }
        for i in 1..<tasks.count {
            let task = tasks[i], w = weights[i]
            for j in 0..<count { out[j] += task[j] * w }
        }
    }

    /// `disjoint_merge` after `calculate_majority_sign_mask`: per element, the
    /// sign of the unweighted (pruned) values is elected, ties going to +;
    /// the weighted values of that sign are summed in task order and divided
    /// by how many there are (at least 1). Zeros have no sign and never count.
    /// `scratch` holds `2 * count` floats. Written as passes over the
    /// elements, without branches, so that they vectorize.
    static func disjointMerge(_ tasks: [UnsafePointer<Float>], weights: [Float], count: Int, election: SignElection,
                              scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        precondition(tasks.count == weights.count && !tasks.isEmpty, "one weight per task tensor")
        let majority = out, kept = scratch, sum = scratch + count
        // The vote, summed in task order, then its sign.
        for j in 0..<count { majority[j] = 0 }
        for task in tasks {
            switch election {
            case .total: for j in 0..<count { majority[j] += task[j] }
            case .frequency: for j in 0..<count { majority[j] += sign(task[j]) }
            }
        }
        for j in 0..<count { majority[j] = majority[j] >= 0 ? 1 : -1 }
        for j in 0..<count { kept[j] = 0; sum[j] = 0 }
        for (task, w) in zip(tasks, weights) {
            for j in 0..<count {
                let t = task[j]
                let agrees = sign(t) == majority[j]
                sum[j] += agrees ? t * w : 0
                kept[j] += agrees ? 1 : 0
            }
        }
        for j in 0..<count { out[j] = sum[j] / max(kept[j], 1) }
    }

    /// torch's `sign`: -1, 0 or 1 (0 for both zeros; NaN stays NaN).
    @inline(__always)
    static func sign(_ x: Float) -> Float {
        x > 0 ? 1 : (x < 0 ? -1 : x)
    }

    /// Magnitude pruning with a threshold from `MagnitudeSelection`: zeroes
    /// every value whose magnitude is below `threshold`, in the selection's
    /// order (bit patterns, so a NaN counts as the largest).
    static func prune(_ values: UnsafeMutablePointer<Float>, count: Int, keepingMagnitudesFrom threshold: Float) {
        let bits = threshold.bitPattern
        for j in 0..<count where abs(values[j]).bitPattern < bits { values[j] = 0 }
    }

    /// `random_pruning` with rescaling: element `firstIndex + j` is kept when
    /// the stream's draw for it (`SplitMix64.unit`) is below `density`, and
    /// divided by `density` (rounded to float32, as torch divides by a
    /// Python float); the others become 0.
    static func randomPrune(_ values: UnsafeMutablePointer<Float>, count: Int, density: Double, key: UInt64, firstIndex: Int) {
        let divisor = Float(density)
        for j in 0..<count {
            let keep = SplitMix64.unit(key: key, index: UInt64(firstIndex + j)) < density
            values[j] = keep ? values[j] / divisor : 0
        }
    }
}

/// The `k`-th largest magnitude among a stream of float32 values, exactly,
/// in two passes over them (a radix selection on the bit patterns of the
/// magnitudes, which order like the magnitudes): pass 1 counts the top 16
/// bits, pass 2 the low 16 bits of the values that share the chosen top half.
/// Passes may be fed in any order and from any number of partial counts.
///
/// `prune` with the threshold keeps the `k` largest magnitudes, and also any
/// value equal in magnitude to the `k`-th (torch's `topk` picks among equal
/// values in no documented order).
struct MagnitudeSelection {
    /// How many of the largest magnitudes are kept; 0 keeps none.
    let k: Int
    private(set) var counts: [Int]
    /// The top 16 bits of the threshold, once pass 1 is resolved.
    private(set) var high: UInt32?
    /// How many magnitudes above the chosen top half come before it.
    private var above = 0

    /// PEFT's `k = int(density * numel)`.
    init(density: Double, count: Int) {
        k = max(0, min(count, Int(density * Double(count))))
        counts = [Int](repeating: 0, count: 1 << 16)
    }

    /// The bits the current pass counts of a magnitude's pattern, or nil when
    /// pass 2 skips it.
    @inline(__always)
    private func bucket(_ value: Float) -> Int? {
        let bits = abs(value).bitPattern
        guard let high else { return Int(bits >> 16) }
        return bits >> 16 == high ? Int(bits & 0xFFFF) : nil
    }

    mutating func add(_ values: UnsafePointer<Float>, count: Int) {
        for j in 0..<count { if let b = bucket(values[j]) { counts[b] += 1 } }
    }

    /// Adds another partial count of the same pass.
    mutating func merge(_ other: MagnitudeSelection) {
        for b in 0..<counts.count { counts[b] += other.counts[b] }
    }

    /// Resolves pass 1: picks the threshold's top 16 bits and clears the
    /// counts for pass 2. False when nothing is kept (`k` is 0): no pass 2.
    mutating func finishFirstPass() -> Bool {
        guard k > 0 else { return false }
        var seen = 0
        for b in stride(from: counts.count - 1, through: 0, by: -1) {
            if seen + counts[b] >= k {
                high = UInt32(b)
                above = seen
                break
            }
            seen += counts[b]
        }
        counts = [Int](repeating: 0, count: 1 << 16)
        return true
    }

    /// An empty count of the current pass (for a worker).
    var emptyCopy: MagnitudeSelection {
        var copy = self
        copy.counts = [Int](repeating: 0, count: 1 << 16)
        return copy
    }

    /// After pass 2: the smallest magnitude kept (+infinity when none is).
    var threshold: Float {
        guard k > 0, let high else { return .infinity }
        var seen = above
        for b in stride(from: counts.count - 1, through: 0, by: -1) {
            seen += counts[b]
            if seen >= k { return Float(bitPattern: high << 16 | UInt32(b)) }
        }
        return Float(bitPattern: high << 16)
    }

    /// The threshold of one buffer, in its two passes.
    static func threshold(of values: UnsafeBufferPointer<Float>, density: Double) -> Float {
        var selection = MagnitudeSelection(density: density, count: values.count)
        guard let base = values.baseAddress else { return .infinity }
        selection.add(base, count: values.count)
        guard selection.finishFirstPass() else { return .infinity }
        selection.add(base, count: values.count)
        return selection.threshold
    }
}
