/// The delta the SVD methods decompose, `merge_i(w_i, s_i B_i A_i)`
/// (`[rows, columns]`, PEFT's `delta_weight` in the `B @ A` orientation,
/// i.e. transposed back for fan_in_fan_out and embeddings as PEFT does
/// before its SVD), described by the factors; never held whole.
struct CombinedDelta {
    let tensor: String
    let loaded: [CombinedFactors.Loaded]
    let rows: Int
    let columns: Int
    let merge: LoRATaskMerge

    /// `sum_i r_i`, a bound on the rank of the unpruned sum.
    var totalRank: Int { loaded.reduce(0) { $0 + $1.rank } }

    /// The factors stacked: `B = [B_1 ... B_n]` (`rows x R`) and
    /// `A^T = [c_1 A_1; ...]^T` (`columns x R`) with `c_i = w_i s_i` (each
    /// rounded to float32 first, as PEFT's float32 arithmetic uses them), so
    /// that `B A = sum_i w_i s_i B_i A_i`.
    func stackedFactors() -> (up: ColumnMatrix, downTransposed: ColumnMatrix) {
        var up = ColumnMatrix(rows: rows, columns: totalRank), down = ColumnMatrix(rows: columns, columns: totalRank)
        var offset = 0
        for factor in loaded {
            let c = Double(Float(factor.weight)) * Double(Float(factor.scale))
            for k in 0..<factor.rank {
                for row in 0..<rows { up[row, offset + k] = Double(factor.up[row * factor.rank + k]) }
                for column in 0..<columns { down[column, offset + k] = c * Double(factor.down[k * columns + column]) }
            }
            offset += factor.rank
        }
        return (up, down)
    }
}

/// The truncated SVD of a sum of LoRA deltas without the `[out, in]` matrix
/// (PEFT's `svd` method): with the factors stacked, `B A = Q_B (R_B R_A^T) Q_A^T`
/// by thin QR factorisations of `B` and `A^T`; the SVD of the small core
/// `R_B R_A^T = U S V^T` gives `B A = (Q_B U) S (Q_A V)^T`. Work and memory
/// are `O((out + in) R^2)` for `R = sum r_i`, all in double precision.
enum LowRankSVD {
    /// `B' = Q_B U_k S_k` (`[rows, k]`) and `A' = (Q_A V_k)^T` (`[k, columns]`)
    /// in float32, `k = min(rank, rank of the core)`, at least 1.
    /// The two factorisations run on two threads when `threads` allows.
    static func truncated(_ delta: CombinedDelta, rank: Int, threads: Int = 1) -> (up: [Float], down: [Float], rank: Int) {
        let (up, downTransposed) = delta.stackedFactors()
        let factorisations = Locked<[Int: HouseholderQR]>([:])
        // Two independent factorisations; nothing in them throws.
        try? parallelFor(2, threads: threads) { side in
            let qr = HouseholderQR(side == 0 ? up : downTransposed)
            factorisations.withLock { $0[side] = qr }
        }
        let (upQR, downQR) = factorisations.withLock { ($0[0]!, $0[1]!) }
        let (u, s, v) = SmallLinearAlgebra.svd(upQR.r.multiplied(by: downQR.r.transposed))
        let k = max(1, min(rank, s.count))
        let sides = Locked<[Int: ColumnMatrix]>([:])
        try? parallelFor(2, threads: threads) { side in
            let product = side == 0 ? upQR.q(times: u.leadingColumns(k)) : downQR.q(times: v.leadingColumns(k))
            sides.withLock { $0[side] = product }
        }
        let (left, right) = sides.withLock { ($0[0]!, $0[1]!) }
        return factors(left: left, singularValues: s, right: right, rank: k)
    }

    /// `U_k S_k` and `V_k^T` as float32 factors, row-major.
    static func factors(left: ColumnMatrix, singularValues s: [Double], right: ColumnMatrix, rank k: Int) -> (up: [Float], down: [Float], rank: Int) {
        var upFactor = [Float](repeating: 0, count: left.rows * k), downFactor = [Float](repeating: 0, count: k * right.rows)
        for t in 0..<min(k, left.columns) {
            let value = t < s.count ? s[t] : 0
            for row in 0..<left.rows { upFactor[row * k + t] = Float(left[row, t] * value) }
            for column in 0..<right.rows { downFactor[t * right.rows + column] = Float(right[column, t]) }
        }
        return (upFactor, downFactor, k)
    }
}

/// PEFT's `svd_clamp`: the values of `U_k S_k` and `V_k^T` together give a
/// quantile (torch.quantile, linear interpolation, in float32), and both are
/// clamped to `[-q, q]` (torch's `clamp(min, max)`: when `q` is negative,
/// every value becomes `q`).
enum SVDClamp {
    static func apply(quantile: Double, up: inout [Float], down: inout [Float]) {
        let high = value(atQuantile: quantile, of: up + down)
        let low = -high
        for i in up.indices { up[i] = min(max(up[i], low), high) }
        for i in down.indices { down[i] = min(max(down[i], low), high) }
    }

    /// torch.quantile of `values` at `q` (`q * (n - 1)` in float32, then `lerp`).
    static func value(atQuantile q: Double, of values: [Float]) -> Float {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let position = Float(q) * Float(sorted.count - 1)
        let below = Int(position), above = min(sorted.count - 1, Int(position.rounded(.up)))
        let weight = position - Float(below)
        let start = sorted[below], end = sorted[above]
        return weight < 0.5 ? start + weight * (end - start) : end - (end - start) * (1 - weight)
    }
}
