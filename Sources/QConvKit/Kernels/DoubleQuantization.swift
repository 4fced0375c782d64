/// bitsandbytes' double quantization (`compress_statistics=True`): the float32
/// absmax values of the 4-bit blocks are themselves quantized to 8 bits, in
/// blocks of 256, with the signed dynamic map, after subtracting their mean.
public enum DoubleQuantization {
    /// Absmax values per second-level block (bitsandbytes' fixed 256); the
    /// container's `nested_block_size` parameter must be this.
    public static let nestedBlockSize = 256

    /// bnb's signed 8-bit dynamic map (256 float32 values), generated in code exactly as bnb's
    /// create_dynamic_map(signed=True) does; must equal the `nested_code` tensor of every refdata *_dq_* file.
    public static let dynamicMap: [Float] = makeDynamicMap()

    /// The second-level state of a double-quantized tensor.
    public struct Result: Equatable, Sendable {
        /// Subtracted from every absmax before quantizing.
        public var offset: Float
        /// One dynamic-map index per first-level absmax.
        public var codes: [UInt8]
        /// One float32 scale per block of 256 codes.
        public var nestedAbsmax: [Float]

        public init(offset: Float, codes: [UInt8], nestedAbsmax: [Float]) {
            self.offset = offset
            self.codes = codes
            self.nestedAbsmax = nestedAbsmax
        }
    }

    /// How the offset, the mean of the absmax values, is computed.
    public enum Mean: Sendable {
        /// Summed in Double in order, rounded to Float: qconv containers
        /// (agrees with torch's float32 mean to about one ulp).
        case float64
        /// torch's float32 `mean()`, bit for bit (`TorchMean`): what
        /// bitsandbytes computes, for checkpoints in its layout.
        case torchFloat32
    }

    /// offset = mean of absmax (`mean`), then quantize(absmax:offset:). An
    /// empty input has offset 0.
    public static func quantize(absmax: UnsafeBufferPointer<Float>, mean: Mean = .float64) -> Result {
        quantize(absmax: absmax, offset: offset(absmax: absmax, mean: mean))
    }

    /// The offset `quantize(absmax:mean:)` subtracts (0 for no values).
    public static func offset(absmax: UnsafeBufferPointer<Float>, mean: Mean) -> Float {
        guard !absmax.isEmpty else { return 0 }
        switch mean {
        case .float64:
            var sum = 0.0
            for value in absmax { sum += Double(value) }
            return Float(sum / Double(absmax.count))
        case .torchFloat32:
            return TorchMean.mean(absmax)
        }
    }

    /// Quantizes absmax - offset blockwise (blocks of 256) with the dynamic map using bnb's 65,536-entry lookup-table rule.
    ///
    /// As bnb's C++ kernel: a block's scale is the largest |x| ignoring NaN (0
    /// for a block of zeros, whose codes are all 0), values are multiplied by
    /// its float32 reciprocal, and a NaN product takes code 0.
    public static func quantize(absmax: UnsafeBufferPointer<Float>, offset: Float) -> Result {
        let count = absmax.count
        let blocks = (count + nestedBlockSize - 1) / nestedBlockSize
        var codes = [UInt8](repeating: 0, count: count)
        var nestedAbsmax = [Float](repeating: 0, count: blocks)
        var centered = [Float](repeating: 0, count: nestedBlockSize)
        lookupTable.withUnsafeBufferPointer { table in
            codes.withUnsafeMutableBufferPointer { codes in
                for block in 0..<blocks {
                    let start = block * nestedBlockSize
                    let length = min(nestedBlockSize, count - start)
                    var maximum: Float = 0
                    for j in 0..<length {
                        let value = absmax[start + j] - offset
                        centered[j] = value
                        // `>` skips NaN, as C's fmax does.
                        if abs(value) > maximum { maximum = abs(value) }
                    }
                    nestedAbsmax[block] = maximum
                    let reciprocal = 1 / maximum
                    for j in 0..<length {
                        codes[start + j] = table[lookupIndex(centered[j] * reciprocal)]
                    }
                }
            }
        }
        return Result(offset: offset, codes: codes, nestedAbsmax: nestedAbsmax)
    }

    /// absmax[i] = dynamicMap[codes[i]] * nestedAbsmax[i / 256] + offset (float32 ops as bnb does them).
    /// `nestedAbsmax` needs ceil(codes.count / 256) values (the caller checks stored sizes before calling).
    public static func dequantize(codes: UnsafeBufferPointer<UInt8>, nestedAbsmax: UnsafeBufferPointer<Float>, offset: Float,
                                  into absmax: UnsafeMutablePointer<Float>) {
        precondition(nestedAbsmax.count * nestedBlockSize >= codes.count, "too few nested absmax values")
        dynamicMap.withUnsafeBufferPointer { map in
            for (i, code) in codes.enumerated() {
                // Two roundings, as bnb's dequantize_blockwise followed by `absmax += offset`.
                let scaled = map[Int(code)] * nestedAbsmax[i / nestedBlockSize]
                absmax[i] = scaled + offset
            }
        }
    }

    /// The table index of a scaled value: clamp to [-1, 1], map to 0...65535
    /// and round half up, in float32; NaN maps to 0 (bnb stores code 0).
    @inline(__always)
    static func lookupIndex(_ scaled: Float) -> Int {
        guard !scaled.isNaN else { return 0 }
        let clamped = min(max(scaled, -1), 1)
        return Int((clamped + 1) * 0.5 * 65535 + 0.5)
    }

    /// `lookupTable[i]` is the first code whose midpoint with its successor is
    /// not below `-1 + 2i/65535`, which is how bnb's CPU kernel picks nested codes
    /// (not always the exact nearest code).
    static let lookupTable: [UInt8] = {
        let map = dynamicMap
        let midpoints = (0..<255).map { 0.5 * (map[$0] + map[$0 + 1]) }
        var table = [UInt8](repeating: 255, count: 65536)
        var code = 0
        for i in 0..<65536 {
            let value: Float = -1 + 2 * Float(i) / 65535
            while code < 255 && midpoints[code] < value { code += 1 }
            table[i] = UInt8(code)
        }
        return table
    }()

    /// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).
    ///
    /// For each exponent e = -6...0, the means of neighbouring points of
    /// `torch.linspace(0.1, 1, 2^(e+6) + 1)` scaled by ±10^e, plus 0 and 1,
    /// sorted. The float32 details matter for bit equality: torch's CPU
    /// linspace computes the first half as `start + step * i` and the second as
    /// `end - step * (steps - 1 - i)`, each contracted to one fused multiply-add.
    static func makeDynamicMap() -> [Float] {
        let scales: [Double] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1]
        var values: [Float] = [0, 1]
        for (exponentIndex, scale) in scales.enumerated() {
            let points = torchLinspace(from: 0.1, to: 1, count: (1 << exponentIndex) + 1)
            let factor = Float(scale)
            for j in 0..<(points.count - 1) {
                let mean = (points[j] + points[j + 1]) / 2
                values.append(factor * mean)
                values.append(-factor * mean)
            }
        }
        return values.sorted()
    }

    /// torch.linspace(start, end, count, dtype=float32) as torch's CPU kernel computes it.
    static func torchLinspace(from start: Float, to end: Float, count: Int) -> [Float] {
        let step = (end - start) / Float(count - 1)
        return (0..<count).map { i in
            i < count / 2 ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - 1 - i))
        }
    }
}
