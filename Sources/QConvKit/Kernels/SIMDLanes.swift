/// The few SIMD8 operations that hand-written kernels share, written so that
/// they compile to vector instructions.
///
/// Prefer a plain loop over scalars where LLVM vectorizes it (conversions,
/// maxima, int8 rounding): that is faster than Swift SIMD code with masks,
/// which often compiles lane by lane. These helpers are for what it does not
/// vectorize: sums and maxima in Double, whose order must stay fixed.
enum SIMDLanes {
    /// Loads `width` (1...8) scalars starting at element `index`, zero-padded to 8 lanes.
    @inline(__always)
    static func loadPadded<Scalar: SIMDScalar>(_ base: UnsafeRawPointer, from index: Int, width: Int, as: Scalar.Type) -> SIMD8<Scalar> {
        let stride = MemoryLayout<Scalar>.stride
        if width == 8 { return base.loadUnaligned(fromByteOffset: index * stride, as: SIMD8<Scalar>.self) }
        var vector = SIMD8<Scalar>()
        for lane in 0..<width { vector[lane] = base.loadUnaligned(fromByteOffset: (index + lane) * stride, as: Scalar.self) }
        return vector
    }

    /// Lane-wise maximum written as a compare and select, which compiles to
    /// vector instructions where the stdlib's `pointwiseMax` stays a call.
    @inline(__always)
    static func larger(_ a: SIMD8<Double>, _ b: SIMD8<Double>) -> SIMD8<Double> {
        a.replacing(with: b, where: b .> a)
    }

    /// float32 lanes to float64, lane by lane, so that it compiles to
    /// conversions instead of a call to the generic initializer.
    @inline(__always)
    static func widen(_ v: SIMD8<Float>) -> SIMD8<Double> {
        SIMD8<Double>(Double(v[0]), Double(v[1]), Double(v[2]), Double(v[3]),
                      Double(v[4]), Double(v[5]), Double(v[6]), Double(v[7]))
    }
}
