/// torch's float32 `mean()` of a contiguous 1-D tensor on the CPU, bit for
/// bit: what bitsandbytes' `quantize_4bit` takes as the double-quantization
/// offset (`absmax.mean()`).
///
/// torch computes it as `sum / N` in float32, the sum by its cascade
/// summation (aten/src/ATen/native/cpu/SumKernel.cpp): lanes of 8 floats
/// (its AVX2 kernels; the reference data came from them) summed four rows at
/// a time into four levels of partial sums that are folded into each other
/// every `2^levelPower` steps, the scalar tail added in order, then the
/// lanes. On a tensor of 32768 values or more, torch splits the sum between
/// its threads; this follows its single-thread order.
public enum TorchMean {
    /// Floats of one of torch's AVX2 vectors.
    typealias Lanes = SIMD8<Float>
    static let width = 8

    public static func mean(_ values: UnsafeBufferPointer<Float>) -> Float {
        guard !values.isEmpty else { return 0 }
        return sum(values) / Float(values.count)
    }

    /// `vectorized_inner_sum` of one row (or `row_sum` of scalars when it is shorter than a vector).
    static func sum(_ values: UnsafeBufferPointer<Float>) -> Float {
        let n = values.count
        guard n >= width, let base = values.baseAddress else {
            return rowSum(count: n) { Lanes(repeating: 0).replacing(with: values[$0], where: lane0) }[0]
        }
        let vectors = n / width
        let lanes = rowSum(count: vectors) { UnsafeRawPointer(base + $0 * width).loadUnaligned(as: Lanes.self) }
        var total: Float = 0
        for k in (vectors * width)..<n { total += values[k] }
        for k in 0..<width { total += lanes[k] }
        return total
    }

    private static let lane0: SIMDMask<SIMD8<Int32>> = {
        var mask = SIMDMask<SIMD8<Int32>>(repeating: false)
        mask[0] = true
        return mask
    }()

    /// `row_sum`: the row as `(-1, 4)`, summed by `multiRowSum`, the rest
    /// added to the first partial sum, then the partial sums in order.
    static func rowSum(count: Int, _ load: (Int) -> Lanes) -> Lanes {
        let rows = count / 4
        var partial = multiRowSum(count: rows) { i, k in load(i * 4 + k) }
        for i in (rows * 4)..<count { partial.0 += load(i) }
        return ((partial.0 + partial.1) + partial.2) + partial.3
    }

    /// `multi_row_sum` with four rows and four levels.
    static func multiRowSum(count: Int, _ load: (Int, Int) -> Lanes) -> (Lanes, Lanes, Lanes, Lanes) {
        let levels = 4
        let power = max(4, ceilLog2(count) / levels)
        let step = 1 << power
        let mask = step - 1
        var acc = [[Lanes]](repeating: [Lanes](repeating: Lanes(repeating: 0), count: 4), count: levels)
        var i = 0
        while i + step <= count {
            for _ in 0..<step {
                for k in 0..<4 { acc[0][k] += load(i, k) }
                i += 1
            }
            for j in 1..<levels {
                for k in 0..<4 {
                    acc[j][k] += acc[j - 1][k]
                    acc[j - 1][k] = Lanes(repeating: 0)
                }
                if i & (mask << (j * power)) != 0 { break }
            }
        }
        while i < count {
            for k in 0..<4 { acc[0][k] += load(i, k) }
            i += 1
        }
        for j in 1..<levels {
            for k in 0..<4 { acc[0][k] += acc[j][k] }
        }
        return (acc[0][0], acc[0][1], acc[0][2], acc[0][3])
    }

    /// `utils::CeilLog2`: 1 up to 2, else the bit length of `x - 1`.
    static func ceilLog2(_ x: Int) -> Int {
        x <= 2 ? 1 : Int.bitWidth - (x - 1).leadingZeroBitCount
    }
}
