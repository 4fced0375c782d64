import QConvKernels512
import QConvProcessor

/// How the merge's products `c[k] * basis[k, j]` are summed over k: each
/// product rounded before it is added (`SeparateProducts`, what the merge of
/// one adapter has always done), or one rounding per step as torch's CPU
/// `sgemm` does it (`FusedProducts`, a fused multiply-add chain in k order,
/// used for combined adapters so that they give PEFT's bits).
protocol ProductAccumulation {
    static func adding(_ sum: SIMD8<Float>, _ c: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float>
    static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float
    /// `LoRAKernels512`'s eight-row kernel that sums this way.
    static var eightRows: LoRAKernels.EightRowKernel { get }
}

enum SeparateProducts: ProductAccumulation {
    @inline(__always) static func adding(_ sum: SIMD8<Float>, _ c: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { sum + c * b }
    @inline(__always) static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float { sum + c * b }
    static var eightRows: LoRAKernels.EightRowKernel { LoRAKernels512.addDelta8Separate }
}

enum FusedProducts: ProductAccumulation {
    @inline(__always) static func adding(_ sum: SIMD8<Float>, _ c: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { sum.addingProduct(c, b) }
    @inline(__always) static func adding(_ sum: Float, _ c: Float, _ b: Float) -> Float { sum.addingProduct(c, b) }
    static var eightRows: LoRAKernels.EightRowKernel { LoRAKernels512.addDelta8Fused }
}

/// The float32 loops of the merge. Each output chunk of eight values is
/// `sum_k c[k] * basis[k, j..<j+8]` accumulated in k order in registers, so
/// the basis (r rows, a few hundred kB at most) streams from cache and the
/// tensor is touched once. The functions taking a `ProductAccumulation` sum
/// the products its way; the others with `SeparateProducts`.
enum LoRAKernels {
    typealias Vector = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }

    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self) }

    /// `sum_k weights[k] * basis[k, j..<j+8]`.
    @inline(__always)
    static func combination<P: ProductAccumulation>(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, rank: Int, columns: Int,
                                                    at j: Int, _ products: P.Type) -> Vector {
        var sum = Vector()
        var row = basis + j
        for k in 0..<rank {
            sum = P.adding(sum, Vector(repeating: weights[k]), load(row))
            row += columns
        }
        return sum
    }

    /// The same sum for one column (the tail), in the same order.
    @inline(__always)
    static func combination<P: ProductAccumulation>(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, rank: Int, columns: Int,
                                                    column j: Int, _ products: P.Type) -> Float {
        var sum: Float = 0
        for k in 0..<rank { sum = P.adding(sum, weights[k], basis[k * columns + j]) }
        return sum
    }

    /// `row += (weights . basis) * scale`.
    static func addDelta(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, rank: Int, columns: Int, scale: Float, into row: UnsafeMutablePointer<Float>) {
        addDelta(weights, basis, rank: rank, columns: columns, scale: scale, into: row, SeparateProducts.self)
    }

    /// `row += (weights . basis) * scale`, the products summed `P`'s way.
    static func addDelta<P: ProductAccumulation>(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, rank: Int, columns: Int, scale: Float,
                                                 into row: UnsafeMutablePointer<Float>, _ products: P.Type) {
        let s = Vector(repeating: scale)
        var j = 0
        while j + 8 <= columns {
            store(load(row + j) + combination(weights, basis, rank: rank, columns: columns, at: j, P.self) * s, row + j)
            j += 8
        }
        while j < columns {
            row[j] += combination(weights, basis, rank: rank, columns: columns, column: j, P.self) * scale
            j += 1
        }
    }

    /// Columns per block of `panels` (the 512-bit kernel reads the same blocks).
    static let panelColumns = LoRAKernels512.panelColumns

    /// `addDelta4`'s arguments for eight rows: weights, basis, panels, rank,
    /// columns, scale, rows.
    typealias EightRowKernel = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int, Float, UnsafeMutablePointer<Float>) -> Void

    /// Whether this CPU runs `LoRAKernels512` (AVX-512; the same bits as
    /// `addDelta4`, about 1.7 times its throughput): only in builds that
    /// compile that module for it (not `QCONV_PORTABLE`).
    static let hasEightRowKernel: Bool = {
        #if QCONV_KERNELS_512
        let needed: Set<String> = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
        return ProcessorFlags.current.map { needed.isSubset(of: $0) } ?? false
        #else
        return false
        #endif
    }()

    /// `basis` (`rank` rows of `columns`) in the order `addDelta4` reads it:
    /// blocks of 16 columns, each holding its `rank` rows of 16 one after the
    /// other, so that the kernel's loads are sequential. Columns past the
    /// last whole block are left out (the kernel reads them from `basis`).
    static func panels(_ basis: [Float], rank: Int, columns: Int) -> [Float] {
        let blocks = columns / panelColumns
        var panels = [Float](repeating: 0, count: max(1, blocks * rank * panelColumns))
        for block in 0..<blocks {
            for k in 0..<rank {
                for lane in 0..<panelColumns {
                    panels[(block * rank + k) * panelColumns + lane] = basis[k * columns + block * panelColumns + lane]
                }
            }
        }
        return panels
    }

    /// `addDelta` for four consecutive rows (weights `rank` apart, rows
    /// `columns` apart), with the same arithmetic per value. Sixteen columns
    /// at a time: eight independent sums keep both adders busy, and each load
    /// of the basis (from `panels`) serves four rows.
    static func addDelta4<P: ProductAccumulation>(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, panels: UnsafePointer<Float>,
                                                  rank: Int, columns: Int, scale: Float, into rows: UnsafeMutablePointer<Float>, _ products: P.Type) {
        let s = Vector(repeating: scale)
        let w0 = weights, w1 = w0 + rank, w2 = w1 + rank, w3 = w2 + rank
        let r0 = rows, r1 = r0 + columns, r2 = r1 + columns, r3 = r2 + columns
        var j = 0
        var p = panels
        while j + panelColumns <= columns {
            var low0 = Vector(), low1 = Vector(), low2 = Vector(), low3 = Vector()
            var high0 = Vector(), high1 = Vector(), high2 = Vector(), high3 = Vector()
            for k in 0..<rank {
                let low = load(p), high = load(p + 8)
                let c0 = Vector(repeating: w0[k]), c1 = Vector(repeating: w1[k])
                let c2 = Vector(repeating: w2[k]), c3 = Vector(repeating: w3[k])
                low0 = P.adding(low0, c0, low); high0 = P.adding(high0, c0, high)
                low1 = P.adding(low1, c1, low); high1 = P.adding(high1, c1, high)
                low2 = P.adding(low2, c2, low); high2 = P.adding(high2, c2, high)
                low3 = P.adding(low3, c3, low); high3 = P.adding(high3, c3, high)
                p += panelColumns
            }
            store(load(r0 + j) + low0 * s, r0 + j); store(load(r0 + j + 8) + high0 * s, r0 + j + 8)
            store(load(r1 + j) + low1 * s, r1 + j); store(load(r1 + j + 8) + high1 * s, r1 + j + 8)
            store(load(r2 + j) + low2 * s, r2 + j); store(load(r2 + j + 8) + high2 * s, r2 + j + 8)
            store(load(r3 + j) + low3 * s, r3 + j); store(load(r3 + j + 8) + high3 * s, r3 + j + 8)
            j += panelColumns
        }
        while j < columns {
            r0[j] += combination(w0, basis, rank: rank, columns: columns, column: j, P.self) * scale
            r1[j] += combination(w1, basis, rank: rank, columns: columns, column: j, P.self) * scale
            r2[j] += combination(w2, basis, rank: rank, columns: columns, column: j, P.self) * scale
            r3[j] += combination(w3, basis, rank: rank, columns: columns, column: j, P.self) * scale
            j += 1
        }
    }

    /// `row += delta` like `addDelta`, returning the row's L2 norm afterwards
    /// (squares summed in double, rounded to float32 at the end).
    static func addDeltaReturningNorm(_ weights: UnsafePointer<Float>, _ basis: UnsafePointer<Float>, rank: Int, columns: Int, scale: Float, into row: UnsafeMutablePointer<Float>) -> Float {
        addDelta(weights, basis, rank: rank, columns: columns, scale: scale, into: row)
        var sum = 0.0
        accumulateSquares(row, count: columns) { sum += $0 }
        return Float(sum.squareRoot())
    }

    /// `sums[j] += Double(row[j])^2`.
    static func accumulateSquares(_ row: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Double>) {
        for j in 0..<count {
            let x = Double(row[j])
            sums[j] += x * x
        }
    }

    /// Calls `add` with partial sums of squares of the row, in double.
    @inline(__always)
    static func accumulateSquares(_ row: UnsafePointer<Float>, count: Int, _ add: (Double) -> Void) {
        var lanes = SIMD4<Double>()
        var j = 0
        while j + 8 <= count {
            let v = load(row + j)
            let low = SIMD4<Double>(v.lowHalf), high = SIMD4<Double>(v.highHalf)
            lanes += low * low + high * high
            j += 8
        }
        add(lanes.sum())
        while j < count {
            let x = Double(row[j])
            add(x * x)
            j += 1
        }
    }

    /// `row[j] += delta[j] * scale` (with scale 1, a plain add).
    static func addScaled(_ delta: UnsafePointer<Float>, scale: Float, into row: UnsafeMutablePointer<Float>, count: Int) {
        let s = Vector(repeating: scale)
        var j = 0
        while j + 8 <= count {
            store(load(row + j) + load(delta + j) * s, row + j)
            j += 8
        }
        while j < count {
            row[j] += delta[j] * scale
            j += 1
        }
    }

    /// `row[j] *= factor`.
    static func multiply(_ row: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        let f = Vector(repeating: factor)
        var j = 0
        while j + 8 <= count {
            store(load(row + j) * f, row + j)
            j += 8
        }
        while j < count {
            row[j] *= factor
            j += 1
        }
    }

    /// `row[j] *= factors[j]`.
    static func multiply(_ row: UnsafeMutablePointer<Float>, by factors: UnsafePointer<Float>, count: Int) {
        var j = 0
        while j + 8 <= count {
            store(load(row + j) * load(factors + j), row + j)
            j += 8
        }
        while j < count {
            row[j] *= factors[j]
            j += 1
        }
    }
}
