/// Blockwise 4-bit quantization (NF4, FP4), bit-exact with bitsandbytes' CPU path.
///
/// Blocks of `blockSize` run over the flattened tensor. A full block is scaled
/// by the float32 reciprocal of its absolute maximum, the tensor's final
/// partial block by a true division, as `bitsandbytes::quantize_4bit` does;
/// the two differ in the last bit often enough to change codes.
///
/// The functions are pure and thread-safe: callers quantize block-aligned
/// chunks of one tensor on several threads and get the bytes of one call.
public enum Blockwise4Bit {
    /// Valid block sizes: 32, 64, 128, 256, 512, 1024, 2048, 4096.
    public static let supportedBlockSizes: [Int] = [32, 64, 128, 256, 512, 1024, 2048, 4096]

    /// Number of absmax values for `count` elements.
    @inline(__always)
    public static func blockCount(elementCount count: Int, blockSize: Int) -> Int {
        (count + blockSize - 1) / blockSize
    }

    /// Number of packed bytes for `count` elements (two nibbles a byte).
    @inline(__always)
    public static func packedByteCount(elementCount count: Int) -> Int {
        (count + 1) / 2
    }

    /// torch clamps the absmax to this before scaling (`clamp(min=1e-38)`).
    static let smallestScale: Float = 1e-38

    /// Values a SIMD step handles; every supported block size is a multiple of it.
    static let lanes = 16

    /// Quantizes `count` consecutive elements of a flattened tensor. The chunk starts at a block boundary of
    /// the tensor (so at an even element index); any partial block at its end is the tensor's final partial block.
    /// Writes ceil(count/2) packed bytes (high nibble first, odd count padded with zeroCode) and
    /// ceil(count/blockSize) absmax values (bnb's rules: reciprocal multiply for full blocks, true division for the
    /// final partial block, clamp to [-1,1], absmax 0 -> 1e-38 for scaling, stored absmax of a final all-zero
    /// partial block is 1e-38, full zero blocks store 0).
    ///
    /// Exactly as torch's `clamp(min=1e-38)`, any absmax below 1e-38 (zero or
    /// subnormal) scales as 1e-38. NaN makes its block's absmax NaN and every
    /// code of the block the top code (bucketize puts NaN last); an infinity
    /// makes the absmax infinite, itself the top code and finite values zero.
    public static func quantize(_ values: UnsafePointer<Float>, count: Int, blockSize: Int, format: FourBitFormat,
                                packed: UnsafeMutablePointer<UInt8>, absmax: UnsafeMutablePointer<Float>) {
        precondition(supportedBlockSizes.contains(blockSize), "unsupported 4-bit block size \(blockSize)")
        precondition(count >= 0)
        FourBitCodebook.table(for: format).withEncoder { encoder in
            let fullBlocks = count / blockSize
            for block in 0..<fullBlocks {
                let start = block * blockSize
                let maximum = Magnitudes.absoluteMaximum(values + start, count: blockSize)
                absmax[block] = maximum
                encoder.encode(values + start, count: blockSize, scaling: .multiply(by: 1 / clampedScale(maximum)),
                               into: packed + start / 2)
            }
            let start = fullBlocks * blockSize
            let rest = count - start
            if rest > 0 {
                let scale = clampedScale(Magnitudes.absoluteMaximum(values + start, count: rest))
                absmax[fullBlocks] = scale
                encoder.encode(values + start, count: rest, scaling: .divide(by: scale), into: packed + start / 2)
            }
        }
    }

    /// The absmax values `quantize` stores for the same `count` elements
    /// (from a block boundary), without encoding anything: what a writer that
    /// must know the double-quantization offset before quantizing computes first.
    public static func absmax(_ values: UnsafePointer<Float>, count: Int, blockSize: Int, into absmax: UnsafeMutablePointer<Float>) {
        precondition(supportedBlockSizes.contains(blockSize), "unsupported 4-bit block size \(blockSize)")
        let fullBlocks = count / blockSize
        for block in 0..<fullBlocks {
            absmax[block] = Magnitudes.absoluteMaximum(values + block * blockSize, count: blockSize)
        }
        let rest = count - fullBlocks * blockSize
        if rest > 0 {
            absmax[fullBlocks] = clampedScale(Magnitudes.absoluteMaximum(values + fullBlocks * blockSize, count: rest))
        }
    }

    /// code[nibble] * absmax[i / blockSize] in float32 for `count` elements starting at a block boundary.
    /// `packed` holds ceil(count/2) bytes and `absmax` ceil(count/blockSize) values (the caller checks
    /// stored sizes before calling).
    ///
    /// `fp4NegativeZero` decodes FP4 nibble 8 as -0.0 instead of the table's
    /// +0.0; only the sign of those zeros changes. bitsandbytes' CPU
    /// `dequantize_4bit` does that in its C++ kernel, which it uses when the
    /// tensor's last dimension is even, and not in its torch fallback for an
    /// odd last dimension (see `bitsandbytesDecodesNegativeZero(shape:)`).
    public static func dequantize(packed: UnsafePointer<UInt8>, count: Int, blockSize: Int, format: FourBitFormat,
                                  absmax: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>,
                                  fp4NegativeZero: Bool = false) {
        precondition(supportedBlockSizes.contains(blockSize), "unsupported 4-bit block size \(blockSize)")
        precondition(count >= 0)
        let codebook = FourBitCodebook.table(for: format)
        (fp4NegativeZero ? codebook.signedZeroPairs : codebook.pairs).withUnsafeBufferPointer { pairs in
            var start = 0
            var block = 0
            while start < count {
                let length = min(blockSize, count - start)
                let scale = SIMD2<Float>(repeating: absmax[block])
                let source = packed + start / 2
                let destination = UnsafeMutableRawPointer(output + start)
                // Blocks have even length except possibly the last, whose final
                // byte then carries one element and the padding. Four bytes per
                // step: a loop of one is slow on the benchmark machine, and how
                // slow depends on where the code lands.
                let byteCount = length / 2
                var j = 0
                while j &+ 4 <= byteCount {
                    let offset = j &* 8
                    destination.storeBytes(of: pairs[Int(source[j])] * scale, toByteOffset: offset, as: SIMD2<Float>.self)
                    destination.storeBytes(of: pairs[Int(source[j &+ 1])] * scale, toByteOffset: offset &+ 8, as: SIMD2<Float>.self)
                    destination.storeBytes(of: pairs[Int(source[j &+ 2])] * scale, toByteOffset: offset &+ 16, as: SIMD2<Float>.self)
                    destination.storeBytes(of: pairs[Int(source[j &+ 3])] * scale, toByteOffset: offset &+ 24, as: SIMD2<Float>.self)
                    j &+= 4
                }
                while j < byteCount {
                    destination.storeBytes(of: pairs[Int(source[j])] * scale, toByteOffset: j &* 8, as: SIMD2<Float>.self)
                    j &+= 1
                }
                if length % 2 == 1 {
                    output[start + length - 1] = pairs[Int(source[length / 2])].x * scale.x
                }
                start += length
                block += 1
            }
        }
    }

    /// Whether bitsandbytes' CPU `dequantize_4bit` of a tensor of this shape
    /// decodes FP4 nibble 8 as -0.0 (pass it as `fp4NegativeZero`): its C++
    /// kernel runs when the last dimension is even (a 1-D shape counts as one
    /// row). On AVX-512 machines bnb also falls back for block sizes of 2048
    /// and up; qconv follows the AVX2 path the reference data came from.
    public static func bitsandbytesDecodesNegativeZero(shape: [Int]) -> Bool {
        (shape.last ?? 1) % 2 == 0
    }

    /// torch's `absmax.clamp(min=1e-38)`; NaN stays NaN.
    @inline(__always)
    static func clampedScale(_ maximum: Float) -> Float {
        maximum < smallestScale ? smallestScale : maximum
    }
}

/// How a block's values are brought into [-1, 1] before the code search.
enum BlockScaling {
    /// A full block: `x * (1 / absmax)`.
    case multiply(by: Float)
    /// The tensor's final partial block: `x / absmax`.
    case divide(by: Float)

    @inline(__always)
    func apply(_ values: SIMD16<Float>) -> SIMD16<Float> {
        switch self {
        case .multiply(let reciprocal): return values * reciprocal
        case .divide(let scale): return values / scale
        }
    }
}

/// Turns scaled values into packed nibbles, 16 values (8 bytes) at a time.
struct NibbleEncoder {
    /// The 15 midpoints, each splatted to a whole vector so the search reads them straight from memory.
    let midpoints: UnsafePointer<SIMD16<Float>>
    /// Maps a byte of two sorted positions to the byte of their nibbles; nil when positions are nibbles (NF4).
    let nibblesOfPositions: UnsafePointer<UInt8>?

    /// The sorted position of each of 16 scaled values: the number of midpoints
    /// below it, counted as 15 minus those at or above it so that NaN, which
    /// compares false, lands on 15 as it does in bucketize. Clamping to
    /// [-1, 1] first would change nothing: every midpoint lies inside.
    @inline(__always)
    func positions(_ scaled: SIMD16<Float>) -> SIMD16<Int32> {
        var position = SIMD16<Int32>(repeating: 15)
        for k in 0..<15 {
            // A true lane is all ones, -1 as an integer: the mask is added as it is.
            position &+= unsafeBitCast(scaled .<= midpoints[k], to: SIMD16<Int32>.self)
        }
        return position
    }

    /// Element 2j in the high nibble, 2j + 1 in the low one.
    @inline(__always)
    func pack(_ scaled: SIMD16<Float>) -> SIMD8<UInt8> {
        // On a little-endian machine (every platform Swift runs qconv on)
        // lanes 2j and 2j + 1 are the low and high halves of 64-bit lane j,
        // so two shifts put 2j above 2j + 1 in the low byte: cheaper than
        // gathering the even and odd lanes apart.
        let pairs = unsafeBitCast(positions(scaled), to: SIMD8<UInt64>.self)
        var bytes = SIMD8<UInt8>(truncatingIfNeeded: (pairs &<< 4) | (pairs &>> 32))
        if let nibblesOfPositions {
            for lane in 0..<8 { bytes[lane] = nibblesOfPositions[Int(bytes[lane])] }
        }
        return bytes
    }

    /// Encodes `count` values into ceil(count/2) bytes. A short tail is padded
    /// with zeros after scaling, so the padding nibble is the code of 0.0
    /// whatever the scale.
    @inline(__always)
    func encode(_ values: UnsafePointer<Float>, count: Int, scaling: BlockScaling, into packed: UnsafeMutablePointer<UInt8>) {
        let lanes = Blockwise4Bit.lanes
        let destination = UnsafeMutableRawPointer(packed)
        var i = 0
        while i + lanes <= count {
            let scaled = scaling.apply(UnsafeRawPointer(values + i).loadUnaligned(as: SIMD16<Float>.self))
            destination.storeBytes(of: pack(scaled), toByteOffset: i / 2, as: SIMD8<UInt8>.self)
            i += lanes
        }
        let tail = count - i
        if tail > 0 {
            var chunk = SIMD16<Float>(repeating: 0)
            for lane in 0..<tail { chunk[lane] = values[i + lane] }
            var scaled = scaling.apply(chunk)
            for lane in tail..<lanes { scaled[lane] = 0 }
            let bytes = pack(scaled)
            for byte in 0..<(tail + 1) / 2 { packed[i / 2 + byte] = bytes[byte] }
        }
    }
}
