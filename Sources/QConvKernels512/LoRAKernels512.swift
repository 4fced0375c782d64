/// The merge's delta loop (QConvKit's `LoRAKernels.addDelta4`) for CPUs with
/// 512-bit vector registers (x86-64 AVX-512). This module alone is compiled
/// for them (Package.swift); QConvKit calls it only when the CPU says it has
/// them (`ProcessorFlags`), and otherwise never.
///
/// Each output value is `sum_k c[k] * basis[k, j]` accumulated in k order,
/// exactly as in `LoRAKernels`, so the bits do not depend on the register
/// width; only more values are computed at once: eight rows by 32 columns,
/// sixteen independent sums in registers, each load of the basis serving
/// eight rows. Tests compare the two kernels bit for bit.
public enum LoRAKernels512 {
    /// Rows per call.
    public static let rows = 8
    /// Columns per block of the basis panels (`LoRAKernels.panels`): the
    /// kernel reads two consecutive blocks for each 32 columns.
    public static let panelColumns = 16

    /// `rows[i, j] += (weights[i] . basis[:, j]) * scale` for eight rows
    /// (weights `rank` apart, rows `columns` apart), each product rounded
    /// before it is added.
    public static func addDelta8Separate(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, panels: UnsafePointer<Float>,
                                         rank: Int, columns: Int, scale: Float, into rows: UnsafeMutablePointer<Float>) {
        addDelta8(weights, basis, panels: panels, rank: rank, columns: columns, scale: scale, into: rows, Separate.self)
    }

    /// The same, with one rounding per step (a fused multiply-add chain in k
    /// order, as torch's CPU sgemm sums).
    public static func addDelta8Fused(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, panels: UnsafePointer<Float>,
                                      rank: Int, columns: Int, scale: Float, into rows: UnsafeMutablePointer<Float>) {
        addDelta8(weights, basis, panels: panels, rank: rank, columns: columns, scale: scale, into: rows, Fused.self)
    }
}

private typealias V = SIMD16<Float>

private protocol Accumulation {
    static func adding(_ sum: V, _ c: V, _ b: V) -> V
    static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float
}

private enum Separate: Accumulation {
    @inline(__always) static func adding(_ sum: V, _ c: V, _ b: V) -> V { sum + c * b }
    @inline(__always) static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float { sum + c * b }
}

private enum Fused: Accumulation {
    @inline(__always) static func adding(_ sum: V, _ c: V, _ b: V) -> V { sum.addingProduct(c, b) }
    @inline(__always) static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float { sum.addingProduct(c, b) }
}

@inline(__always)
private func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

/// `row[j..<j+16] += sum * scale`.
@inline(__always)
private func add(_ sum: V, times scale: V, to row: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(row).storeBytes(of: load(row) + sum * scale, as: V.self)
}

extension LoRAKernels512 {
    @inline(__always)
    fileprivate static func addDelta8<A: Accumulation>(_ w: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, panels: UnsafePointer<Float>,
                                                       rank: Int, columns: Int, scale: Float, into rows: UnsafeMutablePointer<Float>, _: A.Type) {
        let s = V(repeating: scale)
        let w0 = w, w1 = w0 + rank, w2 = w1 + rank, w3 = w2 + rank, w4 = w3 + rank, w5 = w4 + rank, w6 = w5 + rank, w7 = w6 + rank
        let r0 = rows, r1 = r0 + columns, r2 = r1 + columns, r3 = r2 + columns
        let r4 = r3 + columns, r5 = r4 + columns, r6 = r5 + columns, r7 = r6 + columns
        let block = rank * panelColumns
        var j = 0
        var p = panels
        // Two panel blocks (32 columns): sixteen sums.
        while j + 2 * panelColumns <= columns {
            var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
            var b0 = V(), b1 = V(), b2 = V(), b3 = V(), b4 = V(), b5 = V(), b6 = V(), b7 = V()
            for k in 0..<rank {
                let low = load(p + k * panelColumns), high = load(p + block + k * panelColumns)
                var c = V(repeating: w0[k]); a0 = A.adding(a0, c, low); b0 = A.adding(b0, c, high)
                c = V(repeating: w1[k]); a1 = A.adding(a1, c, low); b1 = A.adding(b1, c, high)
                c = V(repeating: w2[k]); a2 = A.adding(a2, c, low); b2 = A.adding(b2, c, high)
                c = V(repeating: w3[k]); a3 = A.adding(a3, c, low); b3 = A.adding(b3, c, high)
                c = V(repeating: w4[k]); a4 = A.adding(a4, c, low); b4 = A.adding(b4, c, high)
                c = V(repeating: w5[k]); a5 = A.adding(a5, c, low); b5 = A.adding(b5, c, high)
                c = V(repeating: w6[k]); a6 = A.adding(a6, c, low); b6 = A.adding(b6, c, high)
                c = V(repeating: w7[k]); a7 = A.adding(a7, c, low); b7 = A.adding(b7, c, high)
            }
            add(a0, times: s, to: r0 + j); add(b0, times: s, to: r0 + j + 16)
            add(a1, times: s, to: r1 + j); add(b1, times: s, to: r1 + j + 16)
            add(a2, times: s, to: r2 + j); add(b2, times: s, to: r2 + j + 16)
            add(a3, times: s, to: r3 + j); add(b3, times: s, to: r3 + j + 16)
            add(a4, times: s, to: r4 + j); add(b4, times: s, to: r4 + j + 16)
            add(a5, times: s, to: r5 + j); add(b5, times: s, to: r5 + j + 16)
            add(a6, times: s, to: r6 + j); add(b6, times: s, to: r6 + j + 16)
            add(a7, times: s, to: r7 + j); add(b7, times: s, to: r7 + j + 16)
            j += 2 * panelColumns
            p += 2 * block
        }
        // One last panel block (16 columns): eight sums.
        if j + panelColumns <= columns {
            var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
            for k in 0..<rank {
                let low = load(p + k * panelColumns)
                a0 = A.adding(a0, V(repeating: w0[k]), low); a1 = A.adding(a1, V(repeating: w1[k]), low)
                a2 = A.adding(a2, V(repeating: w2[k]), low); a3 = A.adding(a3, V(repeating: w3[k]), low)
                a4 = A.adding(a4, V(repeating: w4[k]), low); a5 = A.adding(a5, V(repeating: w5[k]), low)
                a6 = A.adding(a6, V(repeating: w6[k]), low); a7 = A.adding(a7, V(repeating: w7[k]), low)
            }
            add(a0, times: s, to: r0 + j); add(a1, times: s, to: r1 + j); add(a2, times: s, to: r2 + j); add(a3, times: s, to: r3 + j)
            add(a4, times: s, to: r4 + j); add(a5, times: s, to: r5 + j); add(a6, times: s, to: r6 + j); add(a7, times: s, to: r7 + j)
            j += panelColumns
        }
        // Columns past the last whole block, from the basis itself.
        while j < columns {
            for i in 0..<LoRAKernels512.rows {
                let weights = w + i * rank
                var sum: Float = 0
                for k in 0..<rank { sum = A.adding(sum, weights[k], basis[k * columns + j]) }
                rows[i * columns + j] += sum * scale
            }
            j += 1
        }
    }
}
