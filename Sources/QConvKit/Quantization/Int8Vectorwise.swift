/// LLM.int8 vector-wise quantization, bit-compatible with bitsandbytes'
/// `int8_vectorwise_quant` (CPU path), plus the outlier columns kept as FP16.
///
/// A tensor is a matrix of rows x columns: rank > 2 folds the leading
/// dimensions into rows, rank 1 is one row (`TensorInfo.matrixShape`).
/// Input values are float32 holding float16 values: bitsandbytes quantizes
/// `t.to(torch.float16)`, so callers round F32/BF16 sources through F16 first.
///
/// Per row: elements with `|a| >= selection.threshold` are left out of the row
/// absmax; `SCB = absmax` (float32); `CB = round-half-even(a * s)` with
/// `s = 127 * (1 / SCB)`, each step rounded to float32 as torch does it. The
/// outlier columns of CB are 0 and their original values are kept as FP16 bit
/// patterns, `[rows, k]`, columns ascending.
///
/// Rows are independent once the selection is known (pass 1, `OutlierScan`),
/// so disjoint row ranges may be quantized concurrently by separate calls.
public enum Int8Vectorwise {
    /// float32 of 1/127, the constant bitsandbytes dequantizes with.
    public static let inverse127: Float = 7.874015718698502e-3

    /// Quantizes `rowCount` rows of `columns` values each.
    ///
    /// - Parameters:
    ///   - rows: `rowCount * columns` float16-valued floats, row-major.
    ///   - selection: the whole tensor's outliers (from `OutlierScan`).
    ///   - codes: receives CB, `rowCount * columns`.
    ///   - rowScales: receives SCB, `rowCount`.
    ///   - outlierValues: receives the outlier columns' FP16 bits,
    ///     `rowCount * selection.columns.count` (may be empty when there are none).
    ///
    /// bitsandbytes zeroes the outlier columns of CB only when the tensor has
    /// more than one row, but a single row's outlier columns hold nothing but
    /// outlier elements, which it zeroes before quantizing; so CB is 0 there
    /// either way and a chunk need not know the tensor's row count.
    ///
    /// Non-finite and degenerate rows follow bitsandbytes: an absmax of 0
    /// (all-zero row), infinity or NaN gives a row of zero codes with SCB as
    /// computed (0, inf, NaN).
    public static func quantize(rows: UnsafeBufferPointer<Float>, rowCount: Int, columns: Int,
                                selection: OutlierSelection,
                                codes: UnsafeMutableBufferPointer<Int8>,
                                rowScales: UnsafeMutableBufferPointer<Float>,
                                outlierValues: UnsafeMutableBufferPointer<UInt16>) {
        let outlierCount = selection.columns.count
        precondition(rowCount >= 0 && columns >= 0 && rows.count == rowCount * columns, "Int8Vectorwise.quantize: \(rows.count) values for \(rowCount) x \(columns)")
        precondition(codes.count == rows.count && rowScales.count == rowCount && outlierValues.count == rowCount * outlierCount,
                     "Int8Vectorwise.quantize: output buffers do not match \(rowCount) x \(columns) with \(outlierCount) outlier columns")
        precondition(selection.columns.allSatisfy { $0 >= 0 && $0 < columns }, "Int8Vectorwise.quantize: outlier column out of range")
        guard rowCount > 0, columns > 0, let input = rows.baseAddress, let output = codes.baseAddress else {
            for row in 0..<rowCount { rowScales[row] = 0 }
            return
        }
        // Without outlier columns no element reaches the threshold; NaN selects
        // the absmax loop without the comparison.
        let threshold = outlierCount == 0 ? Float.nan : selection.threshold
        for row in 0..<rowCount {
            let source = UnsafeRawPointer(input + row * columns)
            let destination = UnsafeMutableRawPointer(output + row * columns)
            let absmax = rowAbsMax(source, count: columns, excludingFrom: threshold)
            rowScales[row] = absmax
            // torch evaluates `127.0 / row_stats` as `reciprocal(row_stats) * 127`:
            // two float32 roundings, which move some products off a .5 tie.
            quantizeRow(source, count: columns, scale: 127 * (1 / absmax), into: destination)
            for (index, column) in selection.columns.enumerated() {
                output[row * columns + column] = 0
                outlierValues[row * outlierCount + index] = FloatConversion.halfBits(from: input[row * columns + column])
            }
        }
    }

    /// Reconstructs float32 values: `CB * SCB * (1/127)` in float32, as
    /// bitsandbytes' `int8_vectorwise_dequant`, except the outlier columns,
    /// which come back as their FP16 values.
    public static func dequantize(codes: UnsafeBufferPointer<Int8>, rowScales: UnsafeBufferPointer<Float>,
                                  rowCount: Int, columns: Int,
                                  outlierColumns: [Int], outlierValues: UnsafeBufferPointer<UInt16>,
                                  into destination: UnsafeMutableBufferPointer<Float>) {
        let outlierCount = outlierColumns.count
        precondition(codes.count == rowCount * columns && rowScales.count == rowCount && destination.count == codes.count
                     && outlierValues.count == rowCount * outlierCount, "Int8Vectorwise.dequantize: buffers do not match \(rowCount) x \(columns)")
        precondition(outlierColumns.allSatisfy { $0 >= 0 && $0 < columns }, "Int8Vectorwise.dequantize: outlier column out of range")
        guard rowCount > 0, columns > 0, let input = codes.baseAddress, let output = destination.baseAddress else { return }
        let lanes = SIMD8<Float>.scalarCount
        let inverse = SIMD8<Float>(repeating: inverse127)
        for row in 0..<rowCount {
            let source = UnsafeRawPointer(input + row * columns)
            let target = UnsafeMutableRawPointer(output + row * columns)
            let scale = SIMD8<Float>(repeating: rowScales[row])
            var column = 0
            while column < columns {
                let width = min(lanes, columns - column)
                let values = SIMD8<Float>(loadPadded(source, from: column, width: width, as: Int8.self))
                // Two float32 roundings, in bitsandbytes' order.
                storePrefix(values * scale * inverse, into: target, at: column, width: width)
                column += width
            }
            for (index, column) in outlierColumns.enumerated() {
                output[row * columns + column] = FloatConversion.float(fromHalf: outlierValues[row * outlierCount + index])
            }
        }
    }

    // MARK: - Row kernels

    /// Largest `|a|` of a row, skipping elements with `|a| >= threshold`
    /// (none when the threshold is NaN). NaN elements are never skipped and
    /// make the result NaN, as torch's max does.
    @inline(__always)
    static func rowAbsMax(_ source: UnsafeRawPointer, count: Int, excludingFrom threshold: Float) -> Float {
        let lanes = SIMD8<Float>.scalarCount
        // Non-negative floats, NaN included (largest), order like their bit
        // patterns, so an integer max propagates NaN and needs no float compare.
        var maximum = SIMD8<Int32>()
        var column = 0
        if threshold.isNaN {
            while column < count {
                let width = min(lanes, count - column)
                maximum = larger(maximum, magnitudeBits(loadPadded(source, from: column, width: width, as: Float.self)))
                column += width
            }
        } else {
            let limit = SIMD8<Float>(repeating: threshold)
            while column < count {
                let width = min(lanes, count - column)
                var magnitude = magnitudeBits(loadPadded(source, from: column, width: width, as: Float.self))
                magnitude.replace(with: 0, where: unsafeBitCast(magnitude, to: SIMD8<Float>.self) .>= limit)
                maximum = larger(maximum, magnitude)
                column += width
            }
        }
        return Float(bitPattern: UInt32(maximum.max()))
    }

    /// Writes `round-half-even(a * scale)` as Int8 for a row.
    @inline(__always)
    static func quantizeRow(_ source: UnsafeRawPointer, count: Int, scale: Float, into destination: UnsafeMutableRawPointer) {
        guard scale.isFinite, scale > 0 else {
            // absmax 0, inf or NaN: every product is 0 or NaN in bitsandbytes
            // (0 * inf, inf * 0, NaN), which torch's int8 cast turns into 0.
            destination.initializeMemory(as: Int8.self, repeating: 0, count: count)
            return
        }
        let lanes = SIMD8<Float>.scalarCount
        let scales = SIMD8<Float>(repeating: scale)
        // Adding 1.5 * 2^23 leaves round-half-even(x) in the low mantissa bits
        // for |x| < 2^22; the clamp keeps excluded outliers (zeroed later) and
        // their infinities in that range and in Int8.
        let shifter = SIMD8<Float>(repeating: 12_582_912)
        let lower = SIMD8<Float>(repeating: -127), upper = SIMD8<Float>(repeating: 127)
        var column = 0
        while column < count {
            let width = min(lanes, count - column)
            let values = loadPadded(source, from: column, width: width, as: Float.self)
            var scaled = values * scales
            scaled.replace(with: lower, where: scaled .< lower)
            scaled.replace(with: upper, where: scaled .> upper)
            let rounded = SIMD8<Int8>(truncatingIfNeeded: unsafeBitCast(scaled + shifter, to: SIMD8<Int32>.self))
            storePrefix(rounded, into: destination, at: column, width: width)
            column += width
        }
    }

    // MARK: - SIMD helpers (shared with OutlierScan)

    /// Loads `width` (1...8) scalars starting at element `index`, zero-padded to 8 lanes.
    @inline(__always)
    static func loadPadded<Scalar: SIMDScalar>(_ base: UnsafeRawPointer, from index: Int, width: Int, as: Scalar.Type) -> SIMD8<Scalar> {
        let stride = MemoryLayout<Scalar>.stride
        if width == 8 { return base.loadUnaligned(fromByteOffset: index * stride, as: SIMD8<Scalar>.self) }
        var vector = SIMD8<Scalar>()
        for lane in 0..<width { vector[lane] = base.loadUnaligned(fromByteOffset: (index + lane) * stride, as: Scalar.self) }
        return vector
    }

    /// Stores the first `width` (1...8) lanes at element `index`.
    @inline(__always)
    static func storePrefix<Scalar: SIMDScalar>(_ vector: SIMD8<Scalar>, into base: UnsafeMutableRawPointer, at index: Int, width: Int) {
        let stride = MemoryLayout<Scalar>.stride
        if width == 8 { base.storeBytes(of: vector, toByteOffset: index * stride, as: SIMD8<Scalar>.self); return }
        for lane in 0..<width { base.storeBytes(of: vector[lane], toByteOffset: (index + lane) * stride, as: Scalar.self) }
    }

    /// `|a|` as its bit pattern, a non-negative Int32 (the baseline x86-64
    /// target compares signed 32-bit lanes natively, unsigned ones not).
    @inline(__always)
    static func magnitudeBits(_ values: SIMD8<Float>) -> SIMD8<Int32> {
        unsafeBitCast(values, to: SIMD8<Int32>.self) & SIMD8<Int32>(repeating: 0x7FFF_FFFF)
    }

    /// Lane-wise maximum written as a compare and select, which compiles to
    /// vector instructions where the stdlib's `pointwiseMax` stays a call.
    /// Concrete overloads: in a generic body `.>` binds to the lane-by-lane
    /// default implementation instead of the vector compare.
    @inline(__always)
    static func larger(_ a: SIMD8<Int32>, _ b: SIMD8<Int32>) -> SIMD8<Int32> {
        a.replacing(with: b, where: b .> a)
    }

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
